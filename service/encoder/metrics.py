"""Prometheus metrics of the dynamic batchers, on a registry the owner exposes.

The gateway serves them on its ``/metrics`` beside its own; the worker on its metrics port. One
registry per set of served bundles (no module-level state), so tests and several engines in one
process never collide. Every series carries a ``bundle`` label (``name@version``): each bundle's
batcher writes through its own :class:`BundleMetrics` view, and dropping a bundle removes its
series.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

STAGES = ("queue", "preprocess", "inference", "postprocess")
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
_TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_RATE_WINDOW_S = 10.0


class _Throughput:
    """Items per second over the last ``_RATE_WINDOW_S`` (for dashboards without PromQL)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: deque[tuple[float, int]] = deque()

    def add(self, n: int) -> None:
        now = time.monotonic()
        with self._lock:
            self._events.append((now, n))
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._events and self._events[0][0] < now - _RATE_WINDOW_S:
            self._events.popleft()

    def rate(self) -> float:
        now = time.monotonic()
        with self._lock:
            self._trim(now)
            return sum(n for _, n in self._events) / _RATE_WINDOW_S


class EncoderMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge(
            "clipsearch_encoder_queue_depth",
            "Items admitted and not finished, per tower and lane",
            ["bundle", "tower", "lane"],
            registry=r,
        )
        self.batch_size = Histogram(
            "clipsearch_encoder_batch_size",
            "Items per inference batch",
            ["bundle", "tower", "lane"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.batch_tokens = Histogram(
            "clipsearch_encoder_batch_tokens",
            "Padded tokens per text batch (items x longest item)",
            ["bundle", "lane"],
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "clipsearch_encoder_stage_seconds",
            "Time per item in each stage: queue, preprocess, inference, postprocess",
            ["bundle", "tower", "lane", "stage"],
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.rejected = Counter(
            "clipsearch_encoder_rejected_total",
            "Items refused or dropped before inference (full lane, cancelled, deadline passed)",
            ["bundle", "tower", "lane", "reason"],
            registry=r,
        )
        self.items = Counter(
            "clipsearch_encoder_items_total",
            "Items embedded (rate() of this is the throughput)",
            ["bundle", "tower", "lane"],
            registry=r,
        )
        self.items_per_second = Gauge(
            "clipsearch_encoder_items_per_second",
            f"Items embedded per second over the last {_RATE_WINDOW_S:.0f} s",
            ["bundle", "tower"],
            registry=r,
        )
        self.provider = Gauge(
            "clipsearch_encoder_provider_info",
            "The execution provider each tower runs on (value 1)",
            ["bundle", "tower", "provider"],
            registry=r,
        )
        self.healthy = Gauge(
            "clipsearch_encoder_healthy",
            "1 while the tower's core stage works; 0 after a failure or while it hangs",
            ["bundle", "tower"],
            registry=r,
        )
        self.failures = Counter(
            "clipsearch_encoder_failures_total",
            "Core-stage failures: error (inference raised), hang (watchdog), crash (loop died)",
            ["bundle", "tower", "kind"],
            registry=r,
        )

    def for_bundle(self, bundle: str) -> BundleMetrics:
        """The view one bundle's batcher writes through: every series labelled ``bundle``."""
        return BundleMetrics(self, bundle)


class _Labelled:
    """A collector with the bundle label bound; remembers the series it made, for removal."""

    def __init__(self, collector: MetricWrapperBase, bundle: str) -> None:
        self._collector = collector
        self._bundle = bundle
        self._made: set[tuple[str, ...]] = set()
        self._lock = threading.Lock()

    def labels(self, *values: str) -> Any:
        with self._lock:
            self._made.add(values)
        return self._collector.labels(self._bundle, *values)

    def remove(self) -> None:
        with self._lock:
            made, self._made = self._made, set()
        for values in made:
            with contextlib.suppress(KeyError):  # never observed
                self._collector.remove(self._bundle, *values)


class BundleMetrics:
    """One bundle's share of :class:`EncoderMetrics`: the same attributes, label bound."""

    def __init__(self, parent: EncoderMetrics, bundle: str) -> None:
        self.parent = parent
        self.bundle = bundle
        self.registry = parent.registry
        p = parent
        self.queue_depth = _Labelled(p.queue_depth, bundle)
        self.batch_size = _Labelled(p.batch_size, bundle)
        self.batch_tokens = _Labelled(p.batch_tokens, bundle)
        self.stage_seconds = _Labelled(p.stage_seconds, bundle)
        self.rejected = _Labelled(p.rejected, bundle)
        self.items = _Labelled(p.items, bundle)
        self.items_per_second = _Labelled(p.items_per_second, bundle)
        self.provider = _Labelled(p.provider, bundle)
        self.healthy = _Labelled(p.healthy, bundle)
        self.failures = _Labelled(p.failures, bundle)
        self._all = (
            self.queue_depth,
            self.batch_size,
            self.batch_tokens,
            self.stage_seconds,
            self.rejected,
            self.items,
            self.items_per_second,
            self.provider,
            self.healthy,
            self.failures,
        )
        self._rates: dict[str, _Throughput] = {}

    def track_tower(
        self, tower: str, provider: str, depth: Callable[[str], int], lanes: tuple[str, ...]
    ) -> None:
        self.provider.labels(tower, provider).set(1)
        self.healthy.labels(tower).set(1)
        for lane in lanes:
            self.queue_depth.labels(tower, lane).set_function(functools.partial(depth, lane))
        rate = self._rates[tower] = _Throughput()
        self.items_per_second.labels(tower).set_function(rate.rate)

    def done(self, tower: str, lane: str, n: int) -> None:
        self.items.labels(tower, lane).inc(n)
        self._rates[tower].add(n)

    def remove(self) -> None:
        """Drop every series of this bundle (it is no longer served)."""
        for labelled in self._all:
            labelled.remove()
