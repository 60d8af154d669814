"""Faults mid-job with the real processes: `clipsearch serve` (the writer inside it, the embedded
store), two `clipsearch indexer` Celery workers and a private `redis-server` without persistence.

* The gateway is killed with SIGKILL mid-job and started again: its store reopens (the kernel
  released the flock), its writer re-reads what it held, and the collection ends with exactly N
  points while the job reports done = N, failed = 0.
* Redis is killed and started again empty mid-job: the job reads ``interrupted`` (never done),
  and ``POST /v1/jobs/{id}/retry`` completes it. The points present before the resume are all
  counted ``skipped`` and keep their ``created_at``: nothing finished is embedded again, and
  nothing is lost (N points in the end).

The process harness is ``loadtests/bench/deployment.py``, shared with ``clipsearch bench
faults`` (the same scenarios at 2,000 images on the default bundle).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loadtests.bench.deployment import REPO_ROOT, Deployment, submit, wait
from tests.indexer.distributed.test_batches import write_images
from tests.support import CELERY_SMALL_STEPS as SMALL_STEPS
from tests.support import celery_deployment

pytestmark = pytest.mark.slow

N_IMAGES = 160


@pytest.fixture(name="deployment")
def deployment_fixture(tmp_path: Path, tiny_bundle_dir: Path) -> Iterator[Deployment]:
    with celery_deployment(tmp_path, tiny_bundle_dir, N_IMAGES, env=SMALL_STEPS) as d:
        yield d


@pytest.mark.timeout(600)
def test_a_killed_gateway_loses_and_duplicates_nothing(deployment: Deployment) -> None:
    d = deployment
    job_id = submit(d)
    wait("some items written", lambda: d.live_done(job_id) >= 12)
    d.stop_gateway(signal.SIGKILL)  # the writer dies with whatever it holds
    at_kill = d.live_done(job_id)
    assert at_kill < N_IMAGES, "the job ended before the kill: make it take longer"

    d.start_gateway()  # the same data dir: the embedded store reopens
    job = d.wait_state(job_id, "completed")
    assert (job["total"], job["done"], job["failed"]) == (N_IMAGES, N_IMAGES, 0), job
    d.stop_gateway()
    assert len(d.created_at()) == N_IMAGES  # every image once, nothing else


@pytest.mark.timeout(600)
def test_a_redis_restart_interrupts_the_job_and_retry_resumes_it(deployment: Deployment) -> None:
    d = deployment
    job_id = submit(d)
    wait("some items written", lambda: d.live_done(job_id) >= 12)
    d.redis.kill()
    d.redis.start()  # empty: the job's progress, the queue and the stream are gone
    job = d.wait_state(job_id, "interrupted")
    assert job["done"] < N_IMAGES or job["total"] == 0, job

    # Tasks that were running when Redis went away may still finish and be written: let them
    # land, then look at what the store holds.
    d.wait_idle()
    d.stop_gateway()
    before = d.created_at()
    assert 0 < len(before) < N_IMAGES, len(before)
    d.start_gateway()
    # The record alone says so after a restart. Ready does not wait for Redis (search needs
    # none), so job reads may answer 503 for a moment after the start: poll, as a client would.
    d.wait_state(job_id, "interrupted")

    response = httpx.post(f"{d.url}/v1/jobs/{job_id}/retry", timeout=30)
    assert response.status_code == 202, response.text
    assert response.json()["job_id"] == job_id
    job = d.wait_state(job_id, "completed")
    assert (job["total"], job["done"], job["failed"], job["attempt"]) == (
        N_IMAGES,
        N_IMAGES,
        0,
        2,
    ), job
    assert job["skipped"] == len(before), job  # every finished item skipped, none re-embedded
    d.stop_gateway()
    after = d.created_at()
    assert len(after) == N_IMAGES  # nothing silently lost
    assert {pid: after[pid] for pid in before} == before  # the finished points untouched


@pytest.mark.timeout(600)
def test_a_cancelled_celery_job_stops_and_retry_finishes_it(deployment: Deployment) -> None:
    d = deployment
    job_id = submit(d)
    wait("some items written", lambda: d.live_done(job_id) >= 12)
    response = httpx.delete(f"{d.url}/v1/jobs/{job_id}", timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "cancelled"
    d.wait_idle()  # the queued tasks ran as no-ops; the ones already embedding were written
    job = d.job(job_id)
    assert job["state"] == "cancelled" and job["done"] < N_IMAGES, job
    again = httpx.delete(f"{d.url}/v1/jobs/{job_id}", timeout=30)
    assert again.status_code == 409, again.text

    assert httpx.post(f"{d.url}/v1/jobs/{job_id}/retry", timeout=30).status_code == 202
    resumed = d.wait_state(job_id, "completed")
    assert (resumed["done"], resumed["failed"], resumed["skipped"]) == (
        N_IMAGES,
        0,
        job["done"],
    ), resumed
    d.stop_gateway()
    assert len(d.created_at()) == N_IMAGES


@pytest.mark.timeout(600)
def test_cli_ingest_through_celery_shows_the_rate_and_lists_failures(
    deployment: Deployment,
) -> None:
    d = deployment
    mixed = d.photos.parent / "mixed"
    write_images(mixed, 6, seed=3)
    (mixed / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    result = subprocess.run(
        [sys.executable, "-m", "clipsearch", "ingest", str(mixed), "--server", d.url],
        cwd=REPO_ROOT, env=d.env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr  # an item failed: non-zero, and it is listed
    assert "completed, 6 indexed, 1 failed" in result.stdout  # the result on stdout
    assert "broken.png" in result.stdout
    assert "items/s" in result.stderr  # the bar's rate, as the job reports it: progress on stderr

    # retry-failed: a new job over the failed entry alone, sent to the workers as it was.
    job_id = re.search(r"job ([0-9a-f]{32}): completed", result.stdout)
    assert job_id, result.stdout
    response = httpx.post(f"{d.url}/v1/jobs/{job_id.group(1)}/retry-failed", timeout=30)
    assert response.status_code == 202, response.text
    again = d.wait_state(response.json()["job_id"], "completed")
    assert (again["total"], again["done"], again["failed"]) == (1, 0, 1), again
    assert again["errors"][0]["item"].endswith("broken.png")
