"""Versioned collections on both adapters: aliases, dual writes while a version is built, the
atomic swap, rollback, and a collection created before versioning."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient

from service.core.domain import Point, point_id
from service.core.errors import ClipsearchError, ErrorType
from service.store.edge import QdrantEdgeStore
from service.store.server import QdrantServerStore
from service.store.versions import VersionedStore, parse_version, version_name

DIMS: dict[str, int] = {"image": 8, "caption": 8, "description": 12}


def points(n: int, start: int = 0, seed: int = 3) -> list[Point]:
    rng = np.random.default_rng(seed + start)
    out = []
    for i in range(start, start + n):
        vectors = {}
        for name, dim in DIMS.items():
            v = rng.standard_normal(dim)
            vectors[name] = (v / np.linalg.norm(v)).tolist()
        out.append(
            Point(point_id("media", f"s{i}"), vectors, {"media_id": f"s{i}", "kind": "image"})
        )
    return out


@pytest.fixture(params=["edge", "server"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VersionedStore]:
    inner = (
        QdrantEdgeStore(tmp_path / "edge")
        if request.param == "edge"
        else QdrantServerStore(QdrantClient(":memory:"))
    )
    versioned = VersionedStore(inner)
    yield versioned
    versioned.close()


def test_version_names_round_trip() -> None:
    name = version_name("media", "default@2.0.0", 3)
    assert name == "media__default@2.0.0__3"
    v = parse_version(name)
    assert v is not None and (v.collection, v.bundle, v.number) == ("media", "default@2.0.0", 3)
    assert parse_version("media") is None and parse_version("a__b__x") is None


def test_ensure_creates_the_first_version_behind_the_alias(store: VersionedStore) -> None:
    assert store.ensure("media", DIMS, "tiny@1") == "media__tiny@1__1"  # type: ignore[arg-type]
    assert store.aliases() == {"media": "media__tiny@1__1"}
    # Idempotent, and every operation takes the alias.
    assert store.ensure("media", DIMS, "tiny@1") == "media__tiny@1__1"  # type: ignore[arg-type]
    store.upsert("media", points(5))
    assert store.count("media") == store.count("media__tiny@1__1") == 5
    assert store.names() == ["media"]
    info = store.describe("media")
    assert info["current"] == "media__tiny@1__1" and info["points"] == 5
    assert info["vectors"] == DIMS and info["bundle"] == "tiny@1"
    with pytest.raises(ClipsearchError) as err:
        store.describe("other")
    assert err.value.type is ErrorType.not_found


def test_a_build_gets_every_write_then_swaps_and_rolls_back(store: VersionedStore) -> None:
    store.ensure("media", DIMS, "tiny@1")  # type: ignore[arg-type]
    old = points(10)
    store.upsert("media", old)
    new = store.begin("media", DIMS, "tiny@1")  # type: ignore[arg-type]
    assert new == "media__tiny@1__2"
    with pytest.raises(ClipsearchError) as err:
        store.begin("media", DIMS, "tiny@1")  # type: ignore[arg-type]
    assert err.value.type is ErrorType.conflict
    # While it is built: writes and deletes on the alias reach both versions.
    store.upsert("media", points(3, start=10))
    store.delete("media", [old[0].id])
    assert store.count("media") == 12 and store.count(new) == 3
    assert store.describe("media")["building"] == new
    with pytest.raises(ClipsearchError):
        store.rollback("media")  # not while building
    store.inner.upsert(new, old[1:])  # the rebuild
    assert store.swap("media") == ("media__tiny@1__1", new)
    assert store.aliases() == {"media": new, "media.previous": "media__tiny@1__1"}
    assert store.count("media") == 12
    # After the swap, writes and deletes reach the previous version too: a rollback serves
    # them (issue 19: they were lost, or came back, once rolled back and forward).
    store.upsert("media", points(1, start=20))
    assert store.count("media") == 13 and store.count("media__tiny@1__1") == 13

    assert store.rollback("media") == (new, "media__tiny@1__1")
    assert store.count("media") == 13
    # While the previous version serves: a write and a delete, kept by a roll-forward.
    store.upsert("media", points(1, start=30))
    store.delete("media", [old[1].id])
    assert store.count(new) == 13 and store.count("media__tiny@1__1") == 13
    assert store.rollback("media") == ("media__tiny@1__1", new)  # and forward again
    ids = {r.id for r in store.retrieve("media", [p.id for p in old + points(1, start=30)])}
    assert points(1, start=30)[0].id in ids and old[1].id not in ids
    roles = {v["name"]: v["role"] for v in store.describe("media")["versions"]}
    assert roles == {"media__tiny@1__1": "previous", new: "current"}

    # The next swap drops the version that was previous.
    third = store.begin("media", DIMS, "tiny@1")  # type: ignore[arg-type]
    store.swap("media")
    assert [v.name for v in store.versions("media")] == [new, third]


def test_abort_drops_the_build_and_stops_dual_writes(store: VersionedStore) -> None:
    store.ensure("media", DIMS, "tiny@1")  # type: ignore[arg-type]
    building = store.begin("media", DIMS, "tiny@1")  # type: ignore[arg-type]
    store.abort("media")
    assert not store.inner.collection_exists(building)
    assert store.aliases() == {"media": "media__tiny@1__1"}
    store.upsert("media", points(2))
    assert store.count("media") == 2
    with pytest.raises(ClipsearchError) as err:
        store.swap("media")
    assert err.value.type is ErrorType.conflict


def test_searches_during_swaps_never_fail(store: VersionedStore) -> None:
    store.ensure("media", DIMS, "tiny@1")  # type: ignore[arg-type]
    store.upsert("media", points(20))
    failures: list[BaseException] = []
    stop = threading.Event()

    def search() -> None:
        query = points(1, start=99)[0].vectors["image"]
        while not stop.is_set():
            try:
                assert len(store.search("media", "image", query, limit=5)) == 5
            except BaseException as exc:
                failures.append(exc)

    thread = threading.Thread(target=search)
    thread.start()
    try:
        for _ in range(5):
            building = store.begin("media", DIMS, "tiny@1")  # type: ignore[arg-type]
            store.inner.upsert(building, points(20))
            store.swap("media")
    finally:
        stop.set()
        thread.join()
    assert failures == []


def test_a_collection_from_before_versioning(tmp_path: Path) -> None:
    # The embedded store renames it into version 1, keeping its points and its bundle.
    edge = QdrantEdgeStore(tmp_path / "edge")
    edge.ensure_collection("media", DIMS)  # type: ignore[arg-type]
    edge.upsert(
        "media", [Point(p.id, p.vectors, {**p.payload, "model": "old@1"}) for p in points(4)]
    )
    store = VersionedStore(edge)
    try:
        assert store.ensure("media", DIMS, "tiny@2") == "media__old@1__1"  # type: ignore[arg-type]
        assert store.count("media") == 4
        assert not (tmp_path / "edge" / "collections" / "media").exists()
    finally:
        store.close()
    # After a restart the alias is still there.
    reopened = VersionedStore(QdrantEdgeStore(tmp_path / "edge"))
    try:
        assert reopened.aliases() == {"media": "media__old@1__1"} and reopened.count("media") == 4
    finally:
        reopened.close()

    # A server cannot rename: the collection is served as it is and refuses a reindex.
    server = VersionedStore(QdrantServerStore(QdrantClient(":memory:")))
    try:
        server.inner.ensure_collection("media", DIMS)  # type: ignore[arg-type]
        assert server.ensure("media", DIMS, "tiny@2") == "media"  # type: ignore[arg-type]
        assert server.describe("media")["current"] == "media"
        with pytest.raises(ClipsearchError) as err:
            server.begin("media", DIMS, "tiny@2")  # type: ignore[arg-type]
        assert err.value.type is ErrorType.conflict and "predates" in err.value.message
    finally:
        server.close()


def test_edge_aliases_refuse_collection_names_and_missing_targets(tmp_path: Path) -> None:
    edge = QdrantEdgeStore(tmp_path / "edge")
    try:
        edge.ensure_collection("a__t__1", DIMS)  # type: ignore[arg-type]
        with pytest.raises(ClipsearchError) as err:
            edge.update_aliases({"a__t__1": "a__t__1"})
        assert err.value.type is ErrorType.conflict
        with pytest.raises(ClipsearchError) as err:
            edge.update_aliases({"a": "nope"})
        assert err.value.type is ErrorType.not_found
        edge.update_aliases({"a": "a__t__1"})
        edge.drop_collection("a__t__1")  # its aliases go with it, as in Qdrant
        assert edge.aliases() == {}
    finally:
        edge.close()


def test_scroll_pages_through_everything_once(store: VersionedStore) -> None:
    store.ensure("media", DIMS, "tiny@1")  # type: ignore[arg-type]
    written = points(25)
    store.upsert("media", written)
    seen: list[str] = []
    offset = None
    while True:
        page, offset = store.scroll("media", limit=10, offset=offset, with_vectors=True)
        assert all(set(r.vectors) == set(DIMS) for r in page)
        seen += [r.id for r in page]
        if offset is None:
            break
    assert sorted(seen) == sorted(p.id for p in written)
