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
probability of relevance over the channels it has, so an uncaptioned photo or a text-only
document is not outranked for the vectors it lacks). ``auto`` picks for the query: an image query
searches ``image`` (or ``visual``); a text query is hybrid over the channels the bundle serves
well — all three with a trained bundle, caption and description only with an untrained test
bundle, whose text→image channel is noise and would only dilute the fusion.

Scores (``SearchResult.score_kind``): a search over one channel (every explicit single mode, an
image query in ``auto``) scores by ``cosine``, in [-1, 1]; one over several (``hybrid``, a text
query in ``auto``) by ``probability``, in [0, 1]: the weighted mean of the item's channels'
probabilities of relevance (each channel's cosine standardised on the bundle's null,
``service.search.calibration``, then mapped by the logistic curve of its kind of evidence,
``service.search.fusion.RELEVANCE``). For an item judged on one channel, 0.3 means that of the
held-out pairs that scored like this on this channel, 30 % were relevant. A ``score_threshold``
must lie on that scale (else ``invalid_input``) and applies to the score returned, after fusion
and before grouping and paging, so a hit's presence never depends on the page or on
``group_by``. ``explain`` gives every hit's per-channel cosine, standardised score and
probability, in every mode.

Bundles: a query is embedded with the bundle that built the collection version it searches
(``VersionedStore.bundle_of``: the alias is read once per query, and that version is searched,
so a promote or rollback between the embedding and the search never mixes models), and the
result names it (``model``). A version of a bundle the encoder does not serve is ``unavailable``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

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
from service.core.embeddings import EncoderInfo
from service.core.errors import ClipsearchError, ErrorType, invalid, not_found
from service.core.schemas.api import GroupBy, Mode
from service.search.calibration import BundleNull, measure_null
from service.search.fusion import (
    SCALE_HITS,
    ChannelCandidates,
    ChannelScore,
    NullScales,
    ScoredCandidates,
    explain_channel,
    fuse,
)
from service.store.base import VectorStore
from service.store.versions import parse_version

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
    explain: bool = False  # each hit's per-channel similarity, standardised score, relevance, rank


# cosine: one channel searched, in [-1, 1]; probability: several fused, P(relevant) in [0, 1].
ScoreKind = Literal["cosine", "probability"]
SCORE_RANGE: dict[ScoreKind, tuple[float, float]] = {
    "cosine": (-1.0, 1.0),
    "probability": (0.0, 1.0),
}


@dataclass(frozen=True)
class SearchResult:
    hits: list[StoredHit]
    mode: Mode
    channels: tuple[VectorName, ...]
    model: str
    took_ms: float
    # What ``score`` is: the cosine of a one-channel search, or the fused probability of
    # relevance (``service.search.fusion``) of a search over several channels.
    score_kind: ScoreKind = "cosine"
    explain: dict[str, tuple[ChannelScore, ...]] | None = None  # per hit id, when asked


class NullCache:
    """Each bundle's null (:func:`measure_null`), measured once however many searches of
    however many collections ask at the same time: the first measures, the others wait for it
    (each measurement puts the probe set on the interactive queue: concurrent first searches
    measuring side by side filled it and were refused)."""

    def __init__(self) -> None:
        self._nulls: dict[str | None, BundleNull] = {}  # per bundle (None: the default)
        self._locks: dict[str | None, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, embedder: EmbeddingClient, bundle: str | None) -> BundleNull:
        found = self._nulls.get(bundle)
        if found is not None:
            return found
        with self._lock:
            lock = self._locks.setdefault(bundle, threading.Lock())
        with lock:
            found = self._nulls.get(bundle)
            if found is None:
                found = self._nulls[bundle] = measure_null(embedder, bundle=bundle)
        return found


