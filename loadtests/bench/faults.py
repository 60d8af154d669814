"""``clipsearch bench faults``: issue 5's fault target at full size, on real processes.

N scene PNGs (2,000 by default) are ingested three times, each on a fresh deployment of
``loadtests/bench/deployment.py`` (a private Redis without persistence, two ``clipsearch
indexer`` Celery workers, one ``clipsearch serve`` gateway with the writer inside it):

(a) ``worker_kill``: once the writer has counted 10 % of the items, one worker gets SIGKILL and
    is started again under its name; its batch is redelivered after the visibility timeout;
(b) ``gateway_kill``: the same, for the gateway (the writer and the store): SIGKILL, restart on
    the same data dir;
(c) ``redis_restart``: Redis is killed and started empty; the job must read ``interrupted`` and
    never ``completed``; once nothing moves, ``POST /v1/jobs/{id}/retry`` must complete it with
    every point stored before the resume counted ``skipped`` and keeping its ``created_at``.

Each must end with exactly N points on disk (read with the gateway stopped) and the job at
done = N, failed = 0. The deployment runs at its default settings: see the harness's docstring.

(d) ``worker_freeze`` (issue 19's acceptance): two real ``clipsearch worker`` processes behind one
    :class:`GrpcEmbeddingClient` (what the gateway and the indexers embed through), 4 threads
    embedding search queries (interactive texts) and one bulk thread embedding image batches (an
    indexer's traffic) for 40 s; one worker is frozen with SIGSTOP for the middle of it, then
    SIGCONT. Figures: failed calls, latency p50/p99/max during the fault, the slowest ``health()``
    (what ``/health/ready`` answers from) and whether it stayed ready, the time to eject the frozen
    worker and to re-admit it after SIGCONT (its state in the client's metrics, and its own
    counters showing it serves again), and the bulk rate during the fault against before it.
    :func:`run_worker_fault` also runs it with SIGKILL (the worker then restarted on its port).
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from loadtests.bench.deployment import Deployment, deployment, submit, wait
from loadtests.bench.encoder import make_inputs
from loadtests.bench.load import machine
from loadtests.procs import stop
from service.clients.grpc import DOWN, EJECTED, SERVING, GrpcEmbeddingClient
from service.core.bundle.manifest import load_bundle
from service.core.config import EncoderSettings

JOB_TIMEOUT_S = 1800.0  # a 2,000-item job on a loaded 2-core machine, with a kill in it
KILL_AT = 0.10  # of the items counted done when the fault is injected
LOG_TAIL = 4000
# Where a job stops moving: waiting for "completed" alone would hang on a job that failed.
SETTLED = ("completed", "failed", "cancelled", "interrupted")


def run_faults_bench(
    bundle: Path,
    *,
    images: int,
    env: Mapping[str, str] | None = None,
    freeze_seconds: float = 40.0,
) -> dict[str, Any]:
    """``env``: settings over the deployment's defaults (the tests take smaller steps);
    ``freeze_seconds``: the length of scenario (d)."""
    scenarios: dict[str, Callable[[Deployment, int], dict[str, Any]]] = {
        "worker_kill": _worker_kill,
        "gateway_kill": _gateway_kill,
        "redis_restart": _redis_restart,
    }
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="clipsearch-bench-faults-") as tmp:
        root = Path(tmp)
        photos = root / "src" / "images"
        photos.mkdir(parents=True)
        paths = []
        for i, data in enumerate(make_inputs(images).pngs):
            path = photos / f"scene-{i:06d}.png"
            path.write_bytes(data)
            paths.append(path)
        for name, scenario in scenarios.items():
            base = root / name
            base.mkdir()
            with deployment(base, bundle, photos, paths, env=env, timeout_s=JOB_TIMEOUT_S) as d:
                start = time.perf_counter()
                try:
                    result = scenario(d, images)
                except Exception as exc:  # a scenario that breaks is a failed scenario
                    result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:LOG_TAIL]}
                result["seconds"] = round(time.perf_counter() - start, 2)
                if not result["ok"]:
                    result["logs"] = d.logs(LOG_TAIL)
            results[name] = result
    start = time.perf_counter()
    try:
        results["worker_freeze"] = run_worker_fault(bundle, seconds=freeze_seconds)
    except Exception as exc:
        results["worker_freeze"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    results["worker_freeze"].setdefault("seconds", round(time.perf_counter() - start, 2))
    return {
        "machine": machine(),
        "bundle": load_bundle(bundle, verify=False).manifest.ref,
        "images": images,
        "kill_at_fraction": KILL_AT,
        "settings": dict(env or {}),
        "scenarios": results,
        "ok": all(r["ok"] for r in results.values()),
    }


def run_freeze_bench(bundle: Path, *, seconds: float = 40.0) -> dict[str, Any]:
    """Scenario (d) alone: ``python -m loadtests.bench.faults BUNDLE [SECONDS]``."""
    result = run_worker_fault(bundle, fault="stop", seconds=seconds)
    return {
        "machine": machine(),
        "bundle": load_bundle(bundle, verify=False).manifest.ref,
        "scenarios": {"worker_freeze": result},
        "ok": result["ok"],
    }


def _kill_point(d: Deployment, job_id: str, images: int) -> None:
    threshold = max(1, int(images * KILL_AT))
    wait("items written", lambda: d.live_done(job_id) >= threshold, d.timeout_s)


def _worker_kill(d: Deployment, images: int) -> dict[str, Any]:
    job_id = submit(d)
    _kill_point(d, job_id, images)
    at_kill = d.live_done(job_id)
    killed_log = d.restart_worker("w1")  # SIGKILL, then a new process under the same name
    job = d.wait_state(job_id, *SETTLED)
    result = _outcome(d, job, at_kill, images)[0]
    result["tasks_held_at_kill"] = _unfinished_tasks(killed_log)
    return result


def _unfinished_tasks(log: Path) -> int:
    """Tasks the worker's log shows received and never ended (Celery logs both at INFO): the
    batches the kill stranded, for the writer to get again by redelivery."""
    text = log.read_text(errors="replace")
    received = set(re.findall(r"Task \S+\[([0-9a-f-]{36})\] received", text))
    ended = set(re.findall(r"Task \S+\[([0-9a-f-]{36})\] (?!received)", text))  # any outcome
    return len(received - ended)


def _gateway_kill(d: Deployment, images: int) -> dict[str, Any]:
    job_id = submit(d)
    _kill_point(d, job_id, images)
    d.stop_gateway(signal.SIGKILL)  # SIGKILL: the writer dies with whatever it holds
    at_kill = d.live_done(job_id)
    d.start_gateway()  # the same data dir: the embedded store reopens
    job = d.wait_state(job_id, *SETTLED)
    return _outcome(d, job, at_kill, images)[0]


def _outcome(
    d: Deployment, job: dict[str, Any], at_kill: int, images: int
) -> tuple[dict[str, Any], dict[str, str]]:
    """The figures of a completed scenario, and the images' points' created_at."""
    d.stop_gateway()  # it holds the store
    points, found = d.stored()
    result = {
        "state": job["state"],
        **{k: job[k] for k in ("total", "done", "failed")},
        "points": points,
        "image_points": len(found),
        "done_at_kill": at_kill,
        "mid_job": at_kill < images,
    }
    result["ok"] = (
        result["mid_job"]
        and job["state"] == "completed"
        and (job["total"], job["done"], job["failed"]) == (images, images, 0)
        and points == len(found) == images
    )
    return result, found


class _States:
    """Every state the gateway reports for a job, sampled in a thread (every 0.1 s)."""

    def __init__(self, d: Deployment, job_id: str) -> None:
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(d, job_id), daemon=True)
        self._thread.start()

    def _run(self, d: Deployment, job_id: str) -> None:
        while not self._stop.wait(0.1):
            state = d.job(job_id).get("state")  # {} while the gateway is down
            if state:
                self.seen.add(str(state))

    def stop(self) -> set[str]:
        self._stop.set()
        self._thread.join(30)
        return self.seen


def _redis_restart(d: Deployment, images: int) -> dict[str, Any]:
    job_id = submit(d)
    states = _States(d, job_id)
    try:
        _kill_point(d, job_id, images)
        at_kill = d.live_done(job_id)
        d.redis.kill()
        d.redis.start()  # empty: the job's progress, the queue and the stream are gone
        lost = d.wait_state(job_id, *SETTLED)
        if lost["state"] == "interrupted":
            # Tasks that were running when Redis went away may still finish and be written.
            d.wait_idle()
        d.stop_gateway()
        points_before, before = d.stored()
        again: dict[str, Any] = {}
        if lost["state"] == "interrupted":
            d.start_gateway()
            again = d.job(job_id)  # the record alone, on a fresh gateway
    finally:
        seen = states.stop()
    result: dict[str, Any] = {
        "done_at_kill": at_kill,
        "state_after_loss": lost.get("state"),
        "done_after_loss": lost.get("done"),
        "state_after_gateway_restart": again.get("state"),
        "states_before_retry": sorted(seen),
        "completed_before_retry": "completed" in seen,
        "points_before_resume": points_before,
    }
    if {lost["state"], again.get("state")} != {"interrupted"}:  # the target missed: resume nothing
        return {**result, "ok": False, "points": points_before, "error": "not interrupted"}
    resumed_at = time.perf_counter()
    response = httpx.post(f"{d.url}/v1/jobs/{job_id}/retry", timeout=30)
    if response.status_code != 202:
        raise AssertionError(f"retry refused: {response.status_code} {response.text}")
    job = d.wait_state(job_id, *SETTLED)
    result["resume_seconds"] = round(time.perf_counter() - resumed_at, 2)
    final, after = _outcome(d, job, at_kill, images)
    result.update(
        {
            **final,
            "skipped": job.get("skipped"),
            "attempt": job.get("attempt"),
            "created_at_unchanged": {pid: after.get(pid) for pid in before} == before,
        }
    )
    result["ok"] = (
        final["ok"]
        and not result["completed_before_retry"]
        and 0 < len(before) == points_before < images
        and job.get("skipped") == len(before)
        and job.get("attempt") == 2
        and result["created_at_unchanged"]
    )
    return result


# -- (d) a frozen or killed encoder worker ---------------------------------------------------------

FREEZE_SECONDS = 40.0
FREEZE_CLIENTS = 4
P99_TARGET_S = 2.0
READMIT_TARGET_S = 10.0
WORKER_START_S = 180.0
_ROOT = Path(__file__).resolve().parents[2]
_READY = re.compile(r"encoder worker ready on port (\d+)")


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class WorkerProcess:
    """``clipsearch worker`` on loopback at a fixed port, as a real process."""

    def __init__(self, bundle: Path, port: int | None = None) -> None:
        self.bundle = bundle
        self.port = port or free_tcp_port()
        self.metrics_port: int | None = None
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, *, wait: bool = True) -> WorkerProcess:
        self.metrics_port = self.metrics_port or free_tcp_port()
        options = ["--host", "127.0.0.1", "--port", str(self.port)]
        options += ["--metrics-port", str(self.metrics_port)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "clipsearch", "worker", *options, "--bundle", str(self.bundle)],
            cwd=_ROOT,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(_ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc, lines), daemon=True).start()
        if wait:
            self.wait_ready(lines)
        return self

    def _read(self, proc: subprocess.Popen[str], lines: queue.Queue[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.output.append(line)
            lines.put(line)

    def wait_ready(self, lines: queue.Queue[str]) -> None:
        deadline = time.monotonic() + WORKER_START_S
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1.0)
            except queue.Empty:
                if self.proc is not None and self.proc.poll() is not None:
                    break
                continue
            if _READY.search(line):
                return
        raise RuntimeError(f"worker {self.endpoint} did not start: {''.join(self.output)[-2000:]}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def served(self) -> float:
        """Embed calls this worker answered OK, from its own /metrics (0 when unreachable)."""
        if self.metrics_port is None:
            return 0.0
        try:
            text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return 0.0
        pattern = r'^clipsearch_worker_rpcs_total\{code="OK",method="Embed"\} (\S+)$'
        return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        stop(self.proc, 15)


def client_state(client: GrpcEmbeddingClient, endpoint: str) -> str:
    """The worker's state as the client's metrics say (the gauge that reads 1)."""
    for state in (SERVING, EJECTED, DOWN):
        value = client.metrics.registry.get_sample_value(
            "clipsearch_encoder_client_worker_state", {"endpoint": endpoint, "state": state}
        )
        if value == 1.0:
            return state
    return "unknown"


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


class _Load:
    """``clients`` threads embedding queries, one bulk thread embedding images, and a readiness
    prober; each call's start, latency and outcome recorded."""

    def __init__(self, client: GrpcEmbeddingClient, clients: int, images: list[bytes]) -> None:
        self.client = client
        self.calls: list[tuple[float, float, bool]] = []  # start, seconds, ok
        self.bulk: list[tuple[float, int]] = []  # end, items
        self.health: list[tuple[float, float, bool]] = []  # start, seconds, ready
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._search, args=(i,)) for i in range(clients)]
        self._threads.append(threading.Thread(target=self._ingest, args=(images,)))
        self._threads.append(threading.Thread(target=self._ready))
        for thread in self._threads:
            thread.start()

    def _search(self, worker: int) -> None:
        n = 0
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                self.client.embed_texts([f"query {worker} {n}: a red circle"])
                ok = True
            except Exception as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
                ok = False
            self.calls.append((start, time.monotonic() - start, ok))
            n += 1

    def _ingest(self, images: list[bytes]) -> None:
        while not self._stop.is_set():
            try:
                results = self.client.embed_images(images, lane="bulk")
                self.bulk.append(
                    (time.monotonic(), sum(isinstance(r, np.ndarray) for r in results))
                )
            except Exception as exc:
                self.errors.append(f"bulk {type(exc).__name__}: {exc}")

    def _ready(self) -> None:
        while not self._stop.wait(0.1):
            start = time.monotonic()
            ready = self.client.health().ready
            self.health.append((start, time.monotonic() - start, ready))

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def rate(self, since: float, until: float) -> float:
        items = sum(n for end, n in self.bulk if since <= end < until)
        return items / max(1e-9, until - since)


