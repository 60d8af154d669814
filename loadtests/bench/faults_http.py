"""Issue 19's first acceptance bullet through the real HTTP gateway: one encoder worker frozen.

``loadtests/bench/faults.py`` (scenario d) drives the encoder client directly; this runs the same
fault on the whole deployment, every part a real process:

* two ``clipsearch worker`` processes (the encoder), on loopback;
* one ``clipsearch serve`` gateway with ``CLIPSEARCH_ENCODER__ENDPOINTS`` naming both (the writer
  and the embedded store inside it), two ``clipsearch indexer`` Celery workers embedding through
  the same two workers, and a private ``redis-server`` (``loadtests/bench/deployment.py``);
* 4 HTTP clients ``POST /v1/search`` for ``--seconds`` (40); ingestion jobs over a folder of scene
  PNGs run back to back throughout (a new one as soon as one ends), so the indexers are busy;
* a prober ``GET /health/ready`` and ``GET /health/live`` every 200 ms;
* after a quarter of the run one worker gets SIGSTOP, for half of the run (20 s), then SIGCONT.

Figures: failed searches, search p50/p99 overall and during the fault, the slowest
``/health/ready`` and whether it stayed 200, ``/health/live``'s statuses, the time until the
gateway's ``/metrics`` shows the frozen worker out of rotation and, after SIGCONT, back in it
(``clipsearch_encoder_client_worker_state``), and the indexers' ingestion rate (items written per
second, from the jobs' progress in Redis) before the fault with two workers against during it.
Everything shares the machine, so compare the ratios of one run. ::

    python -m loadtests.bench.faults_http --bundle tiny       # bench-results/faults_http.json
    make bench-faults-http                                    # the same, BENCH_BUNDLE (scenes)
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from loadtests.bench.deployment import REPO_ROOT, Deployment, deployment, submit
from loadtests.bench.encoder import make_inputs
from loadtests.bench.faults import WorkerProcess, percentile
from loadtests.bench.load import machine
from service.clients.grpc import SERVING
from service.core.bundle.manifest import load_bundle

CLIENTS = 4
SECONDS = 40.0
IMAGES = 400  # per ingestion job; jobs run back to back for the whole run
PROBE_S = 0.2
JOB_TIMEOUT_S = 600.0
QUERIES = ("a red circle", "two blue squares", "a green triangle on the left", "yellow")
# Issue 19's acceptance targets.
P99_TARGET_S = 2.0
READY_TARGET_S = 1.0
READMIT_TARGET_S = 10.0
INGEST_RATIO_TARGET = 0.5
_STATE = re.compile(
    r'^clipsearch_encoder_client_worker_state\{endpoint="([^"]+)",state="([^"]+)"\} (\S+)$',
    re.MULTILINE,
)


def resolve_bundle(spec: str, work: Path) -> Path:
    """A bundle folder, a name under ``models/zoo`` (``scenes``), or ``tiny`` (built under
    ``work``)."""
    if spec == "tiny":
        from models.tiny import build_tiny_bundle

        return build_tiny_bundle(work / "tiny")
    folder = Path(spec)
    return folder if folder.is_dir() else REPO_ROOT / "models" / "zoo" / spec


def worker_state(url: str, endpoint: str) -> str | None:
    """The worker's state on the gateway's ``/metrics`` (None when the gateway does not answer)."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None
    for found, state, value in _STATE.findall(text):
        if found == endpoint and float(value) == 1.0:
            return str(state)
    return "unknown"


