"""Batching helpers of the ingestion paths: :func:`batched`, :func:`prefetch` (the next batches
load and embed while the caller writes this one) and :class:`WriteBuffer` (several batches'
points go to the store in one upsert). Nothing here knows which job queue is driving it.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

from service.core.domain import Point

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")
Outcome = TypeVar("Outcome")


def batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def chunked(items: Iterable[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in lists of ``size`` (the last may be shorter), read lazily: a stream of
    entries is never held whole."""
    source = iter(items)
    while chunk := list(itertools.islice(source, size)):
        yield chunk


def prefetch(
    items: Iterable[T],
    work: Callable[[T], R],
    *,
    depth: int,
    name: str,
    stop: Callable[[], bool] = lambda: False,
) -> Generator[tuple[T, R]]:
    """``(item, work(item))`` in input order, with ``work`` running on ``depth`` threads for
    the items after the one the caller holds: while a job writes batch N, batches N+1..N+depth
    are read and embedded (two in flight keep the encoder's decode and inference overlapped,
    where one would leave it idle during every write). ``work``'s exception is raised where
    its result would have been. Once ``stop()`` is true (a cancelled job) no more items start
    and the ones already started still come out; closing the generator early drops what was
    not started and waits for what was, so no thread outlives the job."""
    if depth < 1:
        raise ValueError(f"depth must be at least 1, not {depth}")
    source = iter(items)
    ahead: deque[tuple[T, Future[R]]] = deque()
    pool = ThreadPoolExecutor(max_workers=depth, thread_name_prefix=name)
    try:

        def fill() -> None:
            while len(ahead) < depth and not stop() and (item := next(source, _END)) is not _END:
                ahead.append((item, pool.submit(work, item)))  # type: ignore[arg-type]

        fill()
        while ahead:
            item, future = ahead.popleft()
            result = future.result()
            fill()
            yield item, result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


_END = object()


class WriteBuffer(Generic[Outcome]):
    """Points of consecutive batches, written in one upsert once ``max_points`` are held or the
    oldest has waited ``max_age_s``. Every upsert of the embedded store is followed by a flush to
    disk that holds the GIL, about the same for 64 points as for 512 (13 ms and 30 ms on this
    machine's disk), stalling the decode threads: written per 64-image batch, the flushes cost
    ingestion about a tenth of its rate (``make bench-ingest``). (While the store is searched
    that flush waits, ``service.store.edge``: the upsert itself goes in slices that let queries
    in between.) Each batch's outcomes come back
    from the call that wrote its points, so an item counts as done only once it is stored."""

    def __init__(
        self, write: Callable[[list[Point]], None], *, max_points: int, max_age_s: float
    ) -> None:
        self._write = write
        self._max_points = max_points
        self._max_age_s = max_age_s
        self._points: list[Point] = []
        self._outcomes: list[Outcome] = []
        self._since: float | None = None

    def add(self, points: Sequence[Point], outcomes: Sequence[Outcome]) -> list[Outcome]:
        """Hold one batch; the outcomes of every batch written by this call (maybe none)."""
        if self._since is None:
            self._since = time.monotonic()
        self._points += points
        self._outcomes += outcomes
        full = len(self._points) >= self._max_points
        if full or time.monotonic() - self._since >= self._max_age_s:
            return self.flush()
        return []

    def flush(self) -> list[Outcome]:
        """Write what is held; the outcomes of the batches it held."""
        points, outcomes = self._points, self._outcomes
        self._points, self._outcomes, self._since = [], [], None
        if points:
            # One id twice (a manifest naming one item twice, in two batches): the later wins,
            # as it did when each batch was its own upsert. Per bundle: during a model rollout
            # an item has one point per bundle (``service.store.versions``), all kept.
            self._write(list({(p.id, p.payload.get("model")): p for p in points}.values()))
        return outcomes
