"""The ``caption`` multivector (MaxSim) in both stores: ranking against a numpy reference, the
shapes a store takes and gives back, what it refuses, and collections made before captions were
multivectors (a dense ``caption``), which keep working for one-chunk captions."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import qdrant_edge as qe
from qdrant_client import QdrantClient, models

from service.core.domain import Point, point_id
from service.core.errors import ClipsearchError, ErrorType
from service.store.base import VectorStore
from service.store.edge import QdrantEdgeStore
from service.store.server import QdrantServerStore
from tests.service.store.test_congruence import assert_hits_close, brute_force

COLL = "captions"
DIMS: dict[str, int] = {"image": 8, "caption": 8}
N = 120


def make_points(seed: int = 3) -> list[Point]:
    """Rows of any length (cosine normalises each), 1 to 6 chunks, some points without one."""
    rng = np.random.default_rng(seed)
    points = []
    for i in range(N):
        vectors: dict[str, Any] = {"image": rng.standard_normal(8).tolist()}
        if i % 5:
            chunks = rng.standard_normal((1 + i % 6, 8)) * rng.uniform(0.1, 9.0, (1 + i % 6, 1))
            vectors["caption"] = chunks.tolist()
        points.append(Point(point_id(COLL, f"p{i}"), vectors, {"i": i, "kind": "text"}))
    return points


POINTS = make_points()
QUERY = np.random.default_rng(11).standard_normal(8).tolist()


def _make(kind: str, tmp_path: Path) -> VectorStore:
    if kind == "edge":
        return QdrantEdgeStore(tmp_path / "edge")
    return QdrantServerStore(QdrantClient(":memory:"))


@pytest.fixture(params=["edge", "server"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    impl = _make(request.param, tmp_path)
    impl.ensure_collection(COLL, DIMS)  # type: ignore[arg-type]
    impl.upsert(COLL, POINTS)
    yield impl
    impl.close()


@pytest.mark.parametrize(
    ("limit", "offset", "threshold"), [(10, 0, None), (7, 9, None), (N, 0, 0.5)]
)
def test_maxsim_ranks_by_the_best_chunk(
    store: VectorStore, limit: int, offset: int, threshold: float | None
):
    hits = store.search(
        COLL, "caption", QUERY, limit=limit, offset=offset, score_threshold=threshold
    )
    want = brute_force("caption", QUERY, lambda p: True, POINTS)
    if threshold is not None:
        want = [w for w in want if w[0] >= threshold]
    assert_hits_close(hits, want[offset : offset + limit])
    assert all(POINTS[h.payload["i"]].vectors.get("caption") for h in hits)


def test_one_chunk_that_matches_is_enough(store: VectorStore):
    """A point whose last of many chunks is the query outranks points that are close overall."""
    rng = np.random.default_rng(5)
    noise = rng.standard_normal((9, 8)).tolist()
    target = Point(point_id(COLL, "needle"), {"caption": [*noise, QUERY]}, {"i": -1})
    store.upsert(COLL, [target])
    [top] = store.search(COLL, "caption", QUERY, limit=1)
    assert top.id == target.id
    assert top.score == pytest.approx(1.0, abs=1e-5)


def test_both_stores_rank_multivectors_alike(tmp_path: Path):
    edge, server = _make("edge", tmp_path), _make("server", tmp_path)
    try:
        answers = []
        for s in (edge, server):
            s.ensure_collection(COLL, DIMS)  # type: ignore[arg-type]
            s.upsert(COLL, POINTS)
            answers.append(
                [
                    s.search(COLL, "caption", QUERY, limit=25),
                    s.search(COLL, "caption", QUERY, limit=5, offset=3, filter={"kind": "text"}),
                    s.search(COLL, "image", QUERY, limit=5),
                ]
            )
        for a, b in zip(*answers, strict=True):
            assert_hits_close(a, [(h.score, h.id) for h in b])
    finally:
        edge.close()
        server.close()


def test_retrieve_gives_the_rows_back(store: VectorStore):
    with_caption = [p for p in POINTS if "caption" in p.vectors][:6]
    records = store.retrieve(COLL, [p.id for p in with_caption], with_vectors=True)
    for rec, point in zip(records, with_caption, strict=True):
        rows = np.asarray(point.vectors["caption"])
        want = rows / np.linalg.norm(rows, axis=1, keepdims=True)  # cosine stores unit rows
        np.testing.assert_allclose(rec.vectors["caption"], want, atol=1e-5)
    [no_caption] = store.retrieve(COLL, [POINTS[0].id], with_vectors=True)
    assert set(no_caption.vectors) == {"image"}


def test_a_lone_caption_vector_is_a_one_row_multivector(store: VectorStore):
    pid = point_id(COLL, "flat")
    store.upsert(COLL, [Point(pid, {"caption": QUERY})])
    [rec] = store.retrieve(COLL, [pid], with_vectors=True)
    assert np.shape(rec.vectors["caption"]) == (1, 8)
    assert store.search(COLL, "caption", QUERY, limit=1)[0].id == pid


BAD: list[tuple[str, dict[str, Any]]] = [
    ("a chunk of other dims", {"caption": [[1.0] * 8, [1.0] * 7]}),
    ("every chunk of other dims", {"caption": [[1.0] * 3]}),
    ("no chunks", {"caption": []}),
    ("an empty chunk", {"caption": [[]]}),
    ("an empty chunk after a good one", {"caption": [[1.0] * 8, []]}),
    ("rows for a single vector", {"image": [[1.0] * 8, [0.5] * 8]}),
    ("text for a vector", {"image": "12345678"}),
    ("an unknown vector", {"nope": [[1.0] * 8]}),
]


@pytest.mark.parametrize(("case", "vectors"), BAD, ids=[b[0] for b in BAD])
def test_malformed_multivectors_are_refused_not_crashed_on(
    store: VectorStore, case: str, vectors: dict[str, Any]
):
    pid = point_id(COLL, "bad")
    with pytest.raises(ClipsearchError) as err:
        store.upsert(COLL, [Point(pid, vectors)])
    assert err.value.type is ErrorType.invalid_input, err.value.message
    assert store.retrieve(COLL, [pid]) == []
    assert store.count(COLL) == N  # and the store still works


QUERIES_REFUSED: list[tuple[str, Callable[[VectorStore], Any]]] = [
    ("rows as a query", lambda s: s.search(COLL, "caption", [QUERY, QUERY], limit=3)),
    ("query of other dims", lambda s: s.search(COLL, "caption", QUERY[:7], limit=3)),
    ("empty query", lambda s: s.search(COLL, "caption", [], limit=3)),
]


@pytest.mark.parametrize(("case", "call"), QUERIES_REFUSED, ids=[q[0] for q in QUERIES_REFUSED])
def test_a_caption_query_is_one_vector(
    store: VectorStore, case: str, call: Callable[[VectorStore], Any]
):
    with pytest.raises(ClipsearchError) as err:
        call(store)
    assert err.value.type is ErrorType.invalid_input, err.value.message


def test_edge_records_its_multivectors_and_keeps_them_across_a_restart(tmp_path: Path):
    store = QdrantEdgeStore(tmp_path)
    store.ensure_collection(COLL, DIMS)  # type: ignore[arg-type]
    store.close()
    meta = json.loads((tmp_path / "collections" / COLL / "clipsearch.json").read_text())
    assert meta == {"format": 2, "distance": "cosine", "dims": DIMS, "multivectors": ["caption"]}
    store = QdrantEdgeStore(tmp_path)
    try:
        store.upsert(COLL, POINTS)
        hits = store.search(COLL, "caption", QUERY, limit=10)
        assert_hits_close(hits, brute_force("caption", QUERY, lambda p: True, POINTS)[:10])
    finally:
        store.close()


# -- collections made before captions were multivectors -----------------------------------------


def _legacy_edge(tmp_path: Path) -> VectorStore:
    folder = tmp_path / "legacy" / "collections" / COLL
    folder.parent.mkdir(parents=True)
    config = qe.EdgeConfig(
        vectors={
            v: qe.EdgeVectorParams(size=d, distance=qe.Distance.Cosine) for v, d in DIMS.items()
        }
    )
    qe.EdgeShard.create(str(folder), config).close()
    (folder / "clipsearch.json").write_text(
        json.dumps({"format": 1, "distance": "cosine", "dims": DIMS})
    )
    return QdrantEdgeStore(tmp_path / "legacy")


def _legacy_server(tmp_path: Path) -> VectorStore:
    client = QdrantClient(":memory:")
    client.create_collection(
        COLL,
        vectors_config={
            v: models.VectorParams(size=d, distance=models.Distance.COSINE) for v, d in DIMS.items()
        },
    )
    return QdrantServerStore(client)


@pytest.fixture(params=["edge", "server"])
def legacy(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    impl = (_legacy_edge if request.param == "edge" else _legacy_server)(tmp_path)
    yield impl
    impl.close()


def test_a_dense_caption_collection_keeps_working_for_one_chunk_captions(
    legacy: VectorStore, caplog: pytest.LogCaptureFixture
):
    legacy.ensure_collection(COLL, DIMS)  # type: ignore[arg-type]
    assert "reindexed" in caplog.text
    one_chunk = [
        Point(p.id, {**p.vectors, "caption": p.vectors["caption"][:1]}, p.payload)
        if "caption" in p.vectors
        else p
        for p in POINTS
    ]
    legacy.upsert(COLL, one_chunk)
    hits = legacy.search(COLL, "caption", QUERY, limit=15)
    assert_hits_close(hits, brute_force("caption", QUERY, lambda p: True, one_chunk)[:15])
    [rec] = legacy.retrieve(COLL, [one_chunk[1].id], with_vectors=True)
    assert np.shape(rec.vectors["caption"]) == (1, 8)  # the domain shape, whatever is stored


def test_a_dense_caption_collection_refuses_long_captions_naming_the_way_out(legacy: VectorStore):
    with pytest.raises(ClipsearchError) as err:
        legacy.upsert(COLL, [POINTS[2]])  # three chunks
    assert err.value.type is ErrorType.conflict
    assert "reindex" in err.value.message
    assert legacy.count(COLL) == 0


def _alias(collection: str, alias: str) -> list[Any]:
    return [
        models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)),
        models.CreateAliasOperation(
            create_alias=models.CreateAlias(collection_name=collection, alias_name=alias)
        ),
    ]


def test_server_store_follows_an_alias_to_a_version_of_another_layout(tmp_path: Path):
    store = _legacy_server(tmp_path)  # COLL: a dense caption
    client: QdrantClient = store._client  # type: ignore[attr-defined]
    store.ensure_collection("v2", DIMS)  # type: ignore[arg-type]
    store.upsert("v2", POINTS)
    client.update_collection_aliases(_alias(COLL, "media")[1:])
    one_chunk = Point(POINTS[1].id, {"caption": POINTS[1].vectors["caption"][:1]})
    store.upsert("media", [one_chunk])
    assert store.search("media", "caption", QUERY, limit=1)[0].id == one_chunk.id  # dense layout
    client.update_collection_aliases(_alias("v2", "media"))  # a reindex swapped the alias
    hits = store.search("media", "caption", QUERY, limit=10)  # the stale layout is refused
    assert_hits_close(hits, brute_force("caption", QUERY, lambda p: True, POINTS)[:10])
    store.upsert("media", [POINTS[2]])  # three chunks: fine on the multivector version
    assert client.count("v2").count == N
    assert client.count(COLL).count == 1
    store.close()
