"""The writer on a real private Redis and a real embedded Qdrant Edge store."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from indexer.distributed.stream import WRITER_GROUP, PointStream
from indexer.distributed.writer import Writer, run_writer
from indexer.pipeline.thumbnails import thumbnail_path
from service.core.config import BrokerSettings, Settings
from service.core.domain import Point
from service.core.errors import ClipsearchError, ErrorType
from service.store.edge import QdrantEdgeStore
from tests.indexer.distributed.test_stream import items, points
from tests.indexer.distributed.writing import COLL, DIMS, TIMEOUT_S, progress, start
from tests.support import wait_until


@pytest.fixture()
def settings(redis_url: str) -> Settings:
    return Settings(
        collection=COLL,
        broker=BrokerSettings(url=redis_url, writer_block_ms=100, claim_idle_ms=60_000),
    )


def test_writes_acks_and_counts_after_the_write(
    stream: PointStream, store: QdrantEdgeStore, settings: Settings, writers: list[Writer]
) -> None:
    stream.jobs.init_job("job", total=31)
    for i in range(3):
        ps = points(10, start=10 * i)
        stream.append(COLL, "job", items(ps), ps)
    stream.append(COLL, "job", [], [], failed=[{"item": "bad.png", "reason": "corrupt"}])
    w = start(writers, store, settings, consumer="w1")
    wait_until(lambda: progress(stream)["done"] + progress(stream)["failed"] == 31, TIMEOUT_S)
    assert store.count(COLL) == 30
    assert (progress(stream)["done"], progress(stream)["failed"]) == (30, 1)
    assert stream.length(COLL) == 0
    assert stream.read_pending([COLL], WRITER_GROUP, "w1", count=10) == []
    wait_until(w.ready, TIMEOUT_S)
    w.close()
    assert not w.ready() and w.health().reason == "the writer is stopped"


def test_an_entry_delivered_twice_counts_once(
    stream: PointStream, store: QdrantEdgeStore, settings: Settings, writers: list[Writer]
) -> None:
    ps = points(10)
    # The same task ran twice (a redelivery): two entries with the same items and point ids.
    stream.append(COLL, "job", items(ps), ps)
    stream.append(COLL, "job", items(ps), ps)
    start(writers, store, settings, consumer="w1")
    wait_until(lambda: stream.length(COLL) == 0, TIMEOUT_S)
    assert progress(stream)["done"] == 10
    assert store.count(COLL) == 10


def test_a_second_writer_claims_what_a_dead_one_held(
    stream: PointStream, store: QdrantEdgeStore, settings: Settings, writers: list[Writer]
) -> None:
    settings = settings.model_copy(
        update={"broker": settings.broker.model_copy(update={"claim_idle_ms": 300})}
    )
    stream.jobs.init_job("job", total=40)
    for i in range(4):
        ps = points(10, start=10 * i)
        stream.append(COLL, "job", items(ps), ps)
    stream.ensure_group(COLL)
    held = stream.read([COLL], WRITER_GROUP, "dead", count=10, block_ms=100)
    assert len(held) == 4
    # The dead writer had written and counted its first entry, and died before acknowledging.
    store.upsert(COLL, held[0].points)
    stream.jobs.count("job", held[0].items)

    w = start(writers, store, settings, consumer="w2")
    wait_until(lambda: stream.length(COLL) == 0, TIMEOUT_S)
    assert progress(stream)["done"] == 40
    assert store.count(COLL) == 40
    assert stream.read_pending([COLL], WRITER_GROUP, "dead", count=10) == []
    assert w.ready()


class FlakyStore:
    """A real store whose first ``failures`` upserts fail as if Qdrant were down."""

    def __init__(self, inner: QdrantEdgeStore, failures: int, error: BaseException) -> None:
        self.inner, self.failures, self.error = inner, failures, error

    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise self.error
        self.inner.upsert(collection, points)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_an_unavailable_store_is_retried_and_shows_in_readiness(
    stream: PointStream, store: QdrantEdgeStore, settings: Settings, writers: list[Writer]
) -> None:
    ps = points(10)
    stream.append(COLL, "job", items(ps), ps)
    down = ClipsearchError(ErrorType.unavailable, "qdrant is down")
    # Fewer failures in a row than writer_max_failures: the writer keeps its entries.
    flaky = FlakyStore(store, failures=settings.broker.writer_max_failures - 2, error=down)
    w = start(writers, flaky, settings, consumer="w1")
    wait_until(lambda: "qdrant is down" in (w.health().reason or ""), TIMEOUT_S)
    assert not w.ready()
    assert progress(stream)["done"] == 0  # nothing counted before the write
    wait_until(lambda: progress(stream)["done"] == 10, TIMEOUT_S)
    assert store.count(COLL) == 10
    wait_until(w.ready, TIMEOUT_S)


def test_a_refused_entry_fails_alone(
    stream: PointStream, store: QdrantEdgeStore, settings: Settings, writers: list[Writer]
) -> None:
    good = points(10)
    bad = [Point(points(1, start=50)[0].id, {"image": [1.0, 0.0]}, {})]  # wrong dimension
    stream.append(COLL, "job", items(good), good)
    stream.append(COLL, "job", ["item-50"], bad)
    start(writers, store, settings, consumer="w1")
    wait_until(lambda: progress(stream)["failed"] == 1, TIMEOUT_S)
    wait_until(lambda: progress(stream)["done"] == 10, TIMEOUT_S)
    assert store.count(COLL) == 10
    (error,) = progress(stream)["errors"]
    assert error["item"] == "item-50" and "store refused" in error["reason"]


def test_thumbnails_in_an_entry_are_stored_under_the_writers_data_dir(
    stream: PointStream,
    store: QdrantEdgeStore,
    settings: Settings,
    writers: list[Writer],
    tmp_path: Path,
) -> None:
    """A Celery indexer sends a video's keyframes in the entry: the writer (the gateway, by
    default) stores them before the points that name them; a path that is no thumbnail path
    fails that entry alone, and nothing is written outside the thumbnails folder."""
    ps = points(2)
    paths = [thumbnail_path(COLL, p.id) for p in ps]
    stream.append(COLL, "job", items(ps), ps, thumbnails={paths[0]: b"jpeg-0", paths[1]: b"j1"})
    evil = points(1, start=40)
    stream.append(COLL, "job", items(evil), evil, thumbnails={"thumbnails/../../x.jpg": b"x"})
    data_dir = tmp_path / "gateway-data"
    start(writers, store, settings.model_copy(update={"data_dir": data_dir}), consumer="w1")
    wait_until(lambda: progress(stream)["done"] + progress(stream)["failed"] == 3, TIMEOUT_S)
    assert (data_dir / paths[0]).read_bytes() == b"jpeg-0"
    assert (data_dir / paths[1]).read_bytes() == b"j1"
    assert (progress(stream)["done"], progress(stream)["failed"]) == (2, 1)
    assert "not a thumbnail path" in progress(stream)["errors"][0]["reason"]
    assert store.count(COLL) == 2
    assert sorted(p.name for p in data_dir.rglob("*") if p.is_file()) == sorted(
        Path(x).name for x in paths
    )


class Crash(BaseException):
    """Not an Exception: nothing in the loop may swallow it."""


def test_a_crashed_loop_flips_readiness_and_loses_nothing(
    stream: PointStream, store: QdrantEdgeStore, settings: Settings, writers: list[Writer]
) -> None:
    ps = points(10)
    stream.append(COLL, "job", items(ps), ps)
    broken = FlakyStore(store, failures=1, error=Crash("bug"))
    w = start(writers, broken, settings, consumer="w1")
    wait_until(lambda: w.crashed is not None, TIMEOUT_S)
    assert not w.ready() and "crashed" in (w.health().reason or "")
    assert stream.length(COLL) == 1 and progress(stream)["done"] == 0
    # Its successor under the same name picks the entry up from its pending list at once.
    start(writers, store, settings, consumer="w1")
    wait_until(lambda: progress(stream)["done"] == 10, TIMEOUT_S)
    assert store.count(COLL) == 10 and stream.length(COLL) == 0


def test_run_writer_serves_until_stopped(
    stream: PointStream, settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"data_dir": tmp_path / "standalone"})
    store = QdrantEdgeStore(settings.data_dir)  # the gateway creates collections, not the writer
    store.ensure_collection(COLL, DIMS)  # type: ignore[arg-type]
    store.close()
    ps = points(10)
    stream.append(COLL, "job", items(ps), ps)
    stop = threading.Event()
    code: list[int] = []
    runner = threading.Thread(target=lambda: code.append(run_writer(settings, stop=stop)))
    runner.start()
    try:
        wait_until(lambda: progress(stream)["done"] == 10, TIMEOUT_S)
    finally:
        stop.set()
        runner.join(timeout=TIMEOUT_S)
    assert code == [0]
    reopened = QdrantEdgeStore(settings.data_dir)
    try:
        assert reopened.count(COLL) == 10
    finally:
        reopened.close()
    with pytest.raises(ClipsearchError):
        run_writer(Settings(broker=BrokerSettings()))


def test_a_collection_added_later_is_written_too(
    stream: PointStream, store: QdrantEdgeStore, settings: Settings, writers: list[Writer]
) -> None:
    w = start(writers, store, settings, consumer="w1")
    wait_until(w.ready, TIMEOUT_S)
    store.ensure_collection("media__next", DIMS)  # type: ignore[arg-type]
    ps = points(5, coll="media__next")
    stream.append("media__next", "job", items(ps), ps)
    w.add_collection("media__next")
    wait_until(lambda: progress(stream)["done"] == 5, TIMEOUT_S)
    assert store.count("media__next") == 5 and store.count(COLL) == 0
