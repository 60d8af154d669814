"""The dynamic batcher of one tower: lanes, batch formation, the core stage, slicing of bulk work.

Items of a lane wait in ``raw`` (images not decoded yet) and then ``ready``. Each lane has its
own preprocess threads (bulk ones at a lower OS priority) that decode at most
``2 x max_batch_size`` items ahead: the next batch is decoded while this one runs, and memory
stays bounded. The core thread is the only one that calls ONNX Runtime: it takes interactive
items whenever there are any, waits up to ``max_wait_ms`` for a batch to fill, and hands results
to the postprocess thread.

While search traffic is about (an interactive item within ``interactive_quiet_s``), bulk batches
are sliced: the scheduler learns the tower's cost rate (images, or padded tokens, per second) and
sizes a bulk batch to hold the accelerator no longer than ``bulk_slice_ms`` — by default half of a
single query's own inference time. So a query arriving behind a saturating reindex waits at most
one slice, which is what keeps its p99 within 2x of idle. With no search traffic, bulk batches
grow to ``max_batch_size`` for throughput. Interactive batches are never topped up with bulk.
Search traffic is seen across bundles (:class:`~service.encoder.units.SearchTraffic`, shared by a
registry's towers of one kind): a rebuild on bundle B is sliced while bundle A is searched.

Strict priority across towers: no bulk batch starts while another tower sharing the traffic (of
any bundle, text or image) holds interactive work (queued, preparing or running). A query to
bundle A thus waits behind at most the bulk slice another tower had already started, never behind
a new one, and B's bulk work does not contend with A's query for the cores. A tower that is hung,
crashed or closed holds nothing back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from service.core.config import EncoderSettings
from service.core.domain import Lane
from service.core.errors import ClipsearchError, ErrorType
from service.encoder.metrics import BundleMetrics
from service.encoder.requests import timed_out
from service.encoder.units import (
    LANES,
    Batch,
    Item,
    LaneQueue,
    SearchTraffic,
    as_error,
    lower_priority,
    pack,
    smooth,
)

log = logging.getLogger(__name__)

# How often a bulk batch held back by another tower's interactive work looks again.
GATE_POLL_S = 0.002

Forward = Callable[[list[Any], Lane], Any]  # a batch's inputs and its lane
Prepare = Callable[[Any], Any]


class TowerScheduler:
    def __init__(
        self,
        name: str,
        settings: EncoderSettings,
        metrics: BundleMetrics,
        *,
        forward: Forward,
        emit: Callable[[Batch], None],
        prepare: Prepare | None = None,
        prepare_threads: int = 0,
        token_cost: bool = False,
        traffic: SearchTraffic | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.metrics = metrics
        self._forward = forward
        self._emit = emit
        self._prepare = prepare
        self._token_cost = token_cost
        self.cond = threading.Condition(threading.RLock())
        self.lanes = {lane: LaneQueue() for lane in LANES}
        self.closed = False
        self.running_since: float | None = None
        self.failure: str | None = None  # last core failure, cleared by the next success
        self.hung = False
        self.crashed: str | None = None
        self._rate: float | None = None  # cost units per second, learned from every batch
        self._single_s: float | None = None  # inference time of a one-item batch, learned
        # When search traffic last came, to this tower or (shared) another bundle's of its kind.
        self._traffic = traffic or SearchTraffic()
        self._traffic.join(self)
        self._threads = [threading.Thread(target=self._core, name=f"{name}-core", daemon=True)]
        if prepare is not None:
            # Bulk items are decoded by two sets of threads. The low-priority set always works,
            # so a saturating ingestion never takes CPU from a search query (decoded on its
            # caller's thread). The normal-priority set works only while no query has come
            # for interactive_quiet_s: then nothing needs protecting, and decoding at idle
            # priority would leave the cores to the core stage alone (`make bench-ingest`:
            # 0.47x of the encoder's decode + inference before this set existed, 0.64x after).
            self._threads += [
                threading.Thread(
                    target=self._preprocess, args=(low,), name=f"{name}-pre-{i}", daemon=True
                )
                for i in range(max(1, prepare_threads))
                for low in (True, False)
            ]
        for thread in self._threads:
            thread.start()

    # -- admission (caller threads) --------------------------------------------------------

    def admit(self, lane: Lane, n: int) -> None:
        limit = self.settings.lane(lane).max_queue
        with self.cond:
            if self.closed or self.crashed:
                raise ClipsearchError(ErrorType.unavailable, f"the {self.name} encoder is down")
            q = self.lanes[lane]
            # An empty lane takes any request, so one large request is never refused forever.
            if q.admitted and q.admitted + n > limit:
                self.metrics.rejected.labels(self.name, lane, "full").inc(n)
                raise ClipsearchError(
                    ErrorType.overloaded,
                    f"the {self.name} {lane} queue is full ({q.admitted} items waiting; limit "
                    f"{limit}); retry later",
                    {"tower": self.name, "lane": lane, "queued": q.admitted, "max_queue": limit},
                    retry_after_s=1.0,
                )
            q.admitted += n

    def release(self, lane: Lane, n: int) -> None:
        with self.cond:
            self.lanes[lane].admitted -= n

    def enqueue(self, items: Sequence[Item], *, prepared: bool) -> None:
        if not items:
            return
        lane = items[0].request.lane
        with self.cond:
            if self.closed:
                self._drop(items, ClipsearchError(ErrorType.unavailable, "encoder closed"))
                return
            if lane == "interactive":
                self._traffic.note(self.name, time.monotonic())
            (self.lanes[lane].ready if prepared else self.lanes[lane].raw).extend(items)
            self.cond.notify_all()

    def depth(self, lane: str) -> int:
        return self.lanes[lane].admitted  # type: ignore[index]

    # -- preprocess threads ----------------------------------------------------------------

    def _next_raw(self, lane: Lane, *, quiet_only: bool = False) -> Item | None:
        quiet_s = self.settings.interactive_quiet_s
        if quiet_only and time.monotonic() - self._traffic.last(self.name) <= quiet_s:
            return None
        q = self.lanes[lane]
        ahead = 2 * self.settings.lane(lane).max_batch_size
        while q.raw and len(q.ready) + q.preparing < ahead:
            item = q.raw.popleft()
            if item.dead:
                self._drop([item], None)
                continue
            q.preparing += 1
            return item
        return None

    def _preprocess(self, low: bool) -> None:
        assert self._prepare is not None
        lane: Lane = "bulk"
        if low:
            lower_priority(self.settings.bulk_priority)
        # A normal-priority thread re-checks for quiet now and then: an ended burst of queries
        # sends no wake-up of its own.
        wait_s = None if low else max(0.05, self.settings.interactive_quiet_s / 2)
        while True:
            with self.cond:
                item = None
                while (
                    not self.closed and (item := self._next_raw(lane, quiet_only=not low)) is None
                ):
                    self.cond.wait(wait_s)
                if item is None:
                    return
            t0 = time.perf_counter()
            try:
                item.prepared = self._prepare(item.payload)
                item.length = getattr(item.prepared, "length", 1)  # tokens, for the budget
                error = None
            except ClipsearchError as exc:
                error = exc
            except Exception as exc:  # a decoder bug must fail this item, not the thread
                log.exception("preprocessing failed in %s", self.name)
                error = ClipsearchError(ErrorType.internal, f"preprocessing failed: {exc}")
            item.prep_s = time.perf_counter() - t0
            with self.cond:
                q = self.lanes[item.request.lane]
                q.preparing -= 1
                if error is not None:
                    q.admitted -= 1
                    item.request.set_item(item.index, error)  # fails alone
                else:
                    q.ready.append(item)
                self.cond.notify_all()

    # -- batch formation -------------------------------------------------------------------

    def _drop(self, items: Sequence[Item], error: ClipsearchError | None) -> None:
        """Drop items before inference; their requests end with ``error`` (cancelled: none)."""
        for item in items:
            request = item.request
            self.lanes[request.lane].admitted -= 1
            if error is not None and request.fail(error):
                reason = "timeout" if error.type is ErrorType.timeout else "closed"
            else:
                reason = "cancelled" if request.cancelled else "failed"
            self.metrics.rejected.labels(self.name, request.lane, reason).inc()

    def _live_head(self, q: LaneQueue, now: float) -> Item | None:
        while q.ready:
            item = q.ready[0]
            if item.dead:
                self._drop([q.ready.popleft()], None)
            elif item.request.expired(now):
                self._drop([q.ready.popleft()], timed_out(f"{self.name} request"))
            else:
                return item
        return None

    def _cost_cap(self, lane: Lane, now: float) -> float:
        s = self.settings
        cap = float(s.max_batch_tokens if self._token_cost else s.lane(lane).max_batch_size)
        if lane == "interactive" or now - self._traffic.last(self.name) > s.interactive_quiet_s:
            return cap  # no search traffic to protect: bulk batches as large as allowed
        if self._rate is None or (not s.bulk_slice_ms and self._single_s is None):
            return 1.0  # nothing learned yet: one item, and learn from it
        slice_s = s.bulk_slice_ms / 1000.0 if s.bulk_slice_ms else self._single_s / 2  # type: ignore[operator]
        return min(cap, self._rate * slice_s)

    def _pick(self, q: LaneQueue, lane: Lane, now: float) -> tuple[list[Item], int, bool]:
        limit = self.settings.lane(lane).max_batch_size
        return pack(q.ready, limit, self._cost_cap(lane, now), now)

    def _form(self) -> Batch | None:
        while True:
            if self.closed:
                return None
            now = time.monotonic()
            lane = next((ln for ln in LANES if self._live_head(self.lanes[ln], now)), None)
            if lane is None:
                self.cond.wait()
                continue
            if lane == "bulk" and self._traffic.interactive_elsewhere(self):
                # Strict priority: no bulk batch starts while another tower (of any bundle)
                # holds interactive work. Its core thread does not wake this one: look again
                # shortly (only while that lasts, a query's time).
                self.cond.wait(GATE_POLL_S)
                continue
            q = self.lanes[lane]
            picked, cost, full = self._pick(q, lane, now)
            waited = now - q.ready[0].request.submitted
            left = self.settings.lane(lane).max_wait_ms / 1000.0 - waited
            if not full and left > 0:
                self.cond.wait(left)  # wakes early for new items, or an interactive arrival
                continue
            chosen = set(map(id, picked))
            while chosen:  # picked items are in queue order; drop dead ones on the way
                item = q.ready.popleft()
                if id(item) in chosen:
                    chosen.discard(id(item))
                elif item.dead:
                    self._drop([item], None)
                else:
                    self._drop([item], timed_out(f"{self.name} request"))
            return Batch(self.name, lane, picked, cost)

    # -- core ------------------------------------------------------------------------------

    def _core(self) -> None:
        batch: Batch | None = None
        try:
            while True:
                with self.cond:
                    batch = self._form()
                    if batch is None:
                        return
                    batch.started = self.running_since = time.monotonic()
                self._run(batch)
                batch = None
        except BaseException as exc:  # a bug in the loop: never a silent wedge
            log.exception("the %s core stage crashed", self.name)
            with self.cond:
                self.crashed = f"the {self.name} core stage crashed: {exc!r}"
                self.metrics.failures.labels(self.name, "crash").inc()
                self.metrics.healthy.labels(self.name).set(0)
                error = ClipsearchError(ErrorType.unavailable, self.crashed)
                if batch is not None:
                    self._drop(batch.items, error)
                self._fail_all(error)
            # Not re-raised: the crash is logged, counted and reported by health(); a thread
            # exception would only be printed again.

    def _run(self, batch: Batch) -> None:
        inputs = [item.prepared for item in batch.items]
        try:
            batch.outputs = self._forward(inputs, batch.lane)
        except Exception as exc:
            self._isolate(batch, exc)
            return
        finally:
            batch.ended = time.monotonic()
            with self.cond:
                self.running_since = None
        self._learn(batch)
        self._healthy()
        self._emit(batch)

    def _isolate(self, batch: Batch, exc: Exception) -> None:
        """A failed batch: rerun its items one by one, so a bad item fails alone — and only a
        session that fails every item counts as broken."""
        good: list[Item] = []
        errors: list[tuple[Item, ClipsearchError]] = []
        for item in batch.items if len(batch.items) > 1 else []:
            try:
                outputs = self._forward([item.prepared], batch.lane)
                self._emit(Batch(self.name, batch.lane, [item], item.length, outputs=outputs))
                good.append(item)
            except Exception as one:
                errors.append((item, as_error(one)))
        if not good:
            errors = [(item, as_error(exc)) for item in batch.items]
            with self.cond:
                self.failure = f"inference failed in the {self.name} tower: {exc}"
                self.metrics.failures.labels(self.name, "error").inc()
                self.metrics.healthy.labels(self.name).set(0)
        else:
            self._healthy()
        with self.cond:
            for item, error in errors:
                self.lanes[batch.lane].admitted -= 1
                item.request.set_item(item.index, error)

    def _learn(self, batch: Batch) -> None:
        elapsed = batch.ended - batch.started
        if elapsed <= 0:
            return
        sample = max(batch.cost, 1) / elapsed
        self._rate = smooth(self._rate, sample)
        if len(batch.items) == 1:
            self._single_s = smooth(self._single_s, elapsed)

    def _healthy(self) -> None:
        if self.failure is None and not self.hung:
            return
        with self.cond:
            if self.failure is not None:
                log.warning("the %s tower works again after: %s", self.name, self.failure)
            self.failure = None
            self.hung = False
            if self.crashed is None:
                self.metrics.healthy.labels(self.name).set(1)

    # -- lifecycle -------------------------------------------------------------------------

    def check_hang(self, now: float) -> None:
        with self.cond:
            since = self.running_since
            if since is None or self.hung or now - since <= self.settings.hang_timeout_s:
                return
            self.hung = True
        log.error("the %s core stage has run one batch for %.1f s", self.name, now - since)
        self.metrics.failures.labels(self.name, "hang").inc()
        self.metrics.healthy.labels(self.name).set(0)

    def problem(self, now: float) -> str | None:
        if self.crashed:
            return self.crashed
        since = self.running_since
        if self.hung and since is not None:
            return (
                f"the {self.name} core stage has been stuck in one batch for "
                f"{now - since:.1f} s (hang_timeout_s={self.settings.hang_timeout_s})"
            )
        return self.failure

    def interactive_pending(self) -> bool:
        """Whether interactive items are queued, preparing or in a batch here (a tower that is
        down, hung or closed holds none that anything should wait for). Lock-free reads."""
        if self.closed or self.crashed or self.hung:
            return False
        return self.lanes["interactive"].admitted > 0

    def idle(self) -> bool:
        with self.cond:
            return self.running_since is None and not any(
                q.ready or q.raw or q.preparing for q in self.lanes.values()
            )

    def _fail_all(self, error: ClipsearchError) -> None:
        for q in self.lanes.values():
            self._drop([*q.raw, *q.ready], error)
            q.raw.clear()
            q.ready.clear()

    def close(self, timeout: float = 5.0) -> None:
        self._traffic.leave(self)
        with self.cond:
            self.closed = True
            self._fail_all(ClipsearchError(ErrorType.unavailable, "the encoder is shutting down"))
            self.cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)
