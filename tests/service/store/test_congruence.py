"""One suite, two stores: the embedded QdrantEdgeStore and QdrantServerStore on qdrant-client's
local mode. Each store is checked against a numpy brute force, then both run the same calls and
their answers are compared (the qdrant-client congruence-test pattern). ``caption`` is a
multivector of one to four rows, so every caption search here is MaxSim."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient

from service.core.domain import MULTI_VECTORS, Point, StoredHit, point_id
from service.core.errors import ClipsearchError, ErrorType
from service.store.base import VectorStore
from service.store.edge import QdrantEdgeStore
from service.store.server import QdrantServerStore

COLL = "media__tiny__1"
# "visual": the image→image features of a bundle that has them (the photo bundle).
DIMS: dict[str, int] = {"image": 16, "caption": 16, "description": 24, "visual": 20}
N = 300
KINDS = ("image", "video_segment", "text")
TAGS = ("cat", "dog", "beach", "night", "car", "food", "snow", "city")


def _unit(rng: np.random.Generator, dim: int) -> list[float]:
    v = rng.standard_normal(dim).astype(np.float32)
    return (v / np.linalg.norm(v)).tolist()


def make_points(n: int = N, seed: int = 7) -> list[Point]:
    rng = np.random.default_rng(seed)
    points = []
    for i in range(n):
        vectors: dict[str, Any] = {name: _unit(rng, dim) for name, dim in DIMS.items()}
        vectors["caption"] = [_unit(rng, DIMS["caption"]) for _ in range(1 + i % 4)]
        if i % 7 == 0:
            del vectors["caption"]
        if i % 11 == 0:
            del vectors["image"]
        tags = sorted(rng.choice(TAGS, size=int(rng.integers(0, 4)), replace=False).tolist())
        payload: dict[str, Any] = {
            "kind": KINDS[i % 3],
            "media_id": f"m{i // 3:03d}",
            "tags": tags,
            "rank": i % 10,
            "description_generated": i % 5 == 0,  # counts GENERATED_EVIDENCE in fusion
            "caption": f"photo n°{i} — café ☕ 日本 {tags}",
            "metadata": {"size": {"w": 64 + i, "h": 48}, "labels": tags, "score": i / 7, "x": None},
        }
        points.append(Point(point_id(COLL, f"src-{i}"), vectors, payload))
    return points


POINTS = make_points()
BY_ID = {p.id: p for p in POINTS}


@pytest.fixture(params=["edge", "server"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    impl = _make(request.param, tmp_path)
    yield impl
    impl.close()


@pytest.fixture
def loaded(store: VectorStore) -> VectorStore:
    store.ensure_collection(COLL, DIMS)  # type: ignore[arg-type]
    for start in range(0, N, 128):
        store.upsert(COLL, POINTS[start : start + 128])
    return store


@pytest.fixture
def both(tmp_path: Path) -> Iterator[tuple[VectorStore, VectorStore]]:
    pair = (_make("edge", tmp_path), _make("server", tmp_path))
    yield pair
    for impl in pair:
        impl.close()


def _make(kind: str, tmp_path: Path) -> VectorStore:
    if kind == "edge":
        return QdrantEdgeStore(tmp_path / "edge")
    return QdrantServerStore(QdrantClient(":memory:"))


def cosine(query: Sequence[float], stored: Any) -> float:
    """Cosine, or for a multivector MaxSim with one query row: the best row's cosine."""
    q = np.asarray(query, dtype=np.float64)
    rows = np.atleast_2d(np.asarray(stored, dtype=np.float64))
    return float(np.max(rows @ q / (np.linalg.norm(rows, axis=1) * np.linalg.norm(q))))


def brute_force(
    name: str,
    query: Sequence[float],
    keep: Callable[[Point], bool],
    points: Sequence[Point] = POINTS,
) -> list[tuple]:
    scored = [
        (cosine(query, p.vectors[name]), p.id) for p in points if name in p.vectors and keep(p)
    ]
    return sorted(scored, key=lambda s: -s[0])


