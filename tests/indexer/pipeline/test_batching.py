"""``indexer.pipeline.batching``: batches loaded ahead of the write (prefetch), grouped writes."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from indexer.pipeline.batching import WriteBuffer, prefetch
from service.core.domain import Point


class Work:
    """Squares numbers; records how many calls ran at once; can be held at a gate."""

    def __init__(self, *, fail_on: int | None = None) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.started: list[int] = []
        self.most = 0
        self._now = 0
        self._lock = threading.Lock()
        self.fail_on = fail_on

    def __call__(self, n: int) -> int:
        with self._lock:
            self.started.append(n)
            self._now += 1
            self.most = max(self.most, self._now)
        try:
            self.gate.wait(10)
            time.sleep(0.01)  # long enough for the others to start, if they may
            if n == self.fail_on:
                raise ValueError(f"item {n} is bad")
            return n * n
        finally:
            with self._lock:
                self._now -= 1


def test_results_come_in_input_order_with_depth_calls_at_once() -> None:
    work = Work()
    out = list(prefetch(range(10), work, depth=3, name="t"))
    assert out == [(n, n * n) for n in range(10)]
    assert work.most == 3


def test_depth_bounds_the_work_ahead_of_the_consumer() -> None:
    work = Work()
    work.gate.clear()
    ahead = prefetch(range(10), work, depth=2, name="t")
    first = threading.Thread(target=lambda: next(ahead))
    first.start()
    time.sleep(0.1)
    assert sorted(work.started) == [0, 1]  # nothing past the depth while the consumer waits
    work.gate.set()
    first.join(5)
    assert next(ahead) == (1, 1)
    ahead.close()


def test_an_error_is_raised_where_its_result_would_be() -> None:
    ahead = prefetch(range(5), Work(fail_on=2), depth=2, name="t")
    assert [next(ahead), next(ahead)] == [(0, 0), (1, 1)]
    with pytest.raises(ValueError, match="item 2 is bad"):
        next(ahead)


def test_stop_starts_nothing_more_and_drains_what_started() -> None:
    work = Work()
    stopped = threading.Event()
    ahead = prefetch(range(10), work, depth=2, name="t", stop=stopped.is_set)
    assert next(ahead) == (0, 0)  # items 1 and 2 are in flight now
    stopped.set()
    assert list(ahead) == [(1, 1), (2, 4)]
    assert sorted(work.started) == [0, 1, 2]


def test_closing_early_waits_for_running_work_and_drops_the_rest() -> None:
    work = Work()
    ahead = prefetch(range(100), work, depth=4, name="t")
    next(ahead)
    ahead.close()
    started = len(work.started)
    time.sleep(0.1)
    assert len(work.started) == started <= 5  # nothing starts after the close returned
    assert work._now == 0  # and nothing is still running


def test_depth_must_be_positive() -> None:
    with pytest.raises(ValueError, match="depth"):
        list(prefetch([1], Work(), depth=0, name="t"))


def _points(n: int) -> list[Point]:
    return [Point(uuid.uuid4().hex, {}, {}) for _ in range(n)]


def test_write_buffer_writes_when_full_and_returns_what_it_wrote() -> None:
    written: list[int] = []
    buffer: WriteBuffer[str] = WriteBuffer(
        lambda points: written.append(len(points)), max_points=5, max_age_s=60
    )
    assert buffer.add(_points(3), ["a"]) == []
    assert written == []
    assert buffer.add(_points(3), ["b"]) == ["a", "b"]  # 6 >= 5: both batches in one write
    assert written == [6]
    assert buffer.add(_points(1), ["c"]) == []
    assert buffer.flush() == ["c"]
    assert buffer.flush() == []  # nothing held: no write
    assert written == [6, 1]


def test_write_buffer_writes_a_batch_that_waited_long_enough() -> None:
    written: list[int] = []
    buffer: WriteBuffer[str] = WriteBuffer(
        lambda points: written.append(len(points)), max_points=1000, max_age_s=0.05
    )
    assert buffer.add(_points(2), ["a"]) == []
    time.sleep(0.06)
    assert buffer.add(_points(2), ["b"]) == ["a", "b"]
    assert written == [4]


def test_write_buffer_counts_batches_without_points() -> None:
    """A batch whose entries all failed has outcomes and no points: they come back with the
    next write, never before what was held ahead of them."""
    written: list[Any] = []
    buffer: WriteBuffer[str] = WriteBuffer(written.append, max_points=2, max_age_s=60)
    assert buffer.add([], ["failed"]) == []
    assert buffer.add(_points(2), ["ok"]) == ["failed", "ok"]
    assert buffer.add([], ["alone"]) == []
    assert buffer.flush() == ["alone"]
    assert len(written) == 1


def test_write_buffer_keeps_the_later_of_two_points_with_one_id() -> None:
    written: list[list[Point]] = []
    buffer: WriteBuffer[str] = WriteBuffer(written.append, max_points=100, max_age_s=60)
    buffer.add([Point("a", {}, {"v": 1}), Point("b", {}, {})], ["x"])
    buffer.add([Point("a", {}, {"v": 2})], ["y"])
    assert buffer.flush() == ["x", "y"]
    [points] = written
    assert [(p.id, p.payload.get("v")) for p in points] == [("a", 2), ("b", None)]
