"""Python's cyclic garbage collector in a long-running clipsearch process (issue 16).

A full (generation 2) collection traverses every object the collector tracks and holds the GIL
throughout. A started gateway tracks ~134k objects that it keeps for its whole life (FastAPI's
routes, pydantic's validators, the loaded modules; ``make run`` logs the count it freezes):
under the embeddings load test (``python -m loadtests.loadtest embeddings --service-env
CLIPSEARCH_STARTUP__GC_FREEZE=false``, its ``gc.json``) 7-8 full collections a minute, the
longest of them 100-250 ms, held every request in flight — the tail of the latency.
:func:`freeze_started` (a collection, then ``gc.freeze()``, as the ``gc`` documentation advises
once a server has started) moves those objects to the permanent generation, which collections
skip: full collections then took 25 ms at most (the same run with ``=true``). Objects made later
are collected as before. A cycle among frozen objects is never freed, so a bundle dropped at run
time thaws them once (:func:`refreeze`): its objects are collected, the rest frozen again.

:data:`PAUSES` measures every collection's pause by generation (``clipsearch_gc_pause_seconds``
and ``clipsearch_gc_frozen_objects`` on each process's ``/metrics``). ``gc.callbacks`` belongs
to the process, so the measurement is one object per process, registered in every registry
that shows it. The callback takes no lock: it runs inside a collection, which any allocation
can start while a lock is held, and it replaces one tuple per generation that a scrape reads
whole.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class GcPauses(Collector):
    """Each collection's pause, by generation, as a Prometheus histogram."""

    def __init__(self) -> None:
        # generation -> (count per bucket, the last one above every bound; sum of the pauses)
        self._by_generation: dict[int, tuple[tuple[int, ...], float]] = {}
        self._started = 0.0
        self._lock = threading.Lock()  # install() only, never in the callback

    def install(self) -> GcPauses:
        """Start measuring (once per process; later calls do nothing)."""
        with self._lock:
            if self._callback not in gc.callbacks:  # bound methods of one object compare equal
                gc.callbacks.append(self._callback)
        return self

    def expose(self, registry: CollectorRegistry) -> None:
        """Measure, and show the figures in ``registry`` (once; again is a no-op)."""
        self.install()
        with contextlib.suppress(ValueError):  # already there
            registry.register(self)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        if not self._started:
            return
        pause = time.perf_counter() - self._started
        self._started = 0.0
        generation = int(info["generation"])
        counts, total = self._by_generation.get(generation, ((0,) * (len(BUCKETS) + 1), 0.0))
        slot = bisect.bisect_left(BUCKETS, pause)
        counts = (*counts[:slot], counts[slot] + 1, *counts[slot + 1 :])
        self._by_generation[generation] = (counts, total + pause)

    def snapshot(self) -> dict[int, tuple[tuple[int, ...], float]]:
        """Per generation: the count of pauses per bucket (the last: above every bound) and
        their sum in seconds."""
        return dict(self._by_generation)

    def collect(self) -> Iterator[Metric]:
        pauses = HistogramMetricFamily(
            "clipsearch_gc_pause_seconds",
            "Pauses of Python's cyclic garbage collector (the GIL is held) by generation",
            labels=["generation"],
        )
        for generation, (counts, total) in sorted(self.snapshot().items()):
            cumulative, buckets = 0, []
            for bound, count in zip((*map(str, BUCKETS), "+Inf"), counts, strict=True):
                cumulative += count
                buckets.append((bound, float(cumulative)))
            pauses.add_metric([str(generation)], buckets, total)
        yield pauses
        yield GaugeMetricFamily(
            "clipsearch_gc_frozen_objects",
            "Objects moved out of the collector's scans once the process had started",
            value=float(gc.get_freeze_count()),
        )


PAUSES = GcPauses()


def freeze_started(what: str) -> int:
    """Once ``what`` (a process) has started: collect, then freeze every object left, as they
    live as long as the process. Returns how many are frozen."""
    began = time.perf_counter()
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info(
        "%s: %d objects moved out of the garbage collector's scans (%.0f ms)",
        what,
        frozen,
        (time.perf_counter() - began) * 1e3,
    )
    return frozen


def refreeze(why: str) -> bool:
    """After something frozen was let go (a dropped bundle): thaw, collect, freeze again, so it
    is freed. Nothing happens where the process froze nothing. True if it ran."""
    if not gc.get_freeze_count():
        return False
    gc.unfreeze()
    freeze_started(f"after {why}")
    return True
