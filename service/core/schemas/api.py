"""Request and response shapes of the public API (REST today, gRPC mirrors them)."""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.core.domain import FILTERABLE_FIELDS, FilterValue, Kind
from service.core.errors import invalid
from service.core.schemas.sources import SourceSpec

Mode = Literal["image", "caption", "description", "hybrid", "auto"]
GroupBy = Literal["video"]


_KINDS = sorted(k.value for k in Kind)
_QUERIES = ("text", "image", "image_url", "item_id")


class SearchFilter(BaseModel):
    """Payload equality on the filterable fields; a list value matches any of its values.

    A key or ``kind`` value outside this schema is a 400 that lists the allowed ones (never a
    silent zero hits): the check raises ``ClipsearchError`` itself, which pydantic passes
    through unchanged, so every transport reports it as ``invalid_input``."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind | list[Kind] | None = Field(None, description=f"one of {_KINDS}")
    tags: str | list[str] | None = Field(None, description="items carrying the tag (any of)")
    media_id: str | list[str] | None = Field(None, description="the id an item was added with")
    video_id: str | list[str] | None = Field(None, description="the segments of these videos")

    @model_validator(mode="before")
    @classmethod
    def _known(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        unknown = sorted(set(value) - FILTERABLE_FIELDS)
        if unknown:
            raise invalid(
                f"cannot filter on {unknown}; allowed: {sorted(FILTERABLE_FIELDS)}",
                {"allowed": sorted(FILTERABLE_FIELDS)},
            )
        kinds = value.get("kind")
        asked = kinds if isinstance(kinds, list) else [] if kinds is None else [kinds]
        bad = [k for k in asked if k not in _KINDS]
        if bad:
            raise invalid(f"unknown kind {bad}; allowed: {_KINDS}", {"allowed": _KINDS})
        return value

    def as_filter(self) -> dict[str, FilterValue]:
        """The filter as the planner and the stores take it (unset fields left out)."""
        return self.model_dump(mode="json", exclude_none=True)


# The collection a call acts on (issue 17): any collection the key can see; unset, the
# gateway's configured one (CLIPSEARCH_COLLECTION).
COLLECTION_HELP = "the collection it acts on; default: the gateway's configured collection"
COLLECTION_MAX_CHARS = 63


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: str | None = Field(
        None, max_length=COLLECTION_MAX_CHARS, description=COLLECTION_HELP
    )

    text: str | None = Field(
        None, description="query text (exactly one of text, image, image_url, item_id)"
    )
    image: str | None = Field(None, description="base64-encoded image bytes")
    image_url: str | None = Field(
        None,
        max_length=2048,
        description="an http(s) image URL the gateway fetches (public addresses only, or "
        "sources.allowed_networks; size and time limits as for URL ingestion)",
    )
    item_id: str | None = Field(
        None,
        max_length=2048,
        description='"more like this": a stored item\'s point id or the id it was added with; '
        "the item itself is left out of the hits",
    )
    mode: Mode = "auto"
    limit: int = Field(10, ge=1, le=100)
    offset: int = Field(0, ge=0, le=10_000)
    filter: SearchFilter | None = Field(
        None, description=f"payload equality on {sorted(FILTERABLE_FIELDS)}; a list = any of"
    )
    score_threshold: float | None = Field(
        None,
        ge=-100.0,
        le=100.0,
        description="keep hits whose `score` is at least this (on the scale the response's "
        "`score_kind` names; a value off that scale is a 400 naming the range). A one-channel "
        "search (modes image, caption, description; an image query in auto) scores by cosine, "
        "in [-1, 1]: 0.3 is a cosine of 0.3 (for a text query against images a good match, "
        "against texts a loose one). A fused search (hybrid; a text query in auto) scores by "
        "probability of relevance, in [0, 1]: 0.3 keeps items whose channels say, on average, "
        "that 30 % of held-out pairs scoring like them were relevant; 0.5 keeps likely matches "
        "only. Applied before grouping and paging.",
    )
    group_by: GroupBy | None = Field(
        None, description="video: the best segment of each video (with its t_start/t_end)"
    )
    explain: bool = Field(
        False,
        description="give each hit's per-channel similarity, standardised score, probability "
        "of relevance, rank and weight",
    )

    @model_validator(mode="after")
    def _one_query(self) -> SearchRequest:
        given = [name for name in _QUERIES if getattr(self, name) is not None]
        if len(given) != 1:
            raise invalid(
                f"give exactly one of {', '.join(map(repr, _QUERIES))} (got {len(given)})",
                {"given": given},
            )
        return self

    def filter_values(self) -> dict[str, FilterValue] | None:
        return self.filter.as_filter() if self.filter is not None else None

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


class ChannelExplain(BaseModel):
    """How a hit scored in one channel it was searched in (``"explain": true``)."""

    channel: str = Field(description="the vector searched: image, caption, description, visual")
    similarity: float = Field(description="cosine of query and item (a caption: its best chunk)")
    standardised: float = Field(
        description="(similarity - mean) / spread of this channel's null: the cosines of "
        "unrelated query-item pairs, measured once per bundle on a fixed probe set (0: what an "
        "unrelated item scores, 1: one spread above)"
    )
    relevance: float = Field(
        description="P(relevant) of `standardised`, by the logistic curve of this channel's "
        "kind of evidence (a picture, a description generated at ingest, a text a person gave), "
        "fitted on held-out pairs: 0.3 = of held-out pairs that scored like this on this "
        "channel, 30 % were relevant. A fused `score` is the `weight`-weighted mean of its "
        "channels' `relevance`"
    )
    rank: int | None = Field(
        description="place in this channel alone (1 = best); null: below the candidates fetched"
    )
    weight: float = Field(
        description="the channel's weight in the fused score: the request's channel weight, "
        "halved for a description generated at ingest (weaker evidence than a given one)"
    )


class Hit(BaseModel):
    id: str = Field(description="the point id (a UUID)")
    media_id: str | None = Field(
        None,
        description="the id the item was added with (its `id`, a directory item's file:// URI, "
        "or its content's sha256): what `GET /v1/items/{id}` and a manifest name it by",
    )
    score: float = Field(
        description="what `score_kind` names. cosine: a one-channel search's cosine, in "
        "[-1, 1]. probability: a fused search's probability of relevance, in [0, 1], the "
        "`weight`-weighted mean of the `relevance` of the channels the item has (with "
        "`explain`); for an item judged on one channel, 0.3 = of held-out pairs that scored "
        "like this on this channel, 30 % were relevant"
    )
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
    explain: list[ChannelExplain] | None = Field(
        None, description="with explain: the channels the hit was judged on (those it has)"
    )

    @classmethod
    def from_payload(cls, id: str, score: float, payload: dict[str, Any]) -> Hit:  # noqa: A002
        return cls(
            id=id,
            media_id=payload.get("media_id"),
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
    score_kind: Literal["cosine", "probability"] = Field(
        "cosine",
        description="what `score` is: cosine (one channel searched: modes image, caption, "
        "description, an image query in auto), in [-1, 1]; or probability (several fused: "
        "hybrid, a text query in auto), the probability of relevance in [0, 1] (0.3 = of "
        "held-out pairs that scored like this, 30 % were relevant)",
    )


class ItemResponse(BaseModel):
    id: str
    media_id: str


class IngestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: SourceSpec = Field(
        description='a directory path (shorthand), or {"directory"}, {"manifest"}, '
        '{"manifest_lines": [...]}, {"urls": [...]}, {"webdataset": "shards/{00000..00099}.tar"}'
        ' or {"table": "meta.parquet", "columns": {"uri": "url", "caption": "caption"}}'
    )
    collection: str | None = Field(
        None,
        max_length=COLLECTION_MAX_CHARS,
        description="the collection to index into (default: the configured one)",
    )


class JobAccepted(BaseModel):
    job_id: str


class JobError(BaseModel):
    item: str
    reason: str


class JobStatus(BaseModel):
    id: str
    kind: str
    collection: str | None = Field(None, description="the collection the job indexes into")
    state: Literal["queued", "running", "completed", "failed", "interrupted", "cancelled"]
    total: int
    done: int
    failed: int
    skipped: int = Field(
        0, description="of done: items a resumed job found indexed already with the same content"
    )
    attempt: int = Field(1, description="runs of this job: POST /v1/jobs/{id}/retry adds one")
    redelivered: int = Field(
        0,
        description="tasks of this job the broker lost (a worker killed as it took them), "
        "found by the gateway and sent again (the Celery path)",
    )
    rate_per_s: float | None = None
    eta_s: float | None = None
    waiting_for_writer: bool = Field(
        False, description="tasks wait for room in the points stream (the writer is behind)"
    )
    total_known: bool = Field(
        True,
        description="false while a dataset's shards are still read: total counts the items "
        "read so far (never below done)",
    )
    shards_total: int | None = Field(
        None, description="webdataset shards or table row ranges of the job (dataset sources)"
    )
    shards_done: int | None = Field(
        None, description="of shards_total: those read to the end, every item handed to the writer"
    )
    shards_read: int | None = Field(
        None,
        description="shards or row ranges this attempt read (a resumed job does not read "
        "those an earlier attempt finished)",
    )
    errors: list[JobError] = Field(default_factory=list)
    error: str | None = None
    created_at: str
    updated_at: str


class JobList(BaseModel):
    jobs: list[JobStatus] = Field(description="newest first")
    total: int = Field(description="jobs in all")
    limit: int
    offset: int


class VideoDeleted(BaseModel):
    video_id: str
    deleted: int = Field(description="segments deleted, with their thumbnails")


class ErrorBody(BaseModel):
    type: str = Field(description="the error type: invalid_input, not_found, forbidden, ...")
    message: str = Field(description="what went wrong, for a person")
    detail: Any = Field(None, description="structured detail, by type (e.g. the fields at fault)")


class ErrorResponse(BaseModel):
    """The one shape of every REST error: 4xx and 5xx alike."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "type": "invalid_input",
                        "message": "limit: Input should be less than or equal to 100",
                        "detail": [{"loc": ["body", "limit"], "msg": "..."}],
                    }
                }
            ]
        }
    )

    error: ErrorBody
