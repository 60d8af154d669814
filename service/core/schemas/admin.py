"""Request and response bodies of the admin API (reindex, rollback) and the collections API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.core.schemas.api import JobError


class ReindexRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: str | None = Field(None, description="the alias to rebuild; default: this one")
    bundle: str | None = Field(
        None, description="the bundle to build with (name or name@version); default: the served"
    )


class ReindexStatus(BaseModel):
    id: str
    kind: Literal["reindex"] = "reindex"
    collection: str
    bundle: str
    state: Literal["running", "completed", "failed", "interrupted", "cancelled"]
    source: str | None = Field(description="the version searched when the reindex began")
    target: str = Field(description="the version being built")
    total: int = Field(description="points in the source version when the reindex began")
    done: int = Field(description="source points processed by the rebuild")
    rebuilt: int = Field(0, description="items (an image, a video, a text) made again")
    copied: int = Field(0, description="points copied because they could not be made again")
    points: int | None = Field(None, description="points in the new version once swapped")
    rate_per_s: float | None = None
    eta_s: float | None = None
    notes: list[JobError] = Field(default_factory=list)
    error: str | None = None
    created_at: str
    updated_at: str
    finished_at: str | None = None


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: str | None = Field(None, description="the alias to roll back; default: this one")


class RollbackResponse(BaseModel):
    collection: str
    from_version: str = Field(alias="from")
    to_version: str = Field(alias="to")

    model_config = ConfigDict(populate_by_name=True)


class CollectionVersion(BaseModel):
    name: str
    number: int = Field(description="0 for a collection created before versioning")
    bundle: str | None
    role: Literal["current", "next", "previous"] | None
    points: int
    vectors: dict[str, int]


class CollectionInfo(BaseModel):
    alias: str
    current: str | None = Field(description="the version searches read")
    building: str | None = Field(None, description="the version a reindex is building")
    previous: str | None = Field(None, description="the version a rollback returns to")
    points: int
    vectors: dict[str, int]
    bundle: str | None
    served: bool = Field(description="whether this gateway searches and ingests it")
    versions: list[CollectionVersion]


class CollectionList(BaseModel):
    collections: list[CollectionInfo]
