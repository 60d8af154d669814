"""Writers that hand over, on a real private Redis and real embedded Qdrant Edge stores: a
writer that cannot write stops touching its entries so a healthy one claims them, dead
consumers leave the group, and an entry that keeps failing goes to the dead letters."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from indexer.distributed.stream import WRITER_GROUP, PointStream, dead_letter_key, stream_key
from indexer.distributed.writer import Writer
from indexer.jobs.celery_queue import job_state
from service.core.config import BrokerSettings, Settings
from service.core.domain import Point
from service.core.errors import ClipsearchError, ErrorType
from service.store.edge import QdrantEdgeStore
from tests.indexer.distributed.test_stream import items, points
from tests.indexer.distributed.writing import COLL, DIMS, TIMEOUT_S, progress, start
from tests.redis_server import fresh_stream
from tests.support import wait_until


def make_settings(redis_url: str, **broker: Any) -> Settings:
    base = {"url": redis_url, "writer_block_ms": 100, "claim_idle_ms": 500}
    return Settings(collection=COLL, broker=BrokerSettings(**{**base, **broker}))


@pytest.fixture()
def stream(redis_url: str) -> Iterator[PointStream]:
    with fresh_stream(make_settings(redis_url)) as s:
        yield s


def pending_of(stream: PointStream, consumer: str) -> int:
    reply: Any = stream.redis.xpending_range(
        stream_key(COLL), WRITER_GROUP, min="-", max="+", count=1000, consumername=consumer
    )
    return len(reply)


def consumers(stream: PointStream) -> set[str]:
    reply: Any = stream.redis.xinfo_consumers(stream_key(COLL), WRITER_GROUP)
    return {c["name"].decode() for c in reply}


def test_a_writer_on_another_data_dir_stops_claiming_and_its_entries_pass_over(
    redis_url: str,
    stream: PointStream,
    store: QdrantEdgeStore,
    writers: list[Writer],
    tmp_path: Path,
) -> None:
    settings = make_settings(redis_url, writer_max_failures=3)
    stream.jobs.init_job("job", total=30)
    for i in range(3):
        ps = points(10, start=10 * i)
        stream.append(COLL, "job", items(ps), ps)
    # Started with a data dir of its own: its store has no collection to write to.
    elsewhere = QdrantEdgeStore(tmp_path / "elsewhere")
    try:
        sick = start(writers, elsewhere, settings, consumer="sick")
        wait_until(lambda: "stopped claiming" in (sick.health().reason or ""), TIMEOUT_S)
        assert not sick.ready() and pending_of(stream, "sick") == 3
        assert progress(stream)["done"] == 0
        good = start(writers, store, settings, consumer="good")
        wait_until(lambda: progress(stream)["done"] == 30, TIMEOUT_S)
        assert store.count(COLL) == 30 and stream.length(COLL) == 0
        assert pending_of(stream, "sick") == 0
        assert good.ready() and good.metrics.claimed._value.get() == 3
        # The sick one keeps saying why, and still does not touch the stream.
        wait_until(lambda: "data dir" in (sick.health().reason or ""), TIMEOUT_S)
        assert not sick.ready()
        assert sick.metrics.points_upserted._value.get() == 0
        assert good.metrics.points_upserted._value.get() == store.count(COLL)
    finally:
        for w in writers:
            w.close()
        writers.clear()
        elsewhere.close()


def test_a_writer_whose_store_comes_back_writes_again(
    redis_url: str, stream: PointStream, store: QdrantEdgeStore, writers: list[Writer]
) -> None:
    settings = make_settings(redis_url, writer_max_failures=2, claim_idle_ms=200)
    store.drop_collection(COLL)  # as if the gateway had not created it yet
    ps = points(10)
    stream.append(COLL, "job", items(ps), ps)
    w = start(writers, store, settings, consumer="w1")
    wait_until(lambda: "stopped claiming" in (w.health().reason or ""), TIMEOUT_S)
    store.ensure_collection(COLL, DIMS)  # type: ignore[arg-type]
    wait_until(lambda: progress(stream)["done"] == 10, TIMEOUT_S)
    wait_until(w.ready, TIMEOUT_S)
    assert store.count(COLL) == 10


def test_dead_consumers_leave_the_group_once_their_entries_are_claimed(
    redis_url: str, stream: PointStream, store: QdrantEdgeStore, writers: list[Writer]
) -> None:
    settings = make_settings(redis_url, claim_idle_ms=300, writer_forget_idle_ms=600)
    stream.jobs.init_job("job", total=20)
    stream.ensure_group(COLL)
    ps = points(10)
    stream.append(COLL, "job", items(ps), ps)
    # "dead" read an entry and died holding it; "gone" read nothing and died.
    assert len(stream.read([COLL], WRITER_GROUP, "dead", count=10, block_ms=100)) == 1
    stream.redis.xgroup_createconsumer(stream_key(COLL), WRITER_GROUP, "gone")
    more = points(10, start=10)
    stream.append(COLL, "job", items(more), more)
    start(writers, store, settings, consumer="live")
    wait_until(lambda: progress(stream)["done"] == 20, TIMEOUT_S)
    wait_until(lambda: consumers(stream) == {"live"}, TIMEOUT_S)
    assert store.count(COLL) == 20 and stream.length(COLL) == 0


class PoisonStore:
    """A real store that raises (as if unavailable) on every upsert holding ``poison``."""

    def __init__(self, inner: QdrantEdgeStore, poison: str) -> None:
        self.inner, self.poison = inner, poison

    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        if any(p.id == self.poison for p in points):
            raise ClipsearchError(ErrorType.unavailable, "the shard holding it is read-only")
        self.inner.upsert(collection, points)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_an_entry_that_keeps_failing_goes_to_the_dead_letters_and_the_job_completes(
    redis_url: str, stream: PointStream, store: QdrantEdgeStore, writers: list[Writer]
) -> None:
    settings = make_settings(
        redis_url, writer_max_failures=2, writer_max_deliveries=3, claim_idle_ms=200
    )
    stream.jobs.init_job("job", total=11)
    good = points(10)
    bad = points(1, start=50)
    stream.append(COLL, "job", items(good), good)
    stream.append(COLL, "job", items(bad), bad)
    w = start(writers, PoisonStore(store, bad[0].id), settings, consumer="w1")
    wait_until(lambda: progress(stream)["done"] + progress(stream)["failed"] == 11, TIMEOUT_S)
    live = progress(stream)
    assert (live["done"], live["failed"]) == (10, 1)
    (error,) = live["errors"]
    assert error["item"] == "item-50"
    assert "deliveries" in error["reason"] and "read-only" in error["reason"]
    assert stream.length(COLL) == 0 and store.count(COLL) == 10
    (letter,) = stream.dead_letters(COLL)
    assert letter["items"] == '["item-50"]' and int(letter["deliveries"]) > 3
    assert stream.redis.xlen(dead_letter_key(COLL)) == 1
    record = {"id": "j", "state": "submitted", "run": None}
    assert job_state(record, live)["state"] == "completed"
    assert w.metrics.entries.labels("dead_letter")._value.get() == 1
    assert w.metrics.points_upserted._value.get() == store.count(COLL)


def test_a_writer_whose_probe_port_is_taken_refuses_to_start(
    redis_url: str, stream: PointStream, tmp_path: Path
) -> None:
    import socket

    from indexer.distributed.writer import run_writer

    settings = make_settings(redis_url).model_copy(update={"data_dir": tmp_path / "w"})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        with pytest.raises(ClipsearchError) as caught:
            run_writer(settings, probe_port=port)
    assert caught.value.type is ErrorType.invalid_input
    assert f"127.0.0.1:{port}" in caught.value.message and "--probe-port" in caught.value.message


def test_a_dead_letter_bound_below_the_hand_over_bound_is_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"writer_max_deliveries \(3\) must exceed"):
        BrokerSettings(writer_max_failures=3, writer_max_deliveries=3)
    assert BrokerSettings(writer_max_failures=3, writer_max_deliveries=4).writer_max_deliveries == 4