def assert_hits_close(got: list[StoredHit], want: list[tuple[float, str]]) -> None:
    """Same scores (1e-4) and ids in order; ids of near-equal scores may trade places."""
    assert len(got) == len(want)
    want_scores = {pid: score for score, pid in want}
    for i, (hit, (score, pid)) in enumerate(zip(got, want, strict=True)):
        assert hit.score == pytest.approx(score, abs=1e-4), i
        if hit.id != pid:
            assert abs(want_scores.get(hit.id, 9.0) - score) < 1e-5, (i, hit.id, pid)


QUERIES = {name: _unit(np.random.default_rng(100 + d), d) for name, d in DIMS.items()}


@pytest.mark.parametrize("name", list(DIMS))
@pytest.mark.parametrize(("limit", "offset"), [(10, 0), (7, 5), (300, 0)])
def test_search_matches_brute_force(loaded: VectorStore, name: str, limit: int, offset: int):
    hits = loaded.search(COLL, name, QUERIES[name], limit=limit, offset=offset)  # type: ignore[arg-type]
    want = brute_force(name, QUERIES[name], lambda p: True)[offset : offset + limit]
    assert_hits_close(hits, want)
    for hit in hits:
        assert hit.payload == BY_ID[hit.id].payload


@pytest.mark.parametrize("name", ["image", "caption"])
def test_points_missing_a_vector_are_never_returned_for_it(loaded: VectorStore, name: str):
    hits = loaded.search(COLL, name, QUERIES[name], limit=N)  # type: ignore[arg-type]
    having = {p.id for p in POINTS if name in p.vectors}
    assert {h.id for h in hits} == having
    assert len(having) < N


FILTERS: list[tuple[dict[str, Any], Callable[[Point], bool]]] = [
    ({"kind": "video_segment"}, lambda p: p.payload["kind"] == "video_segment"),
    ({"tags": ["cat", "snow"]}, lambda p: bool({"cat", "snow"} & set(p.payload["tags"]))),
    ({"tags": "dog"}, lambda p: "dog" in p.payload["tags"]),
    (
        {"media_id": ["m001", "m042", "m099"]},
        lambda p: p.payload["media_id"] in {"m001", "m042", "m099"},
    ),
    ({"rank": 3}, lambda p: p.payload["rank"] == 3),
    ({"rank": [1, 2]}, lambda p: p.payload["rank"] in (1, 2)),
    (
        {"kind": "image", "tags": ["beach"]},
        lambda p: p.payload["kind"] == "image" and "beach" in p.payload["tags"],
    ),
    ({"kind": "nope"}, lambda p: False),
    ({"tags": []}, lambda p: False),
]


@pytest.mark.parametrize(("flt", "keep"), FILTERS, ids=[str(f) for f, _ in FILTERS])
def test_filters(loaded: VectorStore, flt: dict[str, Any], keep: Callable[[Point], bool]):
    assert loaded.count(COLL, flt) == sum(keep(p) for p in POINTS)
    hits = loaded.search(COLL, "description", QUERIES["description"], limit=20, filter=flt)
    assert_hits_close(hits, brute_force("description", QUERIES["description"], keep)[:20])


def test_bool_filter_matches_json_booleans_only(store: VectorStore):
    store.ensure_collection("flags", {"image": 2})
    values: list[Any] = [True, False, 1, [True, False], "true"]
    store.upsert(
        "flags",
        [
            Point(point_id("flags", str(i)), {"image": [1.0, 0.0]}, {"flag": v})
            for i, v in enumerate(values)
        ],
    )
    assert store.count("flags", {"flag": True}) == 2  # True and [True, False]; not 1, not "true"
    assert store.count("flags", {"flag": False}) == 2
    assert store.count("flags", {"flag": 1}) == 1