class SearchService:
    def __init__(
        self,
        embedder: EmbeddingClient,
        store: VectorStore,
        collection: str,
        *,
        nulls: NullCache | None = None,
    ) -> None:
        """``nulls``: shared by the search services of one encoder (one per collection)."""
        self._embedder = embedder
        self._store = store
        self._collection = collection
        self._nulls = nulls if nulls is not None else NullCache()
        # The store's one-request fusion reads, looked up once (a runtime Protocol check on
        # every search costs more than the lookup is worth).
        adapters = _adapters(store)
        self._scoring = next((a for a in adapters if isinstance(a, ScoredCandidates)), None)
        self._source = next((a for a in adapters if isinstance(a, ChannelCandidates)), None)

    def version(self, version: str | None = None) -> tuple[str, str | None]:
        """The collection version a search reads (``version``, or the one the alias names
        now) and the bundle that built it (None: the encoder's default)."""
        bundle_of = getattr(self._store, "bundle_of", None)
        if version is not None:
            parsed = parse_version(version)
            return version, parsed.bundle if parsed else None
        if bundle_of is None:
            return self._collection, None
        found: tuple[str, str | None] = bundle_of(self._collection)
        return found

    def info(self, bundle: str | None = None) -> EncoderInfo:
        """The encoder's info for ``bundle``; a bundle it does not serve is ``unavailable``."""
        try:
            return self._embedder.info(bundle=bundle)
        except ClipsearchError as exc:
            if exc.type != ErrorType.not_found or bundle is None:
                raise
            raise ClipsearchError(
                ErrorType.unavailable,
                f"collection {self._collection!r} is searched with bundle {bundle}, which this "
                "encoder does not serve: serve it (CLIPSEARCH_ENCODER__EXTRA_BUNDLES, or "
                "--bundle on the encoder workers) or roll the collection back",
                {"bundle": bundle, **(exc.detail if isinstance(exc.detail, dict) else {})},
            ) from exc

    def null_scales(self, bundle: str | None = None) -> NullScales:
        """The bundle's null per channel: fusion's scale (``service.search.calibration``),
        measured on the bundle's first fused or explained search and kept. Measured for text
        queries (text against pictures, captions and descriptions), and used for image and item
        queries too: one scale for every query, so their scores compare."""
        return self._nulls.get(self._embedder, bundle).channels("text")

    def channels_for(
        self, query: Query, mode: Mode, *, bundle: str | None = None
    ) -> tuple[VectorName, ...]:
        # Image→image goes by the visual features where the bundle has them (near duplicates,
        # "more like this"); the joint space is what text searches.
        info = self.info(bundle)
        look: VectorName = "visual" if "visual" in info.spaces else "image"
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
            trained = info.trained
            return ("image", "caption", "description") if trained else ("caption", "description")
        if mode == "hybrid":
            return ("image", "caption", "description")
        return (mode,)

    def search(
        self, query: Query, options: SearchOptions, *, version: str | None = None
    ) -> SearchResult:
        """``version``: a version of the collection to search instead of the alias's (a
        rollout's comparison), with the bundle that built it."""
        started = time.perf_counter()
        where, bundle = self.version(version)
        model = self.info(bundle).bundle
        channels = self.channels_for(query, options.mode, bundle=bundle)
        exclude: str | None = None
        if query.item_id is not None:
            exclude, vectors = self._item_vectors(
                query.item_id, channels, len(channels) == 1, where
            )
            channels = tuple(vectors)  # those the item could fill, in the planned order
        else:
            vectors = self._embed(query, channels, bundle)
            channels = tuple(c for c in channels if c in vectors)
        kind: ScoreKind = "cosine" if len(channels) == 1 else "probability"
        threshold = options.score_threshold
        low, high = SCORE_RANGE[kind]
        if threshold is not None and not low <= threshold <= high:
            scale = (
                f"uses one channel ({channels[0]}) and scores by cosine"
                if kind == "cosine"
                else f"fuses {', '.join(channels)} and scores by probability of relevance"
            )
            raise invalid(
                f"score_threshold {threshold} is out of range: this search {scale}, "
                f"in [{low:g}, {high:g}]",
                {"channels": list(channels), "score_kind": kind, "range": [low, high]},
            )
        end = options.offset + options.limit
        plain = options.group_by is None and exclude is None and not options.explain
        explain: dict[str, tuple[ChannelScore, ...]] = {}
        if kind == "cosine" and plain:
            hits = self._store.search(
                where,
                channels[0],
                vectors[channels[0]],
                limit=options.limit,
                offset=options.offset,
                filter=options.filter,
                score_threshold=threshold,
            )
        else:
            # Grouping needs more candidates than the page: a video's other segments fall out.
            # Never fewer than SCALE_HITS candidates per channel.
            depth = (
                max(SCALE_HITS, 3 * end)
                if options.group_by is None
                else min(1000, max(100, 10 * end))
            )
            ranked, explain = self._ranked(channels, vectors, options, depth, where, bundle)
            if exclude is not None:  # depth > end: the page stays full without the item
                ranked = [hit for hit in ranked if hit.id != exclude]
            if threshold is not None:  # on the score returned, whatever the page or grouping
                ranked = [hit for hit in ranked if hit.score >= threshold]
            if options.group_by == "video":
                ranked = best_per_video(ranked)
            hits = ranked[options.offset : end]
        return SearchResult(
            hits=hits,
            mode=options.mode,
            channels=channels,
            model=model,
            took_ms=(time.perf_counter() - started) * 1000.0,
            score_kind=kind,
            explain={h.id: explain[h.id] for h in hits} if options.explain else None,
        )

    def _embed(
        self, query: Query, channels: Sequence[VectorName], bundle: str | None
    ) -> dict[VectorName, list[float]]:
        if query.text is not None:
            emb = self._embedder.embed_texts([query.text], lane="interactive", bundle=bundle)
            joint, sentence = emb.joint[0].tolist(), emb.sentence[0].tolist()
            return {c: (sentence if c == "description" else joint) for c in channels}
        assert query.image is not None
        (result,) = self._embedder.encode_images([query.image], lane="interactive", bundle=bundle)
        if isinstance(result, ClipsearchError):
            raise result
        joint = np.asarray(result.joint, dtype=np.float32).tolist()
        out: dict[VectorName, list[float]] = {c: joint for c in channels if c != "visual"}
        if "visual" in channels and result.visual is not None:
            out["visual"] = np.asarray(result.visual, dtype=np.float32).tolist()
        return out

    def find(
        self, item_id: str, *, with_vectors: bool = False, version: str | None = None
    ) -> Record:
        """An item by its point id or by the id (media id) it was added with; a video
        segment's media id is ``<video id>#<index>``. Ids are the same in every version."""
        candidates = [item_id] if _is_uuid(item_id) else []
        candidates.append(point_id(self._collection, item_id))
        video_id, _, index = item_id.rpartition("#")
        if video_id and index.isdigit() and len(index) < 9:
            candidates.append(point_id(self._collection, video_id, int(index)))
        records = self._store.retrieve(
            version or self._collection, candidates, with_vectors=with_vectors
        )
        if not records:
            raise not_found(f"no item {item_id!r}")
        return records[0]

    def _item_vectors(
        self, item_id: str, channels: Sequence[VectorName], cross: bool, where: str
    ) -> tuple[str, dict[VectorName, list[float]]]:
        """The item's point id, and a query vector per channel it can fill: its own vector of
        that name, or with ``cross`` (one channel asked for) the other joint-space vector."""
        record = self.find(item_id, with_vectors=True, version=where)
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
        where: str,
        bundle: str | None = None,
    ) -> tuple[list[StoredHit], dict[str, tuple[ChannelScore, ...]]]:
        """The top ``depth`` hits of one channel (by cosine), or of several fused
        (``fusion.fuse``), best first; and each hit's explanation (a fused one's when asked)."""
        if len(channels) == 1:
            channel = channels[0]
            top = self._store.search(
                where, channel, vectors[channel], limit=depth, filter=options.filter
            )
            return top, explain_channel(channel, top, self.null_scales(bundle))
        queries = {c: vectors[c] for c in channels if float(options.weights.get(c, 1.0)) > 0}
        sims: dict[VectorName, dict[str, float]] | None = None
        if self._scoring is not None:  # the embedded shard: candidates and cosines, no vectors
            records, sims = self._scoring.scored_candidates(
                where, queries, depth=depth, filter=options.filter
            )
        elif self._source is not None:  # Qdrant's Query API: every channel in one round trip
            records = self._source.candidates(where, queries, depth=depth, filter=options.filter)
        else:
            found = [
                self._store.search(where, c, q, limit=depth, filter=options.filter)
                for c, q in queries.items()
            ]
            ids = list(dict.fromkeys(h.id for hits in found for h in hits))
            records = self._store.retrieve(where, ids, with_vectors=True)
        scales = self.null_scales(bundle)
        fused = fuse(
            records,
            queries,
            options.weights,
            null=scales,
            depth=depth,
            sims=sims,
            explain=options.explain,
        )
        return fused.hits[:depth], fused.explain


def _adapters(store: VectorStore) -> tuple[object, ...]:
    """The store, and the adapter its wrapper passes reads through to (``VersionedStore.inner``:
    an alias is resolved by the store either way): where to look for a store's one-request
    fusion reads (:class:`ScoredCandidates`, :class:`ChannelCandidates`)."""
    return (store, getattr(store, "inner", None))


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
