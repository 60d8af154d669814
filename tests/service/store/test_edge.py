"""What only the embedded store has: a data dir on disk, one process per data dir, maintenance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from service.core.domain import Point, point_id
from service.core.errors import ClipsearchError, ErrorType
from service.store.base import VectorStore
from service.store.edge import FLUSH_QUIET_S, UPSERT_SLICE, QdrantEdgeStore
from tests.service.store.test_congruence import COLL, DIMS, POINTS, QUERIES

REPO_ROOT = Path(__file__).resolve().parents[3]

OPEN_IN_CHILD = """
import sys
from pathlib import Path
from service.core.errors import ClipsearchError
from service.store.edge import QdrantEdgeStore
try:
    QdrantEdgeStore(Path(sys.argv[1])).close()
except ClipsearchError as exc:
    print(exc.type.value, exc.message)
    sys.exit(3)
print("opened")
"""


WRITE_AND_CRASH = """
import os, sys
from pathlib import Path
from tests.service.store.test_congruence import COLL, DIMS, POINTS
from service.store.edge import QdrantEdgeStore
store = QdrantEdgeStore(Path(sys.argv[1]))
store.ensure_collection(COLL, DIMS)
store.upsert(COLL, POINTS)
store.delete(COLL, [POINTS[0].id])
os._exit(0)  # no close(), no flush at exit: what was acknowledged must be on disk
"""


def run_child(code: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code, str(data_dir)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=120,
    )


@pytest.fixture
def edge(tmp_path: Path):
    store = QdrantEdgeStore(tmp_path)
    store.ensure_collection(COLL, DIMS)  # type: ignore[arg-type]
    store.upsert(COLL, POINTS)
    yield store
    store.close()


def test_implements_the_protocol(edge: QdrantEdgeStore):
    assert isinstance(edge, VectorStore)


def test_data_survives_close_and_reopen(tmp_path: Path, edge: QdrantEdgeStore):
    edge.delete(COLL, [POINTS[0].id])
    before = edge.search(COLL, "image", QUERIES["image"], limit=20, filter={"kind": "image"})
    edge.close()
    edge.close()  # idempotent

    reopened = QdrantEdgeStore(tmp_path)
    try:
        assert reopened.collection_exists(COLL)
        assert reopened.count(COLL) == len(POINTS) - 1
        after = reopened.search(COLL, "image", QUERIES["image"], limit=20, filter={"kind": "image"})
        assert after == before
        with pytest.raises(ClipsearchError) as err:  # dims came back from clipsearch.json
            reopened.ensure_collection(COLL, {"image": 16})
        assert err.value.type is ErrorType.conflict
    finally:
        reopened.close()
    meta = json.loads((tmp_path / "collections" / COLL / "clipsearch.json").read_text())
    assert meta["dims"] == DIMS


def test_acknowledged_writes_survive_a_crash(tmp_path: Path):
    child = run_child(WRITE_AND_CRASH, tmp_path)
    assert child.returncode == 0, child.stderr
    store = QdrantEdgeStore(tmp_path)  # the dead child's flock is gone with its process
    try:
        assert store.count(COLL) == len(POINTS) - 1
        assert store.retrieve(COLL, [POINTS[1].id])[0].payload == POINTS[1].payload
    finally:
        store.close()


def test_a_second_process_on_the_same_data_dir_is_refused(tmp_path: Path, edge: QdrantEdgeStore):
    child = run_child(OPEN_IN_CHILD, tmp_path)
    assert child.returncode == 3, child.stderr
    assert child.stdout.startswith("unavailable ")
    assert "in use by another process" in child.stdout
    assert f"pid {os.getpid()}" in child.stdout
    edge.close()
    child = run_child(OPEN_IN_CHILD, tmp_path)  # the lock goes with the first store
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "opened"


def test_a_second_store_in_the_same_process_is_refused_too(tmp_path: Path, edge: QdrantEdgeStore):
    with pytest.raises(ClipsearchError) as err:
        QdrantEdgeStore(tmp_path)
    assert err.value.type is ErrorType.unavailable
    assert "in use" in err.value.message


@pytest.mark.parametrize("bad", ["item-42", "", "12", "../x"])
def test_ids_must_be_uuids(edge: QdrantEdgeStore, bad: str):
    for call in (
        lambda: edge.upsert(COLL, [Point(bad, {"image": QUERIES["image"]})]),
        lambda: edge.retrieve(COLL, [POINTS[0].id, bad]),
        lambda: edge.delete(COLL, [bad]),
    ):
        with pytest.raises(ClipsearchError) as err:
            call()
        assert err.value.type is ErrorType.invalid_input
        assert "not a UUID" in err.value.message
    assert edge.count(COLL) == len(POINTS)


def test_point_id_is_accepted_and_returned_as_given(edge: QdrantEdgeStore):
    pid = point_id(COLL, "sha256:abc", segment=3)
    edge.upsert(COLL, [Point(pid, {"image": QUERIES["image"]}, {"kind": "image"})])
    assert edge.search(COLL, "image", QUERIES["image"], limit=1)[0].id == pid


def test_an_incomplete_collection_folder_is_replaced(tmp_path: Path):
    store = QdrantEdgeStore(tmp_path)
    try:
        leftover = tmp_path / "collections" / "half"
        (leftover / "segments").mkdir(parents=True)  # a crash between create and clipsearch.json
        assert not store.collection_exists("half")
        store.ensure_collection("half", {"image": 4})
        assert store.count("half") == 0
    finally:
        store.close()


def test_closed_store_answers_unavailable(tmp_path: Path):
    store = QdrantEdgeStore(tmp_path)
    store.close()
    with pytest.raises(ClipsearchError) as err:
        store.count(COLL)
    assert err.value.type is ErrorType.unavailable


def test_optimize_keeps_results(edge: QdrantEdgeStore):
    before = edge.search(COLL, "caption", QUERIES["caption"], limit=10)
    assert isinstance(edge.optimize(COLL), bool)
    assert edge.search(COLL, "caption", QUERIES["caption"], limit=10) == before


def test_concurrent_reads_and_writes(edge: QdrantEdgeStore):
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(30):
                assert len(edge.search(COLL, "image", QUERIES["image"], limit=5)) == 5
                edge.count(COLL, {"tags": ["cat"]})
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    def writer() -> None:
        try:
            for i in range(30):
                edge.upsert(COLL, [Point(point_id(COLL, f"w{i}"), {"image": QUERIES["image"]})])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)] + [
        threading.Thread(target=writer)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert edge.count(COLL) == len(POINTS) + 30


# A search just before the upsert: its flush is deferred (the store is being searched), so only
# the WAL holds the points when the process dies.
SEARCH_WRITE_AND_CRASH = """
import os, sys
from pathlib import Path
from tests.service.store.test_congruence import COLL, DIMS, POINTS, QUERIES
from service.store.edge import QdrantEdgeStore
store = QdrantEdgeStore(Path(sys.argv[1]))
store.ensure_collection(COLL, DIMS)
store.search(COLL, "image", QUERIES["image"], limit=5)
store.upsert(COLL, POINTS)
print("deferred" if store._unflushed else "flushed", flush=True)
os._exit(0)
"""


def test_writes_whose_flush_was_deferred_survive_a_crash(tmp_path: Path):
    child = run_child(SEARCH_WRITE_AND_CRASH, tmp_path)
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "deferred"
    store = QdrantEdgeStore(tmp_path)
    try:
        assert store.count(COLL) == len(POINTS)  # more than one slice each
        assert store.retrieve(COLL, [POINTS[-1].id])[0].payload == POINTS[-1].payload
    finally:
        store.close()


def test_a_deferred_flush_runs_once_searches_pause(edge: QdrantEdgeStore, tmp_path: Path):
    edge.search(COLL, "image", QUERIES["image"], limit=5)
    extra = [Point(point_id(COLL, f"x{i}"), {"image": QUERIES["image"]}) for i in range(70)]
    edge.upsert(COLL, extra)
    assert COLL in edge._unflushed  # searched within FLUSH_QUIET_S: not flushed yet
    deadline = time.monotonic() + FLUSH_QUIET_S + 10
    while edge._unflushed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert edge._unflushed == {}
    assert edge.count(COLL) == len(POINTS) + 70
    edge.close()
    reopened = QdrantEdgeStore(tmp_path)
    try:
        assert reopened.count(COLL) == len(POINTS) + 70
    finally:
        reopened.close()


def test_a_bad_point_in_a_later_slice_writes_nothing(edge: QdrantEdgeStore):
    fresh = [Point(point_id(COLL, f"s{i}"), {"image": QUERIES["image"]}) for i in range(80)]
    fresh[-1] = Point(point_id(COLL, "s79"), {"image": [1.0, 0.0]})  # wrong dims
    assert len(fresh) > 2 * UPSERT_SLICE
    with pytest.raises(ClipsearchError) as err:
        edge.upsert(COLL, fresh)
    assert err.value.type is ErrorType.invalid_input
    assert edge.count(COLL) == len(POINTS)
    assert edge.retrieve(COLL, [fresh[0].id]) == []


def test_searches_run_between_the_slices_of_a_large_upsert(edge: QdrantEdgeStore):
    big = [
        Point(point_id(COLL, f"b{i}"), {"image": QUERIES["image"], "caption": [QUERIES["caption"]]})
        for i in range(40 * UPSERT_SLICE)
    ]
    counts: list[int] = []
    started = threading.Event()

    def writer() -> None:
        started.set()
        edge.upsert(COLL, big)

    thread = threading.Thread(target=writer)
    thread.start()
    started.wait()
    while thread.is_alive():
        counts.append(edge.count(COLL))
    thread.join()
    # Reads got in while the upsert was under way and saw some slices but not all of them.
    assert any(len(POINTS) < c < len(POINTS) + len(big) for c in counts), counts[:5]
    assert edge.count(COLL) == len(POINTS) + len(big)
