"""Request and response shapes of the public API (REST today, gRPC mirrors them)."""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.core.domain import FILTERABLE_FIELDS, FilterValue
from service.core.schemas.sources import SourceSpec

Mode = Literal["image", "caption", "description", "hybrid", "auto"]
GroupBy = Literal["video"]


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, description="query text (exactly one of text or image)")
    image: str | None = Field(None, description="base64-encoded image bytes")
    mode: Mode = "auto"
    limit: int = Field(10, ge=1, le=100)
    offset: int = Field(0, ge=0, le=10_000)
    filter: dict[str, FilterValue] | None = Field(
        None, description=f"payload equality on {sorted(FILTERABLE_FIELDS)}; a list = any of"
    )
    score_threshold: float | None = Field(None, ge=-1.0, le=1.0)
    group_by: GroupBy | None = Field(
        None, description="video: the best segment of each video (with its t_start/t_end)"
    )

    @field_validator("filter")
    @classmethod
    def _known_fields(cls, value: dict[str, FilterValue] | None) -> dict[str, FilterValue] | None:
        if value:
            unknown = sorted(set(value) - FILTERABLE_FIELDS)
            if unknown:
                raise ValueError(
                    f"cannot filter on {unknown}; allowed: {sorted(FILTERABLE_FIELDS)}"
                )
        return value

    def image_bytes(self) -> bytes | None:
        if self.image is None:
            return None
        payload = self.image.split(",", 1)[1] if self.image.startswith("data:") else self.image
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"'image' is not valid base64: {exc}") from exc


class HitLabel(BaseModel):
    name: str
    score: float


class Hit(BaseModel):
    id: str
    score: float
    kind: str | None = None
    uri: str | None = None
    caption: str | None = None
    description: str | None = None
    description_generated: bool = Field(
        False, description="the description was written at ingest from the labels, not given"
    )
    labels: list[HitLabel] = Field(
        default_factory=list,
        description="the classes the image tower saw, best first (bundles that name classes)",
    )
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    # Video segments: which video, which time range, and the keyframe thumbnail's URL path.
    video_id: str | None = None
    t_start: float | None = None
    t_end: float | None = None
    thumbnail: str | None = None

    @classmethod
    def from_payload(cls, id: str, score: float, payload: dict[str, Any]) -> Hit:  # noqa: A002
        return cls(
            id=id,
            score=score,
            kind=payload.get("kind"),
            uri=payload.get("uri"),
            caption=payload.get("caption"),
            description=payload.get("description"),
            description_generated=bool(payload.get("description_generated", False)),
            labels=[HitLabel.model_validate(lb) for lb in payload.get("labels") or []],
            tags=list(payload.get("tags") or []),
            metadata=dict(payload.get("metadata") or {}),
            video_id=payload.get("video_id"),
            t_start=payload.get("t_start"),
            t_end=payload.get("t_end"),
            thumbnail=f"/v1/{payload['thumbnail']}" if payload.get("thumbnail") else None,
        )


class SearchResponse(BaseModel):
    hits: list[Hit]
    took_ms: float
    model: str
    mode: Mode
    channels: list[str]


class ItemResponse(BaseModel):
    id: str
    media_id: str


class IngestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: SourceSpec = Field(
        description='a directory path (shorthand), or {"directory"}, {"manifest"}, '
        '{"manifest_lines": [...]} or {"urls": [...]}'
    )
    collection: str | None = Field(None, description="reserved; the configured collection")


class JobAccepted(BaseModel):
    job_id: str


class JobError(BaseModel):
    item: str
    reason: str


class JobStatus(BaseModel):
    id: str
    kind: str
    state: Literal["queued", "running", "completed", "failed", "interrupted", "cancelled"]
    total: int
    done: int
    failed: int
    skipped: int = Field(
        0, description="of done: items a resumed job found indexed already with the same content"
    )
    attempt: int = Field(1, description="runs of this job: POST /v1/jobs/{id}/retry adds one")
    rate_per_s: float | None = None
    eta_s: float | None = None
    waiting_for_writer: bool = Field(
        False, description="tasks wait for room in the points stream (the writer is behind)"
    )
    errors: list[JobError] = Field(default_factory=list)
    error: str | None = None
    created_at: str
    updated_at: str


class ErrorBody(BaseModel):
    type: str
    message: str
    detail: Any = None


class ErrorResponse(BaseModel):
    error: ErrorBody