@pytest.mark.parametrize("threshold", [0.2, 0.45, 0.99])
def test_score_threshold(loaded: VectorStore, threshold: float):
    hits = loaded.search(COLL, "image", QUERIES["image"], limit=50, score_threshold=threshold)
    want = [s for s in brute_force("image", QUERIES["image"], lambda p: True) if s[0] >= threshold]
    assert_hits_close(hits, want[:50])


def test_count(loaded: VectorStore):
    assert loaded.count(COLL) == N
    assert loaded.count(COLL, None) == N


def test_retrieve_keeps_order_skips_unknown_and_round_trips_payload(loaded: VectorStore):
    unknown = point_id(COLL, "never-stored")
    ids = [POINTS[5].id, unknown, POINTS[0].id, POINTS[299].id, POINTS[5].id]
    records = loaded.retrieve(COLL, ids)
    assert [r.id for r in records] == [POINTS[5].id, POINTS[0].id, POINTS[299].id]
    for rec in records:
        assert rec.payload == BY_ID[rec.id].payload  # nested dicts, None, unicode, floats
        assert rec.vectors == {}
    assert loaded.retrieve(COLL, []) == []


def test_retrieve_with_vectors(loaded: VectorStore):
    records = loaded.retrieve(COLL, [POINTS[0].id, POINTS[7].id], with_vectors=True)
    for rec in records:
        stored = BY_ID[rec.id].vectors
        assert set(rec.vectors) == set(stored)
        for name, values in stored.items():
            assert np.ndim(rec.vectors[name]) == (2 if name in MULTI_VECTORS else 1)
            np.testing.assert_allclose(rec.vectors[name], values, atol=1e-5)


def test_upsert_of_an_existing_id_replaces(loaded: VectorStore):
    old = POINTS[3]
    new = Point(old.id, {"caption": [old.vectors["description"][:16]]}, {"kind": "text", "v": 2})
    loaded.upsert(COLL, [new])
    assert loaded.count(COLL) == N
    [rec] = loaded.retrieve(COLL, [old.id], with_vectors=True)
    assert rec.payload == {"kind": "text", "v": 2}
    assert set(rec.vectors) == {"caption"}  # the old image vector went with the old point
    assert old.id not in {h.id for h in loaded.search(COLL, "image", old.vectors["image"], limit=5)}


def test_delete(loaded: VectorStore):
    gone = [POINTS[1].id, POINTS[2].id, point_id(COLL, "never-stored")]
    loaded.delete(COLL, gone)
    loaded.delete(COLL, [])
    assert loaded.count(COLL) == N - 2
    assert loaded.retrieve(COLL, gone) == []
    hits = loaded.search(COLL, "image", POINTS[1].vectors["image"], limit=N)
    assert not {h.id for h in hits} & set(gone)


def test_ensure_collection_is_idempotent_and_refuses_other_dims(loaded: VectorStore):
    loaded.ensure_collection(COLL, dict(DIMS))  # type: ignore[arg-type]
    assert loaded.count(COLL) == N
    with pytest.raises(ClipsearchError) as err:
        loaded.ensure_collection(COLL, {**DIMS, "image": 32})  # type: ignore[arg-type]
    assert err.value.type is ErrorType.conflict
    with pytest.raises(ClipsearchError) as err:
        loaded.ensure_collection(COLL, {"image": 16})
    assert err.value.type is ErrorType.conflict


def test_collection_exists_and_drop(store: VectorStore):
    assert not store.collection_exists("other")
    store.ensure_collection("other", {"image": 4})
    assert store.collection_exists("other")
    store.upsert("other", [Point(point_id("other", "a"), {"image": [1.0, 0, 0, 0]})])
    store.drop_collection("other")
    assert not store.collection_exists("other")
    store.drop_collection("other")  # dropping a missing collection is a no-op
    store.ensure_collection("other", {"image": 8})  # recreated with other dims, empty
    assert store.count("other") == 0


