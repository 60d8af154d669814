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
"""

from __future__ import annotations

import re
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from loadtests.bench.deployment import Deployment, deployment, submit, wait
from loadtests.bench.encoder import make_inputs
from loadtests.bench.load import machine
from service.core.bundle.manifest import load_bundle

JOB_TIMEOUT_S = 1800.0  # a 2,000-item job on a loaded 2-core machine, with a kill in it
KILL_AT = 0.10  # of the items counted done when the fault is injected
LOG_TAIL = 4000
# Where a job stops moving: waiting for "completed" alone would hang on a job that failed.
SETTLED = ("completed", "failed", "cancelled", "interrupted")


def run_faults_bench(
    bundle: Path, *, images: int, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """``env``: settings over the deployment's defaults (the tests take smaller steps)."""
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
    return {
        "machine": machine(),
        "bundle": load_bundle(bundle, verify=False).manifest.ref,
        "images": images,
        "kill_at_fraction": KILL_AT,
        "settings": dict(env or {}),
        "scenarios": results,
        "ok": all(r["ok"] for r in results.values()),
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