class _Load:
    """Search clients, the health prober and the ingestion loop, each on a thread of its own."""

    def __init__(self, d: Deployment, clients: int) -> None:
        self.d = d
        self.searches: list[tuple[float, float, int]] = []  # start, seconds, status (0: no answer)
        self.ready: list[tuple[float, float, int]] = []  # start, seconds, status
        self.live: list[int] = []
        self.ingested: list[tuple[float, int]] = []  # time, items written so far (all jobs)
        self.jobs: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._search, args=(i,)) for i in range(clients)]
        self._threads += [
            threading.Thread(target=self._probe),
            threading.Thread(target=self._ingest),
        ]
        for thread in self._threads:
            thread.start()

    def _search(self, n: int) -> None:
        with httpx.Client(base_url=self.d.url, timeout=60) as http:
            i = n
            while not self._stop.is_set():
                start = time.monotonic()
                try:
                    status = http.post(
                        "/v1/search", json={"text": QUERIES[i % len(QUERIES)], "limit": 10}
                    ).status_code
                    error = f"search answered {status}"
                except httpx.HTTPError as exc:
                    status, error = 0, f"search: {type(exc).__name__}: {exc}"
                self.searches.append((start, time.monotonic() - start, status))
                if status != 200 and len(self.errors) < 20:
                    self.errors.append(error)
                i += 1

    def _probe(self) -> None:
        with httpx.Client(base_url=self.d.url, timeout=10) as http:
            due = time.monotonic() + PROBE_S
            while not self._stop.wait(max(0.0, due - time.monotonic())):  # every 200 ms
                start = time.monotonic()
                due = start + PROBE_S
                try:
                    status = http.get("/health/ready").status_code
                except httpx.HTTPError:
                    status = 0
                self.ready.append((start, time.monotonic() - start, status))
                try:
                    self.live.append(http.get("/health/live").status_code)
                except httpx.HTTPError:
                    self.live.append(0)

    def _ingest(self) -> None:
        finished = 0  # items written by the jobs that ended
        while not self._stop.is_set():
            job_id = submit(self.d)
            while not self._stop.wait(0.25):
                self.ingested.append((time.monotonic(), finished + self.d.live_done(job_id)))
                job = self.d.job(job_id)
                if job.get("state") in ("completed", "failed", "cancelled", "interrupted"):
                    self.jobs.append({k: job.get(k) for k in ("state", "total", "done", "failed")})
                    finished += self.d.live_done(job_id)
                    break

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(120)

    def rate(self, since: float, until: float) -> float:
        """Items written per second between two instants (the samples nearest inside them)."""
        inside = [(t, n) for t, n in self.ingested if since <= t <= until]
        if len(inside) < 2:
            return 0.0
        (t0, n0), (t1, n1) = inside[0], inside[-1]
        return (n1 - n0) / max(1e-9, t1 - t0)


def _wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.1) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return round(time.monotonic() - start, 2)
        time.sleep(step)
    return None


def run_http_freeze(
    bundle: Path,
    work: Path,
    *,
    seconds: float = SECONDS,
    clients: int = CLIENTS,
    images: int = IMAGES,
) -> dict[str, Any]:
    photos = work / "src" / "images"
    photos.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, data in enumerate(make_inputs(images).pngs):
        path = photos / f"scene-{i:06d}.png"
        path.write_bytes(data)
        paths.append(path)
    a, b = WorkerProcess(bundle), WorkerProcess(bundle)
    env = {
        "CLIPSEARCH_ENCODER__ENDPOINTS": f"{a.endpoint},{b.endpoint}",
        "CLIPSEARCH_GRPC_PORT": "0",  # HTTP alone: no clash on 50052
        "CLIPSEARCH_LOG_LEVEL": "WARNING",
    }
    try:
        a.start()
        b.start()
        with deployment(
            work, bundle, photos, paths, env=env, workers=("i1", "i2"), timeout_s=JOB_TIMEOUT_S
        ) as d:
            # The first fused search measures the bundle's score nulls: not part of the figures.
            httpx.post(f"{d.url}/v1/search", json={"text": QUERIES[0]}, timeout=300)
            t0 = time.monotonic()
            load = _Load(d, clients)
            try:
                time.sleep(seconds / 4)
                fault_at = time.monotonic()
                b.signal(signal.SIGSTOP)
                ejected = _wait_for(
                    lambda: worker_state(d.url, b.endpoint) not in (SERVING, None), seconds / 2
                )
                removed_as = worker_state(d.url, b.endpoint)
                time.sleep(max(0.0, fault_at + seconds / 2 - time.monotonic()))
                heal_at = time.monotonic()
                b.signal(signal.SIGCONT)
                back = _wait_for(
                    lambda: worker_state(d.url, b.endpoint) == SERVING, READMIT_TARGET_S * 2
                )
                before = b.served()  # its own count of answered calls, once it can tell
                serves = None
                if _wait_for(lambda: b.served() > before, READMIT_TARGET_S * 2) is not None:
                    serves = round(time.monotonic() - heal_at, 2)
                time.sleep(max(0.0, t0 + seconds - time.monotonic()))
            finally:
                load.stop()
            end = time.monotonic()
            gateway_metrics = httpx.get(f"{d.url}/metrics", timeout=5).text
    finally:
        a.stop()
        b.stop()
    every = [s for _, s, _ in load.searches]
    before_fault = [s for start, s, _ in load.searches if start < fault_at]
    during = [s for start, s, _ in load.searches if fault_at <= start < heal_at]
    ready_s = [s for _, s, _ in load.ready]
    failed = sum(status != 200 for _, _, status in load.searches)
    ready_during = [(s, st) for start, s, st in load.ready if fault_at <= start < heal_at]
    rate_before = load.rate(t0, fault_at)
    rate_during = load.rate(fault_at, heal_at)
    result: dict[str, Any] = {
        "machine": machine(),
        "bundle": load_bundle(bundle, verify=False).manifest.ref,
        "fault": "SIGSTOP one of two workers",
        "seconds": round(end - t0, 1),
        "fault_seconds": round(heal_at - fault_at, 1),
        "clients": clients,
        "searches": len(every),
        "searches_during_fault": len(during),
        "failed_searches": failed,
        "errors": load.errors[:10],
        "search_p50_s": round(percentile(every, 50), 4),
        "search_p99_s": round(percentile(every, 99), 4),
        "search_p99_before_fault_s": round(percentile(before_fault, 99), 4),
        "search_p99_during_fault_s": round(percentile(during, 99), 4),
        "search_max_s": round(max(every, default=0.0), 4),
        "ready_probes": len(load.ready),
        "ready_p50_s": round(percentile(ready_s, 50), 4),
        "ready_p99_s": round(percentile(ready_s, 99), 4),
        "ready_slowest_s": round(max(ready_s, default=0.0), 4),
        "ready_slowest_during_fault_s": round(max((s for s, _ in ready_during), default=0.0), 4),
        "ready_statuses": sorted({st for _, _, st in load.ready}),
        "live_statuses": sorted(set(load.live)),
        "seconds_to_eject": ejected,
        "removed_as": removed_as,
        "seconds_to_readmit": back,
        "seconds_until_it_serves_again": serves,
        "ingest_items_per_s_two_workers": round(rate_before, 1),
        "ingest_items_per_s_during_fault": round(rate_during, 1),
        "ingest_items_per_s_after": round(load.rate(heal_at, end), 1),
        "ingest_ratio_during_to_before": round(rate_during / rate_before, 2) if rate_before else 0,
        "ingest_jobs_finished": load.jobs,
        "gateway_client_counters": {
            name: sum(
                float(v) for v in re.findall(rf"^{name}\{{[^}}]*\}} (\S+)$", gateway_metrics, re.M)
            )
            for name in (
                "clipsearch_encoder_client_ejections_total",
                "clipsearch_encoder_client_hedges_total",
                "clipsearch_encoder_client_retries_total",
            )
        },
    }
    result["targets"] = {
        "zero_failed_searches": failed == 0,
        "p99_le_2s": result["search_p99_s"] <= P99_TARGET_S,
        "ready_200_within_1s": result["ready_statuses"] == [200]
        and result["ready_slowest_s"] <= READY_TARGET_S,
        "live_200": result["live_statuses"] == [200],
        "readmitted_within_10s": back is not None and back <= READMIT_TARGET_S,
        "ingest_at_least_half": rate_before > 0
        and rate_during >= INGEST_RATIO_TARGET * rate_before,
    }
    result["ok"] = all(result["targets"].values())
    return result


