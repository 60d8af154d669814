"""Query planning: which vector spaces a query is searched in, and how the results fuse.

Pure logic over the two clients (``EmbeddingClient``, ``VectorStore``): no transport here.

Channels (query embedding → stored vector):
- ``image``: text (joint space) or image query against the ``image`` vector;
- ``caption``: text (joint space) or image query against the ``caption`` vector;
- ``description``: text (sentence space) against ``description`` — vision-free, text only.

``hybrid`` fuses channels by weighted reciprocal-rank fusion. ``auto`` picks for the query: an
image query searches ``image``; a text query is hybrid over the channels the bundle serves well —
all three with a trained bundle, caption and description only with an untrained test bundle,
whose text→image channel is noise and would only dilute the fusion.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from service.clients.base import EmbeddingClient
from service.core.domain import FilterValue, StoredHit, VectorName
from service.core.errors import ClipsearchError, invalid
from service.core.schemas import GroupBy, Mode
from service.store.base import VectorStore

MODES: tuple[Mode, ...] = ("image", "caption", "description", "hybrid", "auto")
DEFAULT_WEIGHTS: dict[VectorName, float] = {"image": 1.0, "caption": 1.0, "description": 1.0}
RRF_K = 60


@dataclass(frozen=True)
class Query:
    text: str | None = None
    image: bytes | None = None

    def __post_init__(self) -> None:
        if (self.text is None) == (self.image is None):
            raise invalid("give exactly one of 'text' or 'image'")


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
        if query.image is not None:
            plan: dict[Mode, tuple[VectorName, ...]] = {
                "image": ("image",),
                "caption": ("caption",),
                "hybrid": ("image", "caption"),
                "auto": ("image",),
            }
            if mode not in plan:
                raise invalid(f"mode {mode!r} needs a text query (it searches text descriptions)")
            return plan[mode]
        if mode == "auto":
            trained = self._embedder.info().trained
            return ("image", "caption", "description") if trained else ("caption", "description")
        if mode == "hybrid":
            return ("image", "caption", "description")
        return (mode,)

    def search(self, query: Query, options: SearchOptions) -> SearchResult:
        started = time.perf_counter()
        channels = self.channels_for(query, options.mode)
        vectors = self._embed(query, channels)
        end = options.offset + options.limit
        if options.group_by is None and len(channels) == 1:
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
            depth = max(50, 3 * end) if options.group_by is None else min(1000, max(100, 10 * end))
            ranked = self._ranked(channels, vectors, options, depth)
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
        (result,) = self._embedder.embed_images([query.image], lane="interactive")
        if isinstance(result, ClipsearchError):
            raise result
        vector = np.asarray(result, dtype=np.float32).tolist()
        return {c: vector for c in channels}

    def _ranked(
        self,
        channels: Sequence[VectorName],
        vectors: Mapping[VectorName, list[float]],
        options: SearchOptions,
        depth: int,
    ) -> list[StoredHit]:
        """The top ``depth`` hits of one channel, or of the weighted RRF of several."""
        if len(channels) == 1:
            return self._store.search(
                self._collection,
                channels[0],
                vectors[channels[0]],
                limit=depth,
                filter=options.filter,
                score_threshold=options.score_threshold,
            )
        scores: dict[str, float] = {}
        payloads: dict[str, StoredHit] = {}
        for channel in channels:
            weight = float(options.weights.get(channel, 1.0))
            if weight <= 0:
                continue
            ranked = self._store.search(
                self._collection,
                channel,
                vectors[channel],
                limit=depth,
                filter=options.filter,
                score_threshold=options.score_threshold,
            )
            for rank, hit in enumerate(ranked):
                scores[hit.id] = scores.get(hit.id, 0.0) + weight / (RRF_K + rank + 1)
                payloads.setdefault(hit.id, hit)
        order = sorted(scores, key=lambda pid: (-scores[pid], pid))
        return [
            StoredHit(id=pid, score=scores[pid], payload=payloads[pid].payload) for pid in order
        ]


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