ERRORS: list[tuple[str, Callable[[VectorStore], Any], ErrorType]] = [
    (
        "search missing",
        lambda s: s.search("missing", "image", [1.0] * 16, limit=3),
        ErrorType.not_found,
    ),
    ("count missing", lambda s: s.count("missing"), ErrorType.not_found),
    ("upsert missing", lambda s: s.upsert("missing", POINTS[:1]), ErrorType.not_found),
    ("retrieve missing", lambda s: s.retrieve("missing", [POINTS[0].id]), ErrorType.not_found),
    ("query dims", lambda s: s.search(COLL, "image", [1.0] * 15, limit=3), ErrorType.invalid_input),
    ("vector name", lambda s: s.search(COLL, "nope", [1.0] * 16, limit=3), ErrorType.invalid_input),
    (
        "point dims",
        lambda s: s.upsert(COLL, [Point(POINTS[0].id, {"image": [1.0] * 3})]),
        ErrorType.invalid_input,
    ),
    (
        "non-uuid id",
        lambda s: s.upsert(COLL, [Point("item-1", {"image": [1.0] * 16})]),
        ErrorType.invalid_input,
    ),
    ("non-uuid get", lambda s: s.retrieve(COLL, ["item-1"]), ErrorType.invalid_input),
    ("limit 0", lambda s: s.search(COLL, "image", [1.0] * 16, limit=0), ErrorType.invalid_input),
    ("mixed list", lambda s: s.count(COLL, {"rank": [1, "2"]}), ErrorType.invalid_input),
    ("bad name", lambda s: s.collection_exists("../etc"), ErrorType.invalid_input),
]


