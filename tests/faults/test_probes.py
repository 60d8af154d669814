"""Every process kind answers a health probe and ``/metrics``, and job progress is honest, on
a real deployment (a private Redis, one ``clipsearch indexer`` with ``--probe-port`` set
through its environment, ``clipsearch serve`` with the writer inside): the indexer's probes
answer, its item counters equal what the job did, and the job's ``total`` is known once
planned and ``done`` never exceeds it, polled all along."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadtests.bench.deployment import Deployment, free_port, submit, wait
from tests.support import CELERY_SMALL_STEPS, celery_deployment

pytestmark = pytest.mark.slow

N_IMAGES = 24
PROBE_PORT = free_port()


@pytest.fixture(name="d")
def deployment_fixture(tmp_path: Path, tiny_bundle_dir: Path) -> Iterator[Deployment]:
    env = {
        **CELERY_SMALL_STEPS,
        "CLIPSEARCH_BROKER__PROBE_PORT": str(PROBE_PORT),
        "CLIPSEARCH_STARTUP__GC_FREEZE": "true",  # the default (tests/conftest.py turns it off)
    }
    with celery_deployment(tmp_path, tiny_bundle_dir, N_IMAGES, env=env, workers=("w1",)) as d:
        yield d


def _probe(path: str) -> httpx.Response | None:
    try:
        return httpx.get(f"http://127.0.0.1:{PROBE_PORT}{path}", timeout=5)
    except httpx.TransportError:
        return None


def _sample(text: str, name: str, labels: str) -> float:
    found = re.search(rf"^{name}\{{{labels}\}} (\S+)$", text, re.MULTILINE)
    assert found, f"{name}{{{labels}}} not in:\n{text}"
    return float(found.group(1))


def _started_objects_are_frozen(text: str) -> None:
    """Once started, the process froze what it keeps (service.core.collector): many objects,
    and the full collection before the freeze was measured."""
    frozen = re.search(r"^clipsearch_gc_frozen_objects (\S+)$", text, re.MULTILINE)
    assert frozen and float(frozen.group(1)) > 10_000, text
    assert _sample(text, "clipsearch_gc_pause_seconds_count", 'generation="2"') >= 1


@pytest.mark.timeout(600)
def test_the_indexer_answers_probes_and_metrics_and_progress_is_honest(d: Deployment) -> None:
    def indexer_ready() -> bool:
        response = _probe("/health/ready")
        return response is not None and response.status_code == 200

    wait("the indexer's /health/ready 200", indexer_ready, 240, poll_s=0.2)
    live = _probe("/health/live")
    assert live is not None and live.status_code == 200
    job_id = submit(d)
    seen: list[dict[str, object]] = []

    def completed() -> bool:
        job = d.job(job_id)
        if job:
            seen.append(job)
        return job.get("state") == "completed"

    wait("the job completed", completed, d.timeout_s, poll_s=0.05)
    for job in seen:
        total, done, failed = job["total"], job["done"], job["failed"]
        assert isinstance(total, int) and isinstance(done, int) and isinstance(failed, int)
        assert done + failed <= total or job["state"] == "queued", job
        if job["state"] == "running":
            assert total == N_IMAGES, job  # known once planned, never shrinking
    final = seen[-1]
    assert (final["total"], final["done"], final["failed"]) == (N_IMAGES, N_IMAGES, 0)
    metrics = _probe("/metrics")
    assert metrics is not None and metrics.status_code == 200
    text = metrics.text
    assert _sample(text, "clipsearch_indexer_items_total", 'outcome="sent"') == N_IMAGES
    batches = N_IMAGES // int(CELERY_SMALL_STEPS["CLIPSEARCH_BROKER__PLAN_BATCH_SIZE"])
    ok = 'outcome="ok",task="clipsearch.index_batch"'
    assert _sample(text, "clipsearch_indexer_tasks_total", ok) == batches
    assert re.search(r"^clipsearch_indexer_ready 1\.0$", text, re.MULTILINE)
    _started_objects_are_frozen(text)
    gateway = httpx.get(f"{d.url}/metrics", timeout=10)
    assert gateway.status_code == 200 and "clipsearch_ready 1.0" in gateway.text
    _started_objects_are_frozen(gateway.text)
    # One family per name (Prometheus refuses an exposition holding one twice).
    families = [f.name for f in text_string_to_metric_families(gateway.text)]
    assert len(families) == len(set(families))
    written = re.search(r"^clipsearch_writer_points_upserted_total (\S+)$", gateway.text, re.M)
    assert written, gateway.text
    assert re.search(r"^clipsearch_writer_healthy 1\.0$", gateway.text, re.MULTILINE)
    d.stop_gateway()
    count, found = d.stored()
    # The in-gateway writer's count is the points it wrote: here, one per image.
    assert count == len(found) == N_IMAGES == float(written.group(1))


@pytest.mark.timeout(300)
def test_an_indexer_whose_probe_port_is_taken_exits_saying_why(
    tmp_path: Path, tiny_bundle_dir: Path
) -> None:
    import socket
    import subprocess
    import sys

    from loadtests.bench.deployment import REPO_ROOT, RedisProcess, deployment_env

    redis_proc = RedisProcess(tmp_path / "redis")
    redis_proc.start()
    try:
        env = deployment_env(tiny_bundle_dir, redis_proc.url, tmp_path, tmp_path / "data")
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = int(taken.getsockname()[1])
            done = subprocess.run(
                [sys.executable, "-m", "clipsearch", "indexer", "--probe-port", str(port)],
                cwd=REPO_ROOT,
                env={**env, **CELERY_SMALL_STEPS},
                capture_output=True,
                text=True,
                timeout=240,
            )
    finally:
        redis_proc.kill()
    assert done.returncode != 0
    assert f"cannot serve its probes on 127.0.0.1:{port}" in done.stdout + done.stderr
