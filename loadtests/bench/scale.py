"""``clipsearch bench scale``: search latency of the store against collection size (issue 16).

One collection grows step by step (10k, 100k, 1M points of one 312-dim vector, the joint space
of the default bundle; clustered unit vectors, as embeddings are). At each size, through the
store adapter (store time: no HTTP, no encoder):

* embedded (qdrant-edge): sequential search p50/p99 brute force (as it serves before any
  index), then ``build_index`` (subprocess build + swap) while a client searches back to back
  and a probe thread measures how long the GIL is withheld; then p50/p99 and recall@10 (against
  exact numpy cosine) on the built index;
* the server adapter (``QdrantServerStore``) on qdrant-client's local mode, up to
  ``server_max`` points: local mode is a numpy brute-force engine in this process, so its
  figures measure the adapter's own cost and its congruence with the embedded store, not a Qdrant
  server (no server binary is available here).
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.bench.load import machine, percentiles
from service.core.domain import Point, VectorName
from service.store.base import VectorStore
from service.store.edge import QdrantEdgeStore
from service.store.edge_index import IndexPolicy

DIM = 312
COLLECTION = "scale"
VECTOR: VectorName = "image"
_CENTRES = 2000
_WRITE_BATCH = 512
_CHUNK = 10 * _WRITE_BATCH  # the vectors are generated per chunk (``_vectors``' seed)


def _vectors(start: int, n: int, dim: int) -> np.ndarray:
    """Unit vectors around ``_CENTRES`` cluster centres, the same for the same indexes."""
    centres = np.random.default_rng(0).standard_normal((_CENTRES, dim), dtype=np.float32)
    rng = np.random.default_rng(start + 1)
    idx = rng.integers(0, _CENTRES, n)
    v = centres[idx] + 0.6 * rng.standard_normal((n, dim), dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _range(lo: int, hi: int, dim: int) -> np.ndarray:
    """The vectors of points ``lo`` to ``hi``, whatever steps a collection grew by."""
    first = lo - lo % _CHUNK
    parts = [_vectors(c, _CHUNK, dim) for c in range(first, hi, _CHUNK)]
    return np.concatenate(parts)[lo - first : hi - first]


def _ids(start: int, n: int) -> list[str]:
    return [str(uuid.UUID(int=i + 1)) for i in range(start, start + n)]


def _fill(store: VectorStore, have: int, want: int, dim: int) -> float:
    began = time.perf_counter()
    for start in range(have, want, _CHUNK):
        n = min(_CHUNK, want - start)
        vecs = _range(start, start + n, dim)
        for off in range(0, n, _WRITE_BATCH):
            m = min(_WRITE_BATCH, n - off)
            points = [
                Point(pid, {VECTOR: vecs[off + j].tolist()}, {"n": start + off + j})
                for j, pid in enumerate(_ids(start + off, m))
            ]
            store.upsert(COLLECTION, points)
    return time.perf_counter() - began


def _queries(n: int, dim: int) -> np.ndarray:
    return _vectors(10**9, n, dim)  # points of the same distribution, not in the collection


def _latencies(store: VectorStore, queries: np.ndarray) -> tuple[np.ndarray, list[list[str]]]:
    out, hits = [], []
    for q in queries:
        values = q.tolist()
        t0 = time.perf_counter()
        found = store.search(COLLECTION, VECTOR, values, limit=10)
        out.append(1000 * (time.perf_counter() - t0))
        hits.append([h.id for h in found])
    return np.asarray(out), hits


def _recall(hits: list[list[str]], queries: np.ndarray, size: int, dim: int) -> float:
    """recall@10 against exact cosine over every point (numpy, in chunks)."""
    best_s = np.full((len(queries), 10), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), 10), dtype=np.int64)
    for start in range(0, size, _CHUNK):
        n = min(_CHUNK, size - start)
        scores = queries @ _range(start, start + n, dim).T  # the same vectors, regenerated
        all_s = np.concatenate([best_s, scores], axis=1)
        all_i = np.concatenate(
            [best_i, np.arange(start, start + n)[None, :].repeat(len(queries), 0)], axis=1
        )
        top = np.argsort(-all_s, axis=1)[:, :10]
        best_s = np.take_along_axis(all_s, top, 1)
        best_i = np.take_along_axis(all_i, top, 1)
    found = 0
    for row, got in zip(best_i, hits, strict=True):
        truth = {str(uuid.UUID(int=int(i) + 1)) for i in row}
        found += len(truth & set(got))
    return round(found / (10 * len(hits)), 4)


class _GilProbe:
    """A thread that sleeps 1 ms in a loop: the longest gap between its wake-ups is the
    longest time the GIL (or the CPU) was withheld from Python threads."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.gaps: list[tuple[float, float]] = []  # (time.monotonic() before, ms) of gaps > 50 ms
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            time.sleep(0.001)
            now = time.monotonic()
            self.longest = max(self.longest, now - last)
            if now - last > 0.05:
                self.gaps.append((last, 1000 * (now - last)))
            last = now

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return round(1000 * self.longest, 1)


