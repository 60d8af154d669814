"""Closed-loop load generators and the statistics the benchmarks report.

Each client thread calls ``call`` in a loop; a call returns how many items it completed.
Throughput counts every call that *ends* inside the measuring window (items completed per second
of the window, whenever the call began); latency counts only calls that start and end inside it,
so warm-up and ramp-down dilute neither. (Counting only whole calls inside the window for
throughput too would miss the calls under way at its start: with calls as long as 0.7 s — 64
clients of the photo bundle's image tower — that under-counts a 4 s window by about a sixth.)
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from service.core.errors import ClipsearchError, ErrorType

if TYPE_CHECKING:
    from service.clients.inprocess import InProcessEmbeddingClient
    from service.core.config import Settings


@dataclass
class Sample:
    started: float
    ended: float
    items: int


@dataclass
class LoadResult:
    seconds: float
    samples: list[Sample] = field(default_factory=list)  # served calls inside the window
    completed: int = 0  # items of the served calls that ended inside the window
    # Refusals come by the ten thousand per second: kept as 4-byte floats, so that the memory
    # of the load generator does not pass for the memory of the service under test.
    refused_ms: array[float] = field(default_factory=lambda: array("f"))
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def items_per_s(self) -> float:
        return self.completed / self.seconds

    def latencies_ms(self, *, refused: bool = False) -> np.ndarray:
        if refused:
            return np.asarray(self.refused_ms, dtype=np.float64)
        return np.asarray([1000 * (s.ended - s.started) for s in self.samples])


def percentiles(ms: np.ndarray) -> dict[str, float]:
    if ms.size == 0:
        return {"n": 0}
    return {
        "n": int(ms.size),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "max_ms": round(float(ms.max()), 3),
    }


def in_window(started: float, ended: float, begin: float, end: float) -> tuple[bool, bool]:
    """Whether a call counts towards (throughput, latency) of the window ``[begin, end]``."""
    ends_inside = begin <= ended <= end
    return ends_inside, ends_inside and started >= begin


def closed_loop(
    call: Callable[[int], int],
    clients: int,
    seconds: float,
    *,
    warmup_s: float = 0.5,
    backoff_s: float = 0.0,
) -> LoadResult:
    """``clients`` threads calling ``call(client_index)`` back to back for ``seconds``; a
    refused client waits ``backoff_s`` before its next call (a polite client honours
    Retry-After; a short backoff keeps the pressure on without spinning on the GIL)."""
    stop = threading.Event()
    begin = time.monotonic() + warmup_s
    end = begin + seconds
    result = LoadResult(seconds)
    lock = threading.Lock()

    def client(index: int) -> None:
        mine: list[Sample] = []
        completed = 0
        refusals = array("f")
        errors: dict[str, int] = {}
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                n, refused = call(index), False
            except ClipsearchError as exc:
                n, refused = 0, exc.type is ErrorType.overloaded
                if not refused:
                    errors[exc.type.value] = errors.get(exc.type.value, 0) + 1
            t1 = time.monotonic()
            throughput, latency = in_window(t0, t1, begin, end)
            if throughput and not refused:
                completed += n
            if latency:
                if refused:
                    refusals.append(1000 * (t1 - t0))
                else:
                    mine.append(Sample(t0, t1, n))
            if refused and backoff_s:
                stop.wait(backoff_s)
        with lock:
            result.samples += mine
            result.completed += completed
            result.refused_ms.extend(refusals)
            for key, count in errors.items():
                result.errors[key] = result.errors.get(key, 0) + count

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    stop.wait(warmup_s + seconds)
    stop.set()
    for thread in threads:
        thread.join(60)
    return result


def best_rate(run: Callable[[], int], seconds: float) -> float:
    """Items per second of ``run`` back to back (after one warm-up call)."""
    run()
    items, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or items == 0:
        items += run()
    return items / elapsed


def rss_mb() -> float:
    """Resident memory of this process (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except OSError:
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def machine() -> dict[str, Any]:
    """The CPUs this process may use (a container's limit, not the host's) and the platform."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpus": cpus or 1, "platform": platform.platform()}


def write_report(report: dict[str, Any], out: Path, name: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(json.dumps(report, indent=2, default=float) + "\n", encoding="utf-8")
    return path


def in_process_embedder(settings: Settings, bundle: Path) -> InProcessEmbeddingClient:
    """The encoder engine on ``bundle`` in this process, warmed up, behind its batcher: what the
    embedded gateway embeds with (the benchmarks take the bundle folder the CLI resolved)."""
    from service.clients.inprocess import InProcessEmbeddingClient
    from service.core.bundle.manifest import load_bundle
    from service.encoder.engine import EncoderEngine

    engine = EncoderEngine(load_bundle(bundle), settings)
    engine.warmup()
    return InProcessEmbeddingClient(engine)
