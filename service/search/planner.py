"""Query planning: which vector spaces a query is searched in, and how the results fuse.

Pure logic over the two clients (``EmbeddingClient``, ``VectorStore``): no transport here.

Channels (query embedding → stored vector):
- ``image``: text (joint space) or image query against the ``image`` vector;
- ``caption``: text (joint space) or image query against the ``caption`` multivector, by MaxSim:
  a point scores its best-matching chunk, so a sentence deep in a long caption is found;
- ``description``: text (sentence space) against ``description`` — vision-free, text only;
- ``visual``: image query against the ``visual`` features, where the bundle has them (image→image:
  near duplicates, "more like this"); such a bundle's image queries search it instead of ``image``.

An item query ("more like this") searches with a stored point's own vectors and leaves the point
itself out; ``auto`` and ``hybrid`` fuse the channels the item has a vector for. Its caption is
many vectors, and a query is one: it asks with the mean direction of the chunks (the whole
caption). Asked for one joint-space channel it lacks (``image`` of a text item, ``caption`` of
an uncaptioned image), it asks with its other joint-space vector.

``hybrid`` fuses channels fairly (``service.search.fusion``: the weighted mean of an item's
standardised similarity over the channels it has, so an uncaptioned photo or a text-only
document is not outranked for the vectors it lacks). ``auto`` picks for the query: an image query
searches ``image`` (or ``visual``); a text query is hybrid over the channels the bundle serves
well — all three with a trained bundle, caption and description only with an untrained test
bundle, whose text→image channel is noise and would only dilute the fusion.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from service.clients.base import EmbeddingClient
from service.core.domain import (
    FilterValue,
    Record,
    StoredHit,
    VectorName,
    VectorValue,
    point_id,
)
from service.core.errors import ClipsearchError, invalid, not_found
from service.core.schemas.api import GroupBy, Mode
from service.search.fusion import SCALE_HITS, fuse
from service.store.base import VectorStore

MODES: tuple[Mode, ...] = ("image", "caption", "description", "hybrid", "auto")
DEFAULT_WEIGHTS: dict[VectorName, float] = {
    "image": 1.0,
    "caption": 1.0,
    "description": 1.0,
    "visual": 1.0,
}


@dataclass(frozen=True)
class Query:
    text: str | None = None
    image: bytes | None = None
    item_id: str | None = None  # a stored item: its point id or the id it was added with

    def __post_init__(self) -> None:
        if sum(q is not None for q in (self.text, self.image, self.item_id)) != 1:
            raise invalid("give exactly one of 'text', 'image' or 'item_id'")


@dataclass(frozen=True)
class SearchOptions:
    mode: Mode = "auto"
    limit: int = 10
    offset: int = 0
    filter: Mapping[str, FilterValue] | None = None
    score_threshold: float | None = None
    weights: Mapping[VectorName, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    group_by: GroupBy | None = None


@dataclass(frozen=True)
class SearchResult:
    hits: list[StoredHit]
    mode: Mode
    channels: tuple[VectorName, ...]
    model: str
    took_ms: float


class SearchService:
    def __init__(self, embedder: EmbeddingClient, store: VectorStore, collection: str) -> None:
        self._embedder = embedder
        self._store = store
        self._collection = collection

    def channels_for(self, query: Query, mode: Mode) -> tuple[VectorName, ...]:
        # Image→image goes by the visual features where the bundle has them (near duplicates,
        # "more like this"); the joint space is what text searches.
        look: VectorName = "visual" if "visual" in self._embedder.info().spaces else "image"
        if query.image is not None:
            plan: dict[Mode, tuple[VectorName, ...]] = {
                "image": (look,),
                "caption": ("caption",),
                "hybrid": (look, "caption"),
                "auto": (look,),
            }
            if mode not in plan:
                raise invalid(f"mode {mode!r} needs a text query (it searches text descriptions)")
            return plan[mode]
        if query.item_id is not None and mode in ("auto", "hybrid"):
            every: tuple[VectorName, ...] = ("image", "caption", "description")
            return ("visual", *every) if look == "visual" else every  # those it has (_item_vectors)
        if query.item_id is not None and mode == "image":
            return (look,)  # an item without visual features falls back (_item_vectors)
        if mode == "auto":
            trained = self._embedder.info().trained
            return ("image", "caption", "description") if trained else ("caption", "description")
        if mode == "hybrid":
            return ("image", "caption", "description")
        return (mode,)

    def search(self, query: Query, options: SearchOptions) -> SearchResult:
        started = time.perf_counter()
        channels = self.channels_for(query, options.mode)
        exclude: str | None = None
        if query.item_id is not None:
            exclude, vectors = self._item_vectors(query.item_id, channels, len(channels) == 1)
            channels = tuple(vectors)  # those the item could fill, in the planned order
        else:
            vectors = self._embed(query, channels)
            channels = tuple(c for c in channels if c in vectors)
        end = options.offset + options.limit
        if options.group_by is None and len(channels) == 1 and exclude is None:
            hits = self._store.search(
                self._collection,
                channels[0],
                vectors[channels[0]],
                limit=options.limit,
                offset=options.offset,
                filter=options.filter,
                score_threshold=options.score_threshold,
            )
        else:
            # Grouping needs more candidates than the page: a video's other segments fall out.
            # Never fewer than SCALE_HITS: fusion sets each channel's scale from that many.
            depth = (
                max(SCALE_HITS, 3 * end)
                if options.group_by is None
                else min(1000, max(100, 10 * end))
            )
            ranked = self._ranked(channels, vectors, options, depth)
            if exclude is not None:  # depth > end: the page stays full without the item
                ranked = [hit for hit in ranked if hit.id != exclude]
            if options.group_by == "video":
                ranked = best_per_video(ranked)
            hits = ranked[options.offset : end]
        return SearchResult(
            hits=hits,
            mode=options.mode,
            channels=channels,
            model=self._embedder.info().bundle,
            took_ms=(time.perf_counter() - started) * 1000.0,
        )

    def _embed(self, query: Query, channels: Sequence[VectorName]) -> dict[VectorName, list[float]]:
        if query.text is not None:
            emb = self._embedder.embed_texts([query.text], lane="interactive")
            joint, sentence = emb.joint[0].tolist(), emb.sentence[0].tolist()
            return {c: (sentence if c == "description" else joint) for c in channels}
        assert query.image is not None
        (result,) = self._embedder.encode_images([query.image], lane="interactive")
        if isinstance(result, ClipsearchError):
            raise result
        joint = np.asarray(result.joint, dtype=np.float32).tolist()
        out: dict[VectorName, list[float]] = {c: joint for c in channels if c != "visual"}
        if "visual" in channels and result.visual is not None:
            out["visual"] = np.asarray(result.visual, dtype=np.float32).tolist()
        return out

    def find(self, item_id: str, *, with_vectors: bool = False) -> Record:
        """An item by its point id or by the id (media id) it was added with."""
        candidates = [item_id] if _is_uuid(item_id) else []
        candidates.append(point_id(self._collection, item_id))
        records = self._store.retrieve(self._collection, candidates, with_vectors=with_vectors)
        if not records:
            raise not_found(f"no item {item_id!r}")
        return records[0]

    def _item_vectors(
        self, item_id: str, channels: Sequence[VectorName], cross: bool
    ) -> tuple[str, dict[VectorName, list[float]]]:
        """The item's point id, and a query vector per channel it can fill: its own vector of
        that name, or with ``cross`` (one channel asked for) the other joint-space vector."""
        record = self.find(item_id, with_vectors=True)
        stored = record.vectors
        image = _one_vector(stored.get("image"))
        caption = _one_vector(stored.get("caption"))
        found: dict[VectorName, list[float] | None] = {
            "image": image or (caption if cross else None),
            "caption": caption or (image if cross else None),
            "description": _one_vector(stored.get("description")),
            "visual": _one_vector(stored.get("visual")),
        }
        if cross and channels == ("visual",) and found["visual"] is None:
            channels = ("image",)  # a text item, or one made before visual features
        vectors = {c: v for c in channels if (v := found[c]) is not None}
        if not vectors:
            raise invalid(
                f"item {item_id!r} has no vector to search {', '.join(channels)} with",
                {"item_vectors": sorted(stored)},
            )
        return record.id, vectors

    def _ranked(
        self,
        channels: Sequence[VectorName],
        vectors: Mapping[VectorName, list[float]],
        options: SearchOptions,
        depth: int,
    ) -> list[StoredHit]:
        """The top ``depth`` hits of one channel, or of several fused (``fusion.fuse``)."""
        if len(channels) == 1:
            return self._store.search(
                self._collection,
                channels[0],
                vectors[channels[0]],
                limit=depth,
                filter=options.filter,
                score_threshold=options.score_threshold,
            )
        hits: dict[VectorName, list[StoredHit]] = {}
        for channel in channels:
            if float(options.weights.get(channel, 1.0)) <= 0:
                continue
            hits[channel] = self._store.search(
                self._collection,
                channel,
                vectors[channel],
                limit=depth,
                filter=options.filter,
                score_threshold=options.score_threshold,
            )
        ids = list(dict.fromkeys(h.id for found in hits.values() for h in found))
        records = self._store.retrieve(self._collection, ids, with_vectors=True)
        return fuse(hits, records, vectors, options.weights)[:depth]


def _one_vector(value: VectorValue | None) -> list[float] | None:
    """A stored vector as one query vector: a multivector by the mean of its unit rows,
    normalised (the direction of the whole caption); None when there is none."""
    if value is None:
        return None
    rows = np.atleast_2d(np.asarray(value, dtype=np.float64))
    rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    mean = rows.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return (mean / norm if norm > 1e-6 else rows[0]).tolist()


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def best_per_video(ranked: Sequence[StoredHit]) -> list[StoredHit]:
    """Keep the best-ranked segment of each video (it carries its own ``t_start``/``t_end``);
    hits that are not video segments stand for themselves."""
    seen: set[str] = set()
    out: list[StoredHit] = []
    for hit in ranked:
        key = hit.payload.get("video_id")
        group = f"video:{key}" if key is not None else f"point:{hit.id}"
        if group not in seen:
            seen.add(group)
            out.append(hit)
    return out