def table(r: dict[str, Any]) -> str:
    rows = [
        ("failed searches", f"{r['failed_searches']} of {r['searches']}", "0"),
        ("search p99 (p50)", f"{r['search_p99_s']:.3f} s ({r['search_p50_s']:.3f} s)", "<= 2 s"),
        (
            "search p99 before -> during the fault",
            f"{r['search_p99_before_fault_s']:.3f} -> {r['search_p99_during_fault_s']:.3f} s",
            "",
        ),
        (
            "/health/ready p50, slowest, statuses",
            f"{r['ready_p50_s'] * 1000:.1f}, {r['ready_slowest_s'] * 1000:.1f} ms,"
            f" {r['ready_statuses']}",
            "200 within 1 s",
        ),
        ("/health/live statuses", str(r["live_statuses"]), "[200]"),
        ("out of rotation after SIGSTOP", f"{r['seconds_to_eject']} s ({r['removed_as']})", ""),
        ("back in rotation after SIGCONT", f"{r['seconds_to_readmit']} s", "<= 10 s"),
        ("it answers calls again after SIGCONT", f"{r['seconds_until_it_serves_again']} s", ""),
        (
            "ingestion two workers -> during",
            f"{r['ingest_items_per_s_two_workers']} -> {r['ingest_items_per_s_during_fault']}"
            f" items/s ({r['ingest_ratio_during_to_before']:.2f})",
            ">= 0.5",
        ),
    ]
    width = max(len(a) for a, _, _ in rows)
    lines = [f"{'':{width}}  {'measured':34}  target"]
    lines += [f"{a:{width}}  {b:34}  {c}" for a, b, c in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default="tiny", help="a folder, a zoo name, or tiny")
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--images", type=int, default=IMAGES, help="per ingestion job")
    parser.add_argument("--out", type=Path, default=Path("bench-results/faults_http.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="clipsearch-faults-http-") as tmp:
        work = Path(tmp)
        bundle = resolve_bundle(args.bundle, work)
        result = run_http_freeze(
            bundle, work / "run", seconds=args.seconds, clients=args.clients, images=args.images
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"ok: {result['ok']} ({args.out})")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
