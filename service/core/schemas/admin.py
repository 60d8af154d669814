"""Request and response bodies of the admin API (rollouts, rollback, golden sets) and the
collections API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.core.schemas.api import JobError


class VideoChange(BaseModel):
    """Video segmenting for the version a reindex builds (unset fields: the gateway's own)."""

    model_config = ConfigDict(extra="forbid")

    segmenting: Literal["fixed", "shots"] | None = None
    segment_s: float | None = Field(None, gt=0, le=3600)
    sample_fps: float | None = Field(None, gt=0, le=60)


class ReindexRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: str | None = Field(None, description="the alias to rebuild; default: this one")
    bundle: str | None = Field(
        None,
        description="the bundle to build with: a served name@version or name, a zoo name, a "
        "bundle folder, or 'tiny'; default: the one that built the current version",
    )
    promote: Literal["manual", "auto"] = Field(
        "manual",
        description="manual: wait in 'ready' with a comparison until promoted; auto: promote "
        "as soon as it is built",
    )
    video: VideoChange | None = Field(
        None,
        description="cluster-wide video segmenting for the new version, which records it; "
        "default: this gateway's (CLIPSEARCH_VIDEO__*). After the promote, every process must "
        "run with the new values (each refuses to start, or refuses jobs, until it does)",
    )


RolloutState = Literal[
    "queued", "building", "ready", "promoting", "completed", "failed", "cancelled"
]


class ComparisonSide(BaseModel):
    """One version over the compared queries."""

    version: str
    # "standardised": a comparison recorded before fused scores became probabilities (kept
    # readable; its scores were spreads above the null, not probabilities).
    score_kind: Literal["cosine", "probability", "standardised"] | None = Field(
        None,
        description="what its scores are (service.search.planner): cosine (one channel, in "
        "[-1, 1]) or probability (several fused, P(relevant) in [0, 1]); standardised only in "
        "comparisons recorded before fused scores were probabilities",
    )
    recall_at_1: float | None = Field(None, description="golden set; None without one")
    recall_at_10: float | None = None
    score_p10: float | None = Field(None, description="of every top-10 hit's score")
    score_p50: float | None = None
    score_p90: float | None = None
    latency_p50_ms: float | None = Field(None, description="one search, embedding included")
    searches: int = 0


class ComparedQuery(BaseModel):
    text: str
    overlap_at_10: float = Field(description="shared ids of the two top-10s, 0 to 1")
    old: list[str] = Field(description="the current version's top-10 ids")
    new: list[str] = Field(description="the new version's top-10 ids")


class Comparison(BaseModel):
    source_bundle: str
    bundle: str
    sampled_queries: int = Field(description="recent distinct text queries replayed")
    image_queries_seen: int = Field(
        description="image queries in the log: kept as hashes only, so never replayed"
    )
    golden_queries: int
    overlap_at_10: float | None = Field(description="mean over the sampled queries")
    old: ComparisonSide
    new: ComparisonSide
    queries: list[ComparedQuery] = Field(description="the first sampled queries, side by side")
    computed_at: str


class ReindexStatus(BaseModel):
    id: str
    kind: Literal["reindex"] = "reindex"
    collection: str
    bundle: str = Field(description="the bundle that builds the new version (name@version)")
    source_bundle: str | None = Field(None, description="the bundle of the current version")
    bundle_spec: str | None = Field(None, description="the bundle as it was asked for")
    settings: dict[str, Any] | None = Field(
        None, description="the cluster-wide settings the new version records"
    )
    promote: Literal["manual", "auto"] = "manual"
    state: RolloutState
    phase: Literal["rebuild", "reconcile", "compare"] | None = None
    source: str | None = Field(description="the version searched when the rollout began")
    target: str = Field(description="the version being built")
    total: int = Field(description="points in the source version when the rollout began")
    done: int = Field(description="source points processed by the rebuild")
    rebuilt: int = Field(0, description="items (an image, a video, a text) made again")
    copied: int = Field(0, description="points copied because they could not be made again")
    missing: int = Field(
        0, description="points another bundle could not make again (sources not stored)"
    )
    points: int | None = Field(None, description="points in the new version once built")
    rate_per_s: float | None = None
    eta_s: float | None = None
    comparison: Comparison | None = Field(None, description="once built (state ready)")
    notes: list[JobError] = Field(default_factory=list)
    error: str | None = None
    created_at: str
    updated_at: str
    built_at: str | None = None
    promoted_at: str | None = None
    finished_at: str | None = None


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: str | None = Field(None, description="the alias to roll back; default: this one")


class RollbackResponse(BaseModel):
    collection: str
    from_version: str = Field(alias="from")
    to_version: str = Field(alias="to")
    bundle: str | None = Field(None, description="the bundle that searches it now")

    model_config = ConfigDict(populate_by_name=True)


class GoldenQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=2_000)
    expected: list[str] = Field(
        min_length=1, max_length=100, description="ids of the right answers (point or item ids)"
    )


class GoldenSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: str | None = Field(None, description="the alias it is for; default: this one")
    queries: list[GoldenQuery] = Field(min_length=1, max_length=1_000)


class GoldenStored(BaseModel):
    collection: str
    queries: int


class GoldenListed(BaseModel):
    collection: str
    queries: list[GoldenQuery] = Field(description="empty without a golden set")


class VersionIndex(BaseModel):
    indexed_points: int = Field(
        description="points the last HNSW build covered; points written since are searched "
        "brute force until the next build (the maintenance thread starts one once a version "
        "holds 20,000 points and those in no graph reach 20,000 or 2 % of it)"
    )
    building: bool = Field(description="a build runs out of process and swaps in when done")
    segments: int


class CollectionVersion(BaseModel):
    name: str
    number: int = Field(description="0 for a collection created before versioning")
    bundle: str | None
    role: Literal["current", "next", "previous"] | None
    points: int
    vectors: dict[str, int]
    settings: dict[str, Any] | None = Field(
        None,
        description="the cluster-wide settings it was built with (bundle, video segmenting, "
        "caption chunking); null for a version made before versions recorded them",
    )
    index: VersionIndex | None = Field(
        None,
        description="the embedded store's index of this version; null where the store "
        "manages its index itself (a Qdrant server)",
    )


class CollectionInfo(BaseModel):
    alias: str
    current: str | None = Field(description="the version searches read")
    building: str | None = Field(None, description="the version a reindex is building")
    previous: str | None = Field(None, description="the version a rollback returns to")
    points: int
    vectors: dict[str, int]
    bundle: str | None
    served: bool = Field(
        description="whether this gateway's encoder serves the bundle it is searched with (a "
        "collection whose bundle cannot be loaded here answers its searches 400 until it is)"
    )
    versions: list[CollectionVersion]
    default: bool = Field(
        False,
        description="whether it is this gateway's configured collection (CLIPSEARCH_COLLECTION), "
        "the one a call that names none acts on",
    )


class CollectionList(BaseModel):
    collections: list[CollectionInfo]


class ExportRequest(BaseModel):
    to: str = Field(
        min_length=1,
        max_length=4096,
        description="a folder or an s3:// prefix under the allowed roots (--allow-root)",
    )
    collection: str | None = Field(None, description="default: the served collection")
    rows_per_file: int = Field(10_000, ge=1, le=1_000_000, description="points per parquet file")


class ExportResult(BaseModel):
    files: list[str] = Field(description="the parquet files written, in order")
    points: int
    bundle: str = Field(description="the bundle (name@version) that made the vectors")
    vectors: list[str]