@pytest.mark.parametrize(("case", "call", "kind"), ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_are_typed(
    loaded: VectorStore, case: str, call: Callable[[VectorStore], Any], kind: ErrorType
):
    with pytest.raises(ClipsearchError) as err:
        call(loaded)
    assert err.value.type is kind, err.value.message


def test_both_stores_answer_the_same_calls_alike(both: tuple[VectorStore, VectorStore]):
    def script(s: VectorStore) -> list[Any]:
        out: list[Any] = []
        s.ensure_collection(COLL, DIMS)  # type: ignore[arg-type]
        s.upsert(COLL, POINTS)
        for name, query in QUERIES.items():
            for kwargs in (
                {},
                {"offset": 4},
                {"score_threshold": 0.3},
                {"filter": {"kind": "text"}},
                {"filter": {"tags": ["car", "food"], "rank": [0, 5, 9]}},
            ):
                out.append(
                    ("search", name, kwargs, s.search(COLL, name, query, limit=12, **kwargs))
                )  # type: ignore[arg-type]
        out.append(("count", s.count(COLL), s.count(COLL, {"media_id": ["m000", "m010"]})))
        out.append(("retrieve", s.retrieve(COLL, [POINTS[9].id, "0" * 32, POINTS[4].id])))
        s.upsert(
            COLL, [Point(POINTS[9].id, {"image": QUERIES["image"]}, {"kind": "text", "é": "ü"})]
        )
        s.delete(COLL, [POINTS[4].id])
        out.append(("after", s.count(COLL), s.retrieve(COLL, [POINTS[9].id, POINTS[4].id])))
        out.append(("top", s.search(COLL, "image", QUERIES["image"], limit=3)))
        out.append(("exists", s.collection_exists(COLL), s.collection_exists("nope")))
        return out

    edge, server = (script(s) for s in both)
    assert len(edge) == len(server)
    for a, b in zip(edge, server, strict=True):
        if a[0] in ("search", "top"):
            hits_a, hits_b = a[-1], b[-1]
            assert_hits_close(hits_a, [(h.score, h.id) for h in hits_b])
            assert {h.id: h.payload for h in hits_a} == {h.id: h.payload for h in hits_b}
        else:
            assert a == b


# -- fused search: the one numpy reference, and both stores through the planner ------------------

FUSED = ("image", "caption", "description")


def fused_reference(
    queries: dict[str, Sequence[float]],
    depth: int,
    keep: Callable[[Point], bool] = lambda p: True,
    weights: dict[str, float] | None = None,
    points: Sequence[Point] = POINTS,
    null: dict[str, tuple[float, float]] | None = None,
) -> list[tuple[float, str]]:
    """The fused ranking from its definition (``service.search.fusion``), in plain numpy over
    every point: the candidates are each channel's top ``depth``; a channel's cosine is
    standardised by its null (``null``: channel -> (mean, spread); a channel not there: mean 0,
    spread 1) and turned into a probability of relevance by the logistic curve of its evidence
    (``RELEVANCE``: a picture, a generated description, a given text); a channel's weight is the
    caller's, halved (GENERATED_EVIDENCE) for a generated description; a candidate's score is the
    weighted mean of its probabilities over the channels it has. The one reference:
    ``tests/service/search/test_fusion.py`` checks the fusion alone against it too."""
    from service.search.fusion import GENERATED_EVIDENCE, RELEVANCE, Evidence

    weights = weights or dict.fromkeys(queries, 1.0)
    null = null or {}
    by_id = {p.id: p for p in points}
    ranked = {c: brute_force(c, q, keep, points) for c, q in queries.items()}
    candidates = {pid for found in ranked.values() for _, pid in found[:depth]}
    out = []
    for pid in candidates:
        point = by_id[pid]
        probability, w = [], []
        for c in ranked:
            if c in point.vectors:
                mean, spread = null.get(c, (0.0, 1.0))
                z = (cosine(queries[c], point.vectors[c]) - mean) / spread
                generated = c == "description" and point.payload.get("description_generated")
                kind: Evidence = "picture" if c == "image" else "generated" if generated else "text"
                curve = RELEVANCE[kind]
                probability.append(1.0 / (1.0 + np.exp(-(curve.slope * z + curve.intercept))))
                w.append(weights[c] * (GENERATED_EVIDENCE if generated else 1.0))
        out.append((float(np.dot(w, probability)) / sum(w), pid))
    return sorted(out, key=lambda s: (-s[0], s[1]))


@pytest.fixture(scope="module")
def info_only(tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path) -> Iterator[Any]:
    """The tiny bundle's real embedder: item queries use it for the bundle's description only."""
    from service.clients.inprocess import InProcessEmbeddingClient
    from service.core.bundle.manifest import load_bundle
    from service.core.config import Settings
    from service.encoder.engine import EncoderEngine

    client = InProcessEmbeddingClient(EncoderEngine(load_bundle(tiny_bundle_dir), Settings()))
    yield client
    client.close()


@pytest.mark.parametrize("kind", ["edge", "server"])
@pytest.mark.parametrize(
    ("options", "keep"),
    [
        ({}, lambda p: True),
        ({"offset": 7}, lambda p: True),
        ({"filter": {"kind": "text"}}, lambda p: p.payload["kind"] == "text"),
        ({"weights": {"image": 2.0, "caption": 0.5, "description": 1.0}}, lambda p: True),
    ],
    ids=["plain", "page-2", "filter", "weights"],
)
def test_fused_search_matches_the_numpy_reference(
    kind: str,
    options: dict[str, Any],
    keep: Callable[[Point], bool],
    tmp_path: Path,
    info_only: Any,
):
    """A "more like this" search in ``hybrid`` fuses the item's own vectors (no embedding): the
    edge store (one request of a prefetch per channel on the shard) and the server store (one
    Query API request with a prefetch per channel) must both give the reference's ranking and
    scores."""
    from service.search.fusion import SCALE_HITS, ChannelCandidates, ScoredCandidates
    from service.search.planner import Query, SearchOptions, SearchService

    store = _make(kind, tmp_path)
    try:
        store.ensure_collection(COLL, DIMS)  # type: ignore[arg-type]
        store.upsert(COLL, POINTS)
        # every channel in one request: the server's Query API, the shard's prefetches
        assert isinstance(store, ChannelCandidates if kind == "server" else ScoredCandidates)
        source = POINTS[8]  # it has all three vectors, one caption row
        assert set(FUSED) <= set(source.vectors) and len(source.vectors["caption"]) == 1
        queries = {c: list(np.ravel(source.vectors[c])) for c in FUSED}
        service = SearchService(info_only, store, COLL)
        opts = SearchOptions(mode="hybrid", limit=10, **options)
        got = service.search(Query(item_id=source.id), opts)
        end = opts.offset + opts.limit
        null = {c: (n.mean, n.spread) for c, n in service.null_scales().items()}
        assert set(FUSED) <= set(null)  # measured for the tiny bundle on the probe set
        depth = max(SCALE_HITS, 3 * end)
        want = [
            s
            for s in fused_reference(queries, depth, keep, dict(opts.weights), null=null)
            if s[1] != source.id
        ][opts.offset : end]
        assert got.score_kind == "probability" and got.channels == FUSED
        assert_hits_close(got.hits, want)
    finally:
        store.close()


def test_both_stores_give_the_same_fused_answers(
    both: tuple[VectorStore, VectorStore], info_only: Any
):
    from service.search.planner import Query, SearchOptions, SearchService

    answers = []
    for s in both:
        s.ensure_collection(COLL, DIMS)  # type: ignore[arg-type]
        s.upsert(COLL, POINTS)
        service = SearchService(info_only, s, COLL)
        answers.append(
            [
                service.search(Query(item_id=POINTS[i].id), SearchOptions(mode="hybrid", **kw))
                for i in (0, 5, 11)  # 0 and 11 lack an image: they fuse what they have
                for kw in (
                    {"limit": 20},
                    {"limit": 5, "score_threshold": 0.5, "explain": True},
                    {"limit": 20, "filter": {"tags": ["car", "food"]}},
                )
            ]
        )
    for a, b in zip(*answers, strict=True):
        assert a.channels == b.channels and a.score_kind == b.score_kind
        assert_hits_close(a.hits, [(h.score, h.id) for h in b.hits])
        if a.explain is not None:
            assert b.explain is not None and set(a.explain) == set(b.explain)
            for pid, channels in a.explain.items():
                other = {c.channel: c for c in b.explain[pid]}
                for c in channels:
                    assert c.similarity == pytest.approx(other[c.channel].similarity, abs=1e-4)
                    assert c.rank == other[c.channel].rank


@pytest.mark.parametrize(
    ("queries", "depth", "kind"),
    [
        ({"image": [1.0] * 16}, 0, ErrorType.invalid_input),
        ({"nope": [1.0] * 16}, 5, ErrorType.invalid_input),
        ({"image": [1.0] * 3}, 5, ErrorType.invalid_input),
    ],
    ids=["depth 0", "unknown vector", "wrong dim"],
)
def test_one_request_candidates_refuse_bad_input(
    store: VectorStore, queries: dict[str, Any], depth: int, kind: ErrorType
):
    """The server's ``candidates`` and the embedded store's ``scored_candidates``."""
    fetch = getattr(store, "candidates", None) or store.scored_candidates  # type: ignore[attr-defined]
    store.ensure_collection(COLL, DIMS)  # type: ignore[arg-type]
    with pytest.raises(ClipsearchError) as err:
        fetch(COLL, queries, depth=depth)
    assert err.value.type is kind, err.value.message
    with pytest.raises(ClipsearchError) as missing:
        fetch("nope", {"image": [1.0] * 16}, depth=5)
    assert missing.value.type is ErrorType.not_found
    assert fetch(COLL, {}, depth=5) in ([], ([], {}))


@pytest.mark.parametrize("flt", [None, {"tags": ["car", "food"]}], ids=["all", "filter"])
def test_scored_candidates_are_each_channels_top_depth_scored_in_every_channel(
    tmp_path: Path, flt: dict[str, Any] | None
):
    """The embedded store's one-request candidates = the union of each channel's own top
    ``depth`` search, with their payloads and no vectors, and each one's cosine in every queried
    channel it has (a caption by its best row) = the numpy cosine of its stored vectors; never a
    channel it lacks. (The server store reads vectors back instead: ``candidates``.)"""
    from service.search.fusion import ScoredCandidates

    loaded = _make("edge", tmp_path)
    loaded.ensure_collection(COLL, DIMS)  # type: ignore[arg-type]
    loaded.upsert(COLL, POINTS)
    assert isinstance(loaded, ScoredCandidates)
    rng = np.random.default_rng(3)
    queries = {c: _unit(rng, DIMS[c]) for c in ("image", "caption", "description")}
    depth = 25
    records, sims = loaded.scored_candidates(COLL, queries, depth=depth, filter=flt)
    want = {
        h.id
        for c, q in queries.items()
        for h in loaded.search(COLL, c, q, limit=depth, filter=flt)  # type: ignore[arg-type]
    }
    assert len(records) == len({r.id for r in records}) == len(want)
    assert {r.id for r in records} == want
    assert set(sims) == set(queries)
    for record in records:
        point = BY_ID[record.id]
        assert record.payload == point.payload and record.vectors == {}
        for channel, q in queries.items():
            stored = point.vectors.get(channel)
            if stored is None:
                assert record.id not in sims[channel]  # type: ignore[index]
                continue
            rows = np.atleast_2d(np.asarray(stored, dtype=np.float64))
            cosine = float(np.max(rows @ np.asarray(q)))  # stored rows and query are unit
            assert sims[channel][record.id] == pytest.approx(cosine, abs=1e-5)  # type: ignore[index]
    loaded.close()


def test_the_served_stores_fetch_every_channel_in_one_request(
    tmp_path: Path, info_only: Any, monkeypatch: pytest.MonkeyPatch
):
    """As the factory serves them (wrapped in VersionedStore, read through an alias), both
    stores answer a fused search with one request (the server's Query API, the embedded
    shard's prefetches), never a search per channel and a retrieve, with the same hits."""
    from service.search.planner import Query, SearchOptions, SearchService
    from service.store.versions import VersionedStore

    served = VersionedStore(QdrantServerStore(QdrantClient(":memory:")))
    edge = VersionedStore(QdrantEdgeStore(tmp_path / "edge"))
    answers = []
    version = "media__tiny-test@0.1.0__1"  # as the gateway names it: the bundle that built it
    for store in (served, edge):
        store.ensure_collection(version, DIMS)  # type: ignore[arg-type]
        store.upsert(version, POINTS)
        store.update_aliases({"media": version})
        calls: list[str] = []
        for name in ("search", "retrieve", "candidates", "scored_candidates"):
            if hasattr(store.inner, name):
                monkeypatch.setattr(store.inner, name, _counted(getattr(store.inner, name), calls))
        service = SearchService(info_only, store, "media")
        query = Query(item_id=POINTS[8].id)
        answers.append(service.search(query, SearchOptions(mode="hybrid", limit=15)))
        answers.append(calls)
    served_hits, served_calls, edge_hits, edge_calls = answers
    assert served_calls == ["retrieve", "candidates"]  # the item's own vectors, then one request
    assert edge_calls == ["retrieve", "scored_candidates"]
    assert_hits_close(served_hits.hits, [(h.score, h.id) for h in edge_hits.hits])
    served.close()
    edge.close()


def _counted(method: Callable[..., Any], calls: list[str]) -> Callable[..., Any]:
    """``method``, noting its name in ``calls`` at each call."""

    def call(*args: Any, **kwargs: Any) -> Any:
        calls.append(method.__name__)
        return method(*args, **kwargs)

    return call
