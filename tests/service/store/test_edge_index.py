"""The embedded store's index maintenance (issue 16): HNSW built by a subprocess on a copy of the
shard and swapped in, writes made meanwhile caught up, on real qdrant-edge at small sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.core.domain import Point, VectorName, point_id
from service.core.errors import ClipsearchError, ErrorType
from service.store import edge as edge_module
from service.store.edge import QdrantEdgeStore
from service.store.edge_index import IndexPolicy

REPO_ROOT = Path(__file__).resolve().parents[3]
COLL = "scale__tiny__1"
DIMS: dict[VectorName, int] = {"image": 48, "caption": 16}  # caption: a multivector (MaxSim)
N = 1500
# Small segments get a graph too, so that the tests see one built.
POLICY = IndexPolicy(
    enabled=False,
    builder_threads=1,
    indexing_threshold_kb=50,
    swap_quiet_s=0.3,
    swap_max_wait_s=1.0,
)


def image(p: Point) -> list[float]:
    vector = p.vectors["image"]
    assert isinstance(vector[0], float)
    return vector  # type: ignore[return-value]


def make_points(start: int, n: int, seed: int, tag: str = "v1") -> list[Point]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(start, start + n):
        image = rng.standard_normal(DIMS["image"])
        caption = rng.standard_normal((1 + i % 3, DIMS["caption"]))
        out.append(
            Point(
                point_id(COLL, f"p{i}"),
                {"image": (image / np.linalg.norm(image)).tolist(), "caption": caption.tolist()},
                {"n": i, "tag": tag},
            )
        )
    return out


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = QdrantEdgeStore(tmp_path, index_policy=POLICY)
    s.ensure_collection(COLL, DIMS)
    s.upsert(COLL, make_points(0, N, seed=1))
    yield s
    s.close()


def during_build(monkeypatch: pytest.MonkeyPatch, action: Any) -> None:
    """Run ``action`` right after the builder starts: after the copy, before the swap."""
    real = edge_module.start_builder

    def start(*args: Any, **kwargs: Any) -> Any:
        process = real(*args, **kwargs)
        action(process)
        return process

    monkeypatch.setattr(edge_module, "start_builder", start)


def test_a_build_swaps_in_an_hnsw_shard_with_the_writes_made_meanwhile(
    store: QdrantEdgeStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    new = make_points(N, 200, seed=2)
    changed = make_points(0, 50, seed=3, tag="v2")  # the same ids, other vectors and payloads
    deleted = [p.id for p in make_points(100, 80, seed=1)]

    def write(_process: subprocess.Popen[bytes]) -> None:
        assert store.index_state(COLL)["building"]
        store.upsert(COLL, new)
        store.upsert(COLL, changed)
        store.delete(COLL, deleted)

    during_build(monkeypatch, write)
    assert store.index_state(COLL)["indexed_vectors"] == 0  # brute force until built
    assert store.build_index(COLL) is True

    state = store.index_state(COLL)
    assert state["shard"] == "shard.1" and not state["building"]
    assert state["indexed_points"] == N  # what the builder's copy held
    assert state["indexed_vectors"] > 0  # the copy's points are in a graph now
    assert store.count(COLL) == N + 200 - 80

    def check(s: QdrantEdgeStore) -> None:
        assert s.retrieve(COLL, deleted) == []
        got = {r.id: r for r in s.retrieve(COLL, [p.id for p in changed + new], with_vectors=True)}
        assert len(got) == 250
        for p in changed:
            assert got[p.id].payload["tag"] == "v2"
            assert np.allclose(got[p.id].vectors["image"], p.vectors["image"], atol=1e-5)
            assert len(got[p.id].vectors["caption"]) == len(p.vectors["caption"])
        for p in (new[0], new[-1], changed[7]):  # written during the build: found first
            hits = s.search(COLL, "image", image(p), limit=3)
            assert hits[0].id == p.id and hits[0].score == pytest.approx(1.0, abs=1e-4)
        gone = make_points(0, N, seed=1)[100]  # deleted during the build
        assert all(h.id not in deleted for h in s.search(COLL, "image", image(gone), limit=5))

    check(store)
    store.close()
    monkeypatch.undo()
    folder = tmp_path / "collections" / COLL
    assert sorted(p.name for p in folder.iterdir()) == ["clipsearch.json", "shard.1"]
    assert json.loads((folder / "clipsearch.json").read_text())["shard"] == "shard.1"
    reopened = QdrantEdgeStore(tmp_path, index_policy=POLICY)
    try:
        assert reopened.count(COLL) == N + 200 - 80
        check(reopened)
        reopened.upsert(COLL, make_points(5000, 10, seed=9))  # writes go to the new shard
        assert reopened.count(COLL) == N + 200 - 80 + 10
        assert reopened.build_index(COLL) is True  # a second build starts from the built shard
        assert reopened.index_state(COLL)["shard"] == "shard.2"
        assert reopened.count(COLL) == N + 200 - 80 + 10
    finally:
        reopened.close()
    assert sorted(p.name for p in folder.iterdir()) == ["clipsearch.json", "shard.2"]


def test_a_killed_builder_leaves_the_serving_shard_as_it_was(
    store: QdrantEdgeStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def kill(process: subprocess.Popen[bytes]) -> None:
        process.kill()
        process.wait()

    during_build(monkeypatch, kill)
    before = store.search(COLL, "image", image(make_points(0, N, seed=1)[3]), limit=5)
    with pytest.raises(ClipsearchError) as err:
        store.build_index(COLL)
    assert err.value.type is ErrorType.internal and "unchanged" in err.value.message
    assert store.count(COLL) == N
    assert store.search(COLL, "image", image(make_points(0, N, seed=1)[3]), limit=5) == before
    state = store.index_state(COLL)
    assert state["shard"] is None and state["indexed_vectors"] == 0
    folder = tmp_path / "collections" / COLL
    assert not [p for p in folder.iterdir() if p.name.startswith(("build.", "shard."))]
    store.upsert(COLL, make_points(N, 5, seed=4))  # still writable
    assert store.count(COLL) == N + 5


CRASH_MID_BUILD = """
import os, sys
from pathlib import Path
from service.store import edge
from service.store.edge_index import IndexPolicy
from tests.service.store.test_edge_index import COLL, DIMS, N, make_points