def _wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> float | None:
    """Seconds until ``predicate`` held, or None if it did not within ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return round(time.monotonic() - start, 3)
        time.sleep(step)
    return None


def run_worker_fault(
    bundle: Path,
    *,
    fault: str = "stop",
    seconds: float = FREEZE_SECONDS,
    clients: int = FREEZE_CLIENTS,
) -> dict[str, Any]:
    """Two workers, ``clients`` search threads and a bulk thread for ``seconds``; for the middle
    half of it one worker is frozen (``stop``: SIGSTOP, then SIGCONT) or killed (``kill``:
    SIGKILL, then started again on its port). See scenario (d) in the module docstring."""
    if fault not in ("stop", "kill"):
        raise ValueError(f"fault must be stop or kill, not {fault!r}")
    a, b = WorkerProcess(bundle), WorkerProcess(bundle)
    images = make_inputs(8).pngs
    try:
        a.start()
        b.start()
        client = GrpcEmbeddingClient([a.endpoint, b.endpoint], EncoderSettings())
        try:
            client.wait_ready(30)
            t0 = time.monotonic()
            load = _Load(client, clients, images)
            time.sleep(seconds / 4)
            fault_at = time.monotonic()
            b.signal(signal.SIGSTOP if fault == "stop" else signal.SIGKILL)
            ejected = _wait_for(lambda: client_state(client, b.endpoint) != SERVING, seconds / 2)
            removed_as = client_state(client, b.endpoint)  # ejected (frozen) or down (dead)
            time.sleep(max(0.0, fault_at + seconds / 2 - time.monotonic()))
            heal_at = time.monotonic()
            if fault == "stop":
                b.signal(signal.SIGCONT)
            else:
                b.start()
                heal_at = time.monotonic()  # from the moment it listens again
            readmitted = serves = None
            before = b.served()  # 0 while frozen or dead: its /metrics does not answer either
            back = _wait_for(
                lambda: client_state(client, b.endpoint) == SERVING, READMIT_TARGET_S * 2
            )
            if back is not None:
                readmitted = round(time.monotonic() - heal_at, 3)
            if _wait_for(lambda: b.served() > before, READMIT_TARGET_S * 2, step=0.2) is not None:
                serves = round(time.monotonic() - heal_at, 3)
            time.sleep(max(0.0, t0 + seconds - time.monotonic()))
            load.stop()
            end = time.monotonic()
        finally:
            metrics = _client_counters(client, b.endpoint)
            client.close()
    finally:
        a.stop()
        b.stop()
    during = [s for start, s, _ in load.calls if fault_at <= start < heal_at]
    every = [s for _, s, _ in load.calls]
    failed = sum(not ok for _, _, ok in load.calls)
    slowest_health = max((s for _, s, _ in load.health), default=0.0)
    result: dict[str, Any] = {
        "fault": "SIGSTOP" if fault == "stop" else "SIGKILL",
        "seconds": round(end - t0, 1),
        "fault_seconds": round(heal_at - fault_at, 1),
        "clients": clients,
        "calls": len(load.calls),
        "failed": failed,
        "errors": load.errors[:5],
        "p50_s": round(percentile(every, 50), 4),
        "p99_s": round(percentile(every, 99), 4),
        "p99_during_fault_s": round(percentile(during, 99), 4),
        "max_s": round(max(every, default=0.0), 4),
        "health_slowest_s": round(slowest_health, 6),
        "health_always_ready": all(ready for _, _, ready in load.health),
        "seconds_to_eject": ejected,
        "removed_as": removed_as,
        "seconds_to_readmit": readmitted,
        "seconds_until_it_serves_again": serves,
        "bulk_items_per_s_before": round(load.rate(t0, fault_at), 1),
        "bulk_items_per_s_during": round(load.rate(fault_at, heal_at), 1),
        "bulk_items_per_s_after": round(load.rate(heal_at, end), 1),
        **metrics,
    }
    result["ok"] = (
        failed == 0
        and result["p99_s"] <= P99_TARGET_S
        and result["health_always_ready"]
        and ejected is not None
        and readmitted is not None
        and readmitted <= READMIT_TARGET_S
        and serves is not None
    )
    return result


def _client_counters(client: GrpcEmbeddingClient, endpoint: str) -> dict[str, float]:
    registry = client.metrics.registry

    def total(name: str) -> float:
        return sum(
            s.value
            for metric in registry.collect()
            for s in metric.samples
            if s.name == name and s.labels.get("endpoint") == endpoint
        )

    return {
        "ejections": total("clipsearch_encoder_client_ejections_total"),
        "hedges_to_others": sum(
            s.value
            for metric in registry.collect()
            for s in metric.samples
            if s.name == "clipsearch_encoder_client_hedges_total"
        ),
        "retries_from_faulty": total("clipsearch_encoder_client_retries_total"),
    }


if __name__ == "__main__":  # scenario (d) alone, e.g. python -m loadtests.bench.faults BUNDLE 40
    import json

    report = run_freeze_bench(Path(sys.argv[1]), seconds=float(sys.argv[2] if sys.argv[2:] else 40))
    print(json.dumps(report, indent=2))
    sys.exit(0 if report["ok"] else 1)