def _idle_under_load(store: QdrantEdgeStore, queries: np.ndarray, seconds: float) -> dict[str, Any]:
    """The same client and probe as :func:`_build_under_load`, with no maintenance running: on a
    shared machine the CPU alone makes gaps, and this is the baseline they are compared with."""
    done = threading.Event()
    row = _under_load(store, queries, lambda: done.wait(seconds))
    del row["swapped"], row["slow"], row["gaps"]
    return row


def _build_under_load(store: QdrantEdgeStore, queries: np.ndarray) -> dict[str, Any]:
    """``build_index`` while one client searches back to back: each search's latency, the
    longest GIL gap, the build's wall time."""
    row = _under_load(store, queries, lambda: store.build_index(COLLECTION))
    row["state"] = store.index_state(COLLECTION)
    row["phases_s"] = store.last_build
    slow, gaps = row.pop("slow"), row.pop("gaps")
    if store.last_build is not None:
        row["slow_searches_by_phase"] = _by_phase(slow, store.last_build["marks"])
        row["gil_gaps_over_50ms_by_phase"] = _by_phase(gaps, store.last_build["marks"])
    return row


def _under_load(store: QdrantEdgeStore, queries: np.ndarray, work: Any) -> dict[str, Any]:
    stop = threading.Event()
    lat: list[float] = []
    slow: list[tuple[float, float]] = []  # (time.monotonic() at the start, ms) of searches > 50 ms
    errors: list[str] = []

    def client() -> None:
        i = 0
        while not stop.is_set():
            values = queries[i % len(queries)].tolist()
            i += 1
            started = time.monotonic()
            t0 = time.perf_counter()
            try:
                store.search(COLLECTION, VECTOR, values, limit=10)
            except Exception as exc:
                errors.append(repr(exc))
            ms = 1000 * (time.perf_counter() - t0)
            lat.append(ms)
            if ms > 50:
                slow.append((started, ms))

    probe = _GilProbe()
    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    began = time.perf_counter()
    swapped = work()
    seconds = time.perf_counter() - began
    stop.set()
    thread.join()
    gap = probe.stop()
    ms = np.asarray(lat)
    return {
        "swapped": swapped,
        "seconds": round(seconds, 2),
        "searches": percentiles(ms),
        "searches_over_50ms": int((ms > 50).sum()),
        "search_errors": len(errors),
        "longest_gil_gap_ms": gap,
        "slow": slow,
        "gaps": probe.gaps,
    }


def _by_phase(slow: list[tuple[float, float]], marks: dict[str, float]) -> dict[str, Any]:
    """Searches over 50 ms by the build phase they ended in (a phase that holds the GIL shows
    up where the search waiting for it ends): count and longest."""
    order = sorted(marks.items(), key=lambda kv: kv[1])
    out: dict[str, dict[str, float]] = {}
    for started, ms in slow:
        ended = started + ms / 1000
        phase = "before"
        for name, at in order:
            if ended >= at:
                phase = name
        row = out.setdefault(phase, {"n": 0, "max_ms": 0.0})
        row["n"] += 1
        row["max_ms"] = round(max(row["max_ms"], ms), 1)
    return out


def _server_row(size: int, dim: int, queries: np.ndarray, n_queries: int) -> dict[str, Any]:
    from qdrant_client import QdrantClient

    from service.store.server import QdrantServerStore

    store = QdrantServerStore(QdrantClient(":memory:"))
    try:
        store.ensure_collection(COLLECTION, {VECTOR: dim})
        fill_s = _fill(store, 0, size, dim)
        ms, hits = _latencies(store, queries[:n_queries])
        return {
            "points": size,
            "fill_s": round(fill_s, 1),
            "search": percentiles(ms),
            "recall_at_10": _recall(hits[:20], queries[:20], size, dim),
        }
    finally:
        store.close()