def crash(*args, **kwargs):
    os._exit(9)  # the serving process dies after copying, before any builder ran

edge.start_builder = crash
store = edge.QdrantEdgeStore(Path(sys.argv[1]), index_policy=IndexPolicy(enabled=False))
store.ensure_collection(COLL, DIMS)
store.upsert(COLL, make_points(0, N, seed=1))
store.build_index(COLL)
"""


def test_a_process_killed_mid_build_reopens_intact(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", CRASH_MID_BUILD, str(tmp_path)],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 9, done.stderr
    folder = tmp_path / "collections" / COLL
    assert (folder / "build.1").is_dir()  # the copy it was working on
    store = QdrantEdgeStore(tmp_path, index_policy=POLICY)
    try:
        assert store.count(COLL) == N
        p = make_points(0, N, seed=1)[10]
        assert store.search(COLL, "image", image(p), limit=1)[0].id == p.id
        assert not (folder / "build.1").exists()  # the leftover copy is removed
        assert store.build_index(COLL) is True  # and a build works afterwards
        assert store.count(COLL) == N
    finally:
        store.close()


def test_searches_go_on_while_an_index_is_built(
    store: QdrantEdgeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = make_points(0, N, seed=1)[42]
    stop = threading.Event()
    results: list[tuple[float, str]] = []
    failures: list[BaseException] = []

    def search() -> None:
        while not stop.is_set():
            try:
                hits = store.search(COLL, "image", image(probe), limit=1)
                results.append((time.monotonic(), hits[0].id))
            except BaseException as exc:  # any failure fails the test
                failures.append(exc)
            time.sleep(0.001)

    builder_ran: list[float] = []
    during_build(monkeypatch, lambda process: builder_ran.append(time.monotonic()))
    thread = threading.Thread(target=search)
    thread.start()
    try:
        started = time.monotonic()
        assert store.build_index(COLL) is True
        finished = time.monotonic()
    finally:
        stop.set()
        thread.join()
    assert not failures
    assert all(hit == probe.id for _, hit in results)
    during = [t for t, _ in results if builder_ran[0] <= t <= finished]
    assert started < builder_ran[0] and len(during) >= 10  # answered while the builder built
    assert store.index_state(COLL)["shard"] == "shard.1"
    # searches never paused: the load and the close (which hold the GIL) waited their longest
    assert store.last_build is not None
    marks = store.last_build["marks"]
    assert marks["load"] - marks["warm"] >= POLICY.swap_max_wait_s


def test_dropping_a_collection_gives_its_build_up(
    store: QdrantEdgeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    during_build(monkeypatch, lambda process: store.drop_collection(COLL))
    assert store.build_index(COLL) is False
    assert not store.collection_exists(COLL)


def test_the_maintenance_thread_builds_when_the_policy_says_so(tmp_path: Path) -> None:
    policy = IndexPolicy(
        builder_threads=1,
        indexing_threshold_kb=50,
        min_points=1000,
        min_unindexed=1000,
        check_interval_s=0.2,
    )
    store = QdrantEdgeStore(tmp_path, index_policy=policy)
    try:
        store.ensure_collection(COLL, DIMS)
        store.upsert(COLL, make_points(0, 900, seed=1))
        time.sleep(1.0)
        assert store.index_state(COLL)["shard"] is None  # below min_points: brute force
        store.upsert(COLL, make_points(900, 300, seed=1))
        deadline = time.monotonic() + 90
        while store.index_state(COLL)["shard"] is None and time.monotonic() < deadline:
            time.sleep(0.2)
        state = store.index_state(COLL)
        assert state["shard"] == "shard.1"
        # the thread may have copied the shard halfway through the second write (its slices):
        # what the copy missed came by the catch-up
        assert 1000 <= state["indexed_points"] <= 1200
        assert store.count(COLL) == 1200
        ids = [p.id for p in make_points(0, 1200, seed=1)]
        assert len(store.retrieve(COLL, ids)) == 1200
    finally:
        store.close()


def test_the_policy() -> None:
    policy = IndexPolicy(min_points=20_000, min_unindexed=20_000, unindexed_fraction=0.02)
    assert not policy.due(19_999, 0)
    assert policy.due(20_000, 0)
    assert not policy.due(500_000, 490_001)  # 9,999 new: under min_unindexed
    assert policy.due(500_000, 480_000)
    assert not policy.due(2_000_000, 1_970_000)  # 30k new of 2M: under 2 %
    assert policy.due(2_000_000, 1_960_000)
    assert not IndexPolicy(enabled=False).due(10**7, 0)
