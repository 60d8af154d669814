"""The points stream and job progress on a real, private Redis."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest

from indexer.distributed.stream import (
    WRITER_GROUP,
    PointStream,
    decode_entry,
    encode_entry,
    stream_key,
)
from service.core.config import BrokerSettings
from service.core.domain import Point, point_id
from service.core.errors import ClipsearchError, ErrorType
from tests.support import wait_until

COLL = "media"


@pytest.fixture()
def stream(redis_url: str) -> Iterator[PointStream]:
    s = PointStream(redis_url, BrokerSettings(url=redis_url, stream_max_len=3))
    s.redis.flushdb()
    yield s
    s.close()


def points(n: int, start: int = 0, coll: str = COLL) -> list[Point]:
    rng = np.random.default_rng(start)
    return [
        Point(
            id=point_id(coll, f"item-{i}"),
            vectors={
                "image": rng.standard_normal(8).astype(np.float32).tolist(),
                "description": rng.standard_normal(4).astype(np.float32).tolist(),
            },
            payload={"media_id": f"item-{i}", "caption": "café ☕", "tags": ["a"], "n": i},
        )
        for i in range(start, start + n)
    ]


def items(ps: list[Point]) -> list[str]:
    return [p.payload["media_id"] for p in ps]


def test_entry_encoding_round_trips_vectors_payload_and_multivectors() -> None:
    # A multivector (long captions, MaxSim) travels with its shape.
    multi = {"caption": [[1.0, 2.0], [3.0, 4.0]]}
    ps = [*points(3), Point(point_id(COLL, "multi"), multi, {})]  # type: ignore[arg-type]
    failed = [{"item": "bad.png", "reason": "corrupt"}]
    fields = encode_entry("job1", ["a", "b"], ps, failed)
    # float32 bytes, not JSON text: 8 + 4 floats a point, 4 for the multivector
    assert len(fields["vectors"]) == 4 * (3 * 12 + 4)
    entry = decode_entry(COLL, b"1-0", {k.encode(): v for k, v in fields.items()})
    assert entry.problem is None
    assert (entry.job_id, entry.items, entry.failed) == ("job1", ["a", "b"], failed)
    assert entry.points == ps  # the vectors were float32 already: exact


def test_unreadable_entries_are_reported_not_raised() -> None:
    fields = {k.encode(): v for k, v in encode_entry("j", ["a"], points(1), []).items()}
    fields[b"vectors"] = fields[b"vectors"][:-4]
    entry = decode_entry(COLL, b"1-0", fields)
    assert entry.items == ["a"] and entry.points == []
    assert entry.problem and "unreadable points" in entry.problem
    assert decode_entry(COLL, b"2-0", None).problem == "entry no longer in stream"


def test_thumbnails_travel_with_the_entry_and_a_damaged_index_is_reported() -> None:
    thumbs = {"thumbnails/media/a.jpg": b"\xff\xd8jpeg-a", "thumbnails/media/b.jpg": b""}
    fields = {
        k.encode(): v for k, v in encode_entry("j", ["a"], points(1), [], thumbnails=thumbs).items()
    }
    entry = decode_entry(COLL, b"1-0", fields)
    assert entry.problem is None and entry.thumbnails == thumbs
    assert decode_entry(COLL, b"1-1", {**fields, b"thumb_data": b"x"}).problem  # bytes over
    # An entry without thumbnails (every image batch) carries no such fields at all.
    plain = encode_entry("j", ["a"], points(1), [])
    assert (
        "thumbs" not in plain
        and decode_entry(COLL, b"1-2", {k.encode(): v for k, v in plain.items()}).thumbnails == {}
    )


def test_append_read_ack_round_trip(stream: PointStream) -> None:
    stream.ensure_group(COLL)
    stream.ensure_group(COLL)  # idempotent
    first, second = points(2), points(2, start=2)
    stream.append(COLL, "job1", items(first), first)
    stream.append(COLL, "job1", items(second), second, failed=[{"item": "x", "reason": "bad"}])
    assert stream.length(COLL) == 2

    got = stream.read([COLL], WRITER_GROUP, "w1", count=10, block_ms=100)
    assert [e.points for e in got] == [first, second]
    assert got[1].failed == [{"item": "x", "reason": "bad"}]
    assert stream.read([COLL], WRITER_GROUP, "w1", count=10, block_ms=50) == []

    stream.ack(COLL, WRITER_GROUP, [got[0].id])
    assert stream.length(COLL) == 1  # acknowledged entries are deleted: XLEN is the backlog
    pending = stream.read_pending([COLL], WRITER_GROUP, "w1", count=10)
    assert [e.id for e in pending] == [got[1].id]


def test_autoclaim_takes_over_what_a_dead_consumer_held(stream: PointStream) -> None:
    stream.ensure_group(COLL)
    ps = points(3)
    stream.append(COLL, "job1", items(ps), ps)
    held = stream.read([COLL], WRITER_GROUP, "dead", count=10, block_ms=100)
    assert len(held) == 1
    assert stream.autoclaim(COLL, WRITER_GROUP, "w2", min_idle_ms=60_000) == []
    wait_until(lambda: bool(stream.autoclaim(COLL, WRITER_GROUP, "w2", min_idle_ms=20)))
    assert stream.read_pending([COLL], WRITER_GROUP, "dead", count=10) == []
    mine = stream.read_pending([COLL], WRITER_GROUP, "w2", count=10)
    assert [e.points for e in mine] == [ps]
    stream.complete(WRITER_GROUP, mine)
    assert stream.length(COLL) == 0
    assert stream.jobs.get("job1")["done"] == 3  # type: ignore[index]


def test_a_full_stream_makes_append_wait_then_time_out(stream: PointStream) -> None:
    stream.ensure_group(COLL)
    for i in range(3):
        stream.append(COLL, "job1", [f"i{i}"], points(1, start=i))
    with pytest.raises(ClipsearchError) as caught:
        stream.append(COLL, "job1", ["late"], points(1, start=9), timeout_s=0.3)
    assert caught.value.type is ErrorType.overloaded
    assert "stayed full" in caught.value.message and "writer" in caught.value.message
    assert stream.length(COLL) == 3  # the bound holds exactly
    assert stream.jobs.get("job1")["waiting_for_writer"] is True  # type: ignore[index]
    with pytest.raises(ClipsearchError):
        stream.wait_for_room(COLL, "job1", timeout_s=0.1)


def test_a_waiting_append_goes_through_once_the_writer_makes_room(stream: PointStream) -> None:
    stream.ensure_group(COLL)
    for i in range(3):
        stream.append(COLL, "job1", [f"i{i}"], points(1, start=i))
    result: list[str] = []
    producer = threading.Thread(
        target=lambda: result.append(stream.append(COLL, "job1", ["late"], points(1, 9))),
        daemon=True,
    )
    producer.start()
    wait_until(lambda: bool((stream.jobs.get("job1") or {}).get("waiting_for_writer")))
    drained = stream.read([COLL], WRITER_GROUP, "w1", count=1, block_ms=100)
    stream.complete(WRITER_GROUP, drained)
    producer.join(timeout=30)
    assert result and stream.length(COLL) == 3


def test_progress_counts_each_item_once(stream: PointStream) -> None:
    jobs = stream.jobs
    jobs.init_job("j", total=4)
    assert jobs.count("j", ["a", "b"]) == (2, 0)
    assert jobs.count("j", ["a", "b"]) == (0, 0)  # redelivered: nothing moves
    assert jobs.count("j", [], [{"item": "c", "reason": "corrupt"}]) == (0, 1)
    assert jobs.count("j", [], [{"item": "c", "reason": "corrupt"}]) == (0, 0)
    assert jobs.count("j", [], [{"item": "a", "reason": "late"}]) == (0, 0)  # done stays done
    status = jobs.get("j")
    assert status is not None
    assert (status["total"], status["done"], status["failed"]) == (4, 2, 1)
    assert status["errors"] == [{"item": "c", "reason": "corrupt"}]
    assert jobs.count("j", ["c"]) == (1, -1)  # a retry that works moves it to done
    status = jobs.get("j")
    assert status and (status["done"], status["failed"], status["errors"]) == (3, 0, [])
    jobs.init_job("j", total=4)  # again: the counts stay
    assert jobs.get("j")["done"] == 3  # type: ignore[index]
    assert jobs.get("nope") is None


def test_errors_kept_are_capped(redis_url: str) -> None:
    s = PointStream(redis_url, BrokerSettings(url=redis_url, max_errors_kept=2))
    try:
        s.jobs.delete("cap")
        s.jobs.count("cap", [], [{"item": f"x{i}", "reason": "r"} for i in range(5)])
        status = s.jobs.get("cap")
        assert status and status["failed"] == 5 and len(status["errors"]) == 2
    finally:
        s.close()


def test_complete_counts_refused_entries_as_failed(stream: PointStream) -> None:
    stream.ensure_group(COLL)
    a, b = points(2), points(2, start=2)
    stream.append(COLL, "j", items(a), a, failed=[{"item": "z", "reason": "corrupt"}])
    stream.append(COLL, "j", items(b), b)
    got = stream.read([COLL], WRITER_GROUP, "w", count=10, block_ms=100)
    stream.complete(WRITER_GROUP, got, refused={got[1].id: "the store refused it: dims"})
    status = stream.jobs.get("j")
    assert status and (status["done"], status["failed"]) == (2, 3)
    assert {"item": "item-2", "reason": "the store refused it: dims"} in status["errors"]
    assert stream.length(COLL) == 0
    assert stream.redis.exists(stream_key(COLL))