def run_scale_bench(
    sizes: list[int],
    *,
    queries: int = 300,
    server_max: int = 100_000,
    data_dir: Path | None = None,
    dim: int = DIM,
    builder_threads: int | None = None,
    idle_s: float = 10.0,
    swap_max_wait_s: float = 5.0,
    log: Any = print,
    checkpoint: Any = None,
) -> dict[str, Any]:
    """``checkpoint(report)`` gets the report so far after each embedded size (long runs)."""
    qs = _queries(max(queries, 20), dim)
    # The client searches back to back: no pause ever comes, so the load and the close of a
    # swap run after swap_max_wait_s, as under sustained traffic.
    policy = IndexPolicy(
        enabled=False,
        swap_max_wait_s=swap_max_wait_s,
        **({"builder_threads": builder_threads} if builder_threads else {}),
    )
    embedded: list[dict[str, Any]] = []
    server: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="clipsearch-scale-", dir=data_dir) as tmp:
        store = QdrantEdgeStore(Path(tmp), index_policy=policy)
        try:
            store.ensure_collection(COLLECTION, {VECTOR: dim})
            have = 0
            for size in sorted(sizes):
                fill_s = _fill(store, have, size, dim)
                have = size
                log(f"embedded: {size} points written in {fill_s:.1f} s")
                time.sleep(1.5)  # the deferred flush runs in a pause of the searches
                brute, brute_hits = _latencies(store, qs[:queries])
                log(f"embedded {size}: brute force p50 {np.percentile(brute, 50):.2f} ms")
                idle = _idle_under_load(store, qs, idle_s)
                log(
                    f"embedded {size}: idle baseline searches {idle['searches']}, "
                    f"GIL gap {idle['longest_gil_gap_ms']} ms"
                )
                build = _build_under_load(store, qs)
                log(
                    f"embedded {size}: index built and swapped in {build['seconds']} s, "
                    f"searches {build['searches']}, GIL gap {build['longest_gil_gap_ms']} ms"
                )
                indexed, hits = _latencies(store, qs[:queries])
                row: dict[str, Any] = {
                    "points": size,
                    "fill_s": round(fill_s, 1),
                    "brute_force": percentiles(brute),
                    "brute_force_recall_at_10": _recall(brute_hits[:20], qs[:20], size, dim),
                    "idle_under_load": idle,
                    "build": build,
                    "indexed": percentiles(indexed),
                    "indexed_recall_at_10": _recall(hits[:20], qs[:20], size, dim),
                }
                log(
                    f"embedded {size}: indexed p50 {row['indexed']['p50_ms']} ms, "
                    f"recall@10 {row['indexed_recall_at_10']}"
                )
                embedded.append(row)
                if checkpoint is not None:
                    checkpoint(_report(embedded, [], dim, queries))
        finally:
            store.close()
    for size in sorted(s for s in sizes if s <= server_max):
        row = _server_row(size, dim, qs, min(queries, 100))
        log(f"server adapter (local mode) {size}: p50 {row['search']['p50_ms']} ms")
        server.append(row)
    return _report(embedded, server, dim, queries)


def _report(
    embedded: list[dict[str, Any]], server: list[dict[str, Any]], dim: int, queries: int
) -> dict[str, Any]:
    largest = embedded[-1] if embedded else None
    return {
        "bench": "scale",
        "machine": machine(),
        "dim": dim,
        "queries": queries,
        "embedded": embedded,
        "server_local_mode": server,
        "server_note": (
            "qdrant-client local mode: a numpy brute-force engine in this process; proves the "
            "server adapter's behaviour and overhead, not a Qdrant server's speed or its HNSW"
        ),
        "targets": {
            "search_p50_ms_at_1m_le_3": (
                largest["indexed"]["p50_ms"] <= 3.0
                if largest and largest["points"] >= 1_000_000
                else None
            ),
            "no_search_over_50ms_during_maintenance": all(
                r["build"]["searches_over_50ms"] == 0 for r in embedded
            ),
        },
    }
