"""Cluster-wide settings: the ones that decide what a collection holds, recorded with it.

Most settings belong to one process (its port, its batch sizes, the roots it may read). A few
decide what the index holds, and every process that writes or embeds for a collection must
apply the same ones, or the collection silently mixes two kinds of points: the bundle that
embeds (vectors of one model), video segmenting (segment length and sampled frames decide which
segments exist and their ids) and caption chunking (how a long caption becomes rows). These are
a :class:`CollectionSettings`, written into the store's metadata of each collection version when
it is created (``VersionedStore.ensure`` / ``begin``) and read back by every process:

* the gateway (and the writer inside it) and ``clipsearch writer`` compare them with their own at
  start-up and refuse to start on a disagreement;
* a Celery ``clipsearch indexer`` learns the collection per job: the task carries the record,
  and an indexer that disagrees refuses the task (the job shows why).

A refusal names the setting's environment variable, both values and the way out
(:func:`contract_error`). Settings change only through a reindex: the new version records the
settings it was built with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from service.core.config import Settings
from service.core.errors import ClipsearchError, ErrorType

# The key under which a version's collection metadata holds its settings.
METADATA_KEY = "clipsearch_settings"
FORMAT = 1
BUNDLE_ENV = "CLIPSEARCH_BUNDLE"


class VideoContract(BaseModel):
    """How videos are cut into segments (``Settings.video``, less its per-process limits)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    segmenting: Literal["fixed", "shots"]
    segment_s: float
    sample_fps: float


class CaptionContract(BaseModel):
    """How a long caption becomes multivector rows. Chunks are sentence runs that fit the text
    tower, so their size follows the bundle; the cap on rows is the code's
    (``service.items.chunking.MAX_CHUNKS``), recorded so that processes of two releases that
    chunk differently cannot write into one collection."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_chunks: int


class CollectionSettings(BaseModel):
    """What a collection version was built with."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    format: int = FORMAT
    bundle: str | None  # name@version; None where unknown
    video: VideoContract
    captions: CaptionContract

    @classmethod
    def of(cls, settings: Settings, *, bundle: str | None, max_chunks: int) -> CollectionSettings:
        """This process's own: its ``video`` settings, the bundle it builds with."""
        video = settings.video
        return cls(
            bundle=bundle,
            video=VideoContract(
                segmenting=video.segmenting, segment_s=video.segment_s, sample_fps=video.sample_fps
            ),
            captions=CaptionContract(max_chunks=max_chunks),
        )

    def metadata(self) -> dict[str, Any]:
        """The collection metadata entry that records it."""
        return {METADATA_KEY: self.model_dump(mode="json")}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any] | None) -> CollectionSettings | None:
        """The recorded settings in a version's metadata; None when it records none (a version
        made before settings were recorded). A record this release cannot read is an error."""
        raw = (metadata or {}).get(METADATA_KEY)
        if raw is None:
            return None
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ClipsearchError(
                ErrorType.internal,
                f"the collection's recorded settings cannot be read: {exc.errors()[0]['msg']}",
                {"recorded": raw},
            ) from exc


@dataclass(frozen=True)
class Disagreement:
    setting: str  # the environment variable
    here: object  # this process's value
    recorded: object  # the collection's

    def describe(self, collection: str, where: str) -> str:
        return (
            f"{self.setting}={_show(self.here)} {where}, but collection {collection!r} was built "
            f"with {_show(self.recorded)}"
        )


def disagreements(
    recorded: CollectionSettings,
    here: CollectionSettings,
    *,
    served: Sequence[str] | None = None,
) -> list[Disagreement]:
    """Where this process's settings differ from the collection's. ``served``: the bundles this
    process embeds with (None: it embeds nothing, e.g. a writer); the recorded bundle must be
    among them."""
    out = [
        Disagreement(f"CLIPSEARCH_VIDEO__{name.upper()}", value, getattr(recorded.video, name))
        for name, value in here.video
        if value != getattr(recorded.video, name)
    ]
    if here.captions.max_chunks != recorded.captions.max_chunks:
        # No setting changes it: only another release of clipsearch does.
        out.append(
            Disagreement(
                "caption chunking (max_chunks, this release's)",
                here.captions.max_chunks,
                recorded.captions.max_chunks,
            )
        )
    if served is not None and recorded.bundle is not None and recorded.bundle not in served:
        out.insert(0, Disagreement(BUNDLE_ENV, "+".join(served) or "none", recorded.bundle))
    return out


def contract_error(
    collection: str,
    found: Sequence[Disagreement],
    *,
    where: str = "here",
    version: str | None = None,
) -> ClipsearchError:
    """(conflict) naming each disagreement: the setting, this process's value and the
    collection's, and what to do."""
    parts = []
    for d in found:
        fix = (
            f"serve {_show(d.recorded)} ({BUNDLE_ENV}, or beside it "
            "CLIPSEARCH_ENCODER__EXTRA_BUNDLES; the workers' --bundle with remote workers), "
            "or roll the collection back or out onto this bundle"
            if d.setting == BUNDLE_ENV
            else f"set it to {_show(d.recorded)} or reindex"
            if d.setting.startswith("CLIPSEARCH_")
            else "run one release of clipsearch for the collection, or reindex"
        )
        parts.append(f"{d.describe(collection, where)}; {fix}")
    return ClipsearchError(
        ErrorType.conflict,
        "; ".join(parts),
        {
            "collection": collection,
            "version": version,
            "settings": [
                {"setting": d.setting, "here": d.here, "collection": d.recorded} for d in found
            ],
        },
    )


def check_settings(
    collection: str,
    recorded: CollectionSettings | None,
    here: CollectionSettings,
    *,
    served: Sequence[str] | None = None,
    where: str = "here",
    version: str | None = None,
) -> None:
    """Raise :func:`contract_error` when this process disagrees with what the collection
    records; a collection that records nothing passes."""
    if recorded is None:
        return
    found = disagreements(recorded, here, served=served)
    if found:
        raise contract_error(collection, found, where=where, version=version)


def _show(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
