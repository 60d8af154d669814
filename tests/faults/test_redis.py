"""Redis killed while a real gateway serves (`clipsearch serve` with its writer, a `clipsearch
indexer` Celery worker, a private `redis-server` without persistence): every search succeeds,
``/health/ready`` stays 200 with a ``degraded`` note naming Redis, ingest and job requests answer
503 ``unavailable`` naming Redis and its URL; Redis started again on the same port (empty): a
new ingest job completes, the interrupted one resumes with ``retry``, and nothing is lost; with
an append-only file (as the chart runs Redis) the interrupted job resumes by itself. And a
gateway started before Redis is ready at once (degraded) and ingests once Redis is up."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from loadtests.bench.deployment import Deployment, RedisProcess, deployment_env, wait
from tests.indexer.distributed.test_batches import write_images
from tests.redis_server import redis_binary
from tests.support import CELERY_SMALL_STEPS, celery_deployment

pytestmark = pytest.mark.slow

N_IMAGES = 60
N_LATER = 8
SMALL_STEPS = {**CELERY_SMALL_STEPS, "CLIPSEARCH_STARTUP__HEALTH_INTERVAL_S": "0.5"}


@pytest.fixture(name="d")
def deployment_fixture(tmp_path: Path, tiny_bundle_dir: Path) -> Iterator[Deployment]:
    with celery_deployment(
        tmp_path, tiny_bundle_dir, N_IMAGES, env=SMALL_STEPS, workers=("w1",)
    ) as d:
        yield d


def _search(d: Deployment) -> None:
    response = httpx.post(f"{d.url}/v1/search", json={"text": "a photo"}, timeout=30)
    assert response.status_code == 200, response.text


def _ingest(d: Deployment, folder: Path) -> httpx.Response:
    return httpx.post(f"{d.url}/v1/ingest", json={"source": {"directory": str(folder)}}, timeout=60)


@pytest.mark.timeout(600)
def test_search_outlives_redis_and_ingest_resumes_when_it_is_back(d: Deployment) -> None:
    accepted = _ingest(d, d.photos)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    wait("some items written", lambda: d.live_done(job_id) >= 8)

    d.redis.kill()
    host_port = f"127.0.0.1:{d.redis.port}"

    def degraded() -> bool:
        _search(d)  # every search succeeds, before and after the gateway notices
        # The writer and the job queue each notice on their own beat: wait for the queue's note.
        return "jobs" in httpx.get(f"{d.url}/health/ready", timeout=2).json().get("degraded", {})

    wait("readiness names Redis", degraded, 60, poll_s=0.1)
    for _ in range(20):
        _search(d)
        ready = httpx.get(f"{d.url}/health/ready", timeout=2)
        assert ready.status_code == 200, ready.text
    assert host_port in ready.json()["degraded"]["jobs"]
    assert httpx.get(f"{d.url}/health/live", timeout=2).status_code == 200

    later = d.photos.parent / "later"
    write_images(later, N_LATER, seed=7)
    refused = _ingest(d, later)
    assert refused.status_code == 503, refused.text
    error = refused.json()["error"]
    assert error["type"] == "unavailable"
    assert "Redis" in error["message"] and f"redis://{host_port}/0" in error["message"]
    assert refused.headers.get("Retry-After")
    status = httpx.get(f"{d.url}/v1/jobs/{job_id}", timeout=30)
    assert status.status_code == 503 and "Redis" in status.json()["error"]["message"]
    listed = httpx.get(f"{d.url}/v1/jobs", timeout=30).json()
    assert "Redis" in listed["error"]["message"]  # jobs are unreadable, not reported lost

    d.redis.start()  # the same port, empty (no persistence)
    wait(
        "readiness no longer degraded",
        lambda: "degraded" not in httpx.get(f"{d.url}/health/ready", timeout=2).json(),
        60,
    )
    fresh = _ingest(d, later)
    assert fresh.status_code == 202, fresh.text
    done = d.wait_state(fresh.json()["job_id"], "completed")
    assert (done["total"], done["done"], done["failed"]) == (N_LATER, N_LATER, 0), done

    # The job Redis lost: interrupted (never completed, never running for ever), and resumed.
    d.wait_state(job_id, "interrupted")
    resumed = httpx.post(f"{d.url}/v1/jobs/{job_id}/retry", timeout=60)
    assert resumed.status_code == 202, resumed.text
    job = d.wait_state(job_id, "completed")
    assert (job["total"], job["done"], job["failed"]) == (N_IMAGES, N_IMAGES, 0), job
    d.wait_idle()
    d.stop_gateway()
    count, found = d.stored()
    assert len(found) == N_IMAGES  # every image of the interrupted job, nothing lost
    assert count == N_IMAGES + N_LATER  # and the later job's, each once


@pytest.mark.timeout(600)
def test_a_gateway_started_before_redis_serves_and_ingests_once_redis_is_up(
    tmp_path: Path, tiny_bundle_dir: Path
) -> None:
    server = RedisProcess(tmp_path / "redis")  # its port chosen, nothing listening yet
    photos = tmp_path / "src" / "photos"
    images = write_images(photos, N_LATER)
    env = deployment_env(
        tiny_bundle_dir, server.url, photos.parent, tmp_path / "indexer-data", SMALL_STEPS
    )
    d = Deployment(tmp_path, server, env, photos, images, tmp_path / "gateway-data")
    try:
        d.start_gateway()  # ready (200) without Redis: search needs none
        ready = httpx.get(f"{d.url}/health/ready", timeout=2).json()
        assert f"127.0.0.1:{server.port}" in ready["degraded"]["jobs"], ready
        _search(d)
        refused = _ingest(d, photos)
        assert refused.status_code == 503, refused.text
        assert "Redis" in refused.json()["error"]["message"]

        server.start()
        d.start_worker("w1")
        wait(
            "readiness no longer degraded",
            lambda: "degraded" not in httpx.get(f"{d.url}/health/ready", timeout=2).json(),
            60,
        )
        accepted = _ingest(d, photos)
        assert accepted.status_code == 202, accepted.text
        job = d.wait_state(accepted.json()["job_id"], "completed")
        assert (job["total"], job["done"], job["failed"]) == (N_LATER, N_LATER, 0), job
        assert httpx.get(f"{d.url}/v1/jobs", timeout=30).json()["total"] == 1  # none refused
    finally:
        d.close()


class PersistentRedis(RedisProcess):
    """Redis as the chart runs it: an append-only file (fsync on every write here, so that a
    SIGKILL loses nothing), read again by a restart on the same port and folder."""

    def start(self) -> None:
        log = (self.directory / f"redis-{time.monotonic_ns()}.log").open("wb")
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)

        def up() -> bool:
            try:
                return self.proc is not None and self.proc.poll() is None and bool(client.ping())
            except redis.RedisError:  # refused, or still loading the append-only file
                return False

        try:
            wait("redis up", up, 30)
        finally:
            client.close()


@pytest.mark.timeout(600)
def test_with_persistent_redis_an_interrupted_job_resumes_by_itself(
    tmp_path: Path, tiny_bundle_dir: Path
) -> None:
    redis_binary()
    server = PersistentRedis(tmp_path / "redis")
    server.start()
    photos = tmp_path / "src" / "photos"
    images = write_images(photos, N_IMAGES)
    env = deployment_env(
        tiny_bundle_dir, server.url, photos.parent, tmp_path / "indexer-data", SMALL_STEPS
    )
    d = Deployment(tmp_path, server, env, photos, images, tmp_path / "gateway-data")
    try:
        d.start_worker("w1")
        d.start_gateway()
        accepted = _ingest(d, d.photos)
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
        wait("some items written", lambda: d.live_done(job_id) >= 8)
        before = d.live_done(job_id)  # the last count Redis gave, just before the kill
        server.kill()  # SIGKILL
        assert before < N_IMAGES, "the job ended before the kill: make it take longer"
        wait(
            "readiness names Redis",
            lambda: "degraded" in httpx.get(f"{d.url}/health/ready", timeout=2).json(),
            60,
        )
        for _ in range(10):
            _search(d)
        server.start()  # the same port and folder: the queue and the job's progress are back
        job = d.wait_state(job_id, "completed")  # no retry needed
        assert (job["total"], job["done"], job["failed"]) == (N_IMAGES, N_IMAGES, 0), job
        d.wait_idle()
        d.stop_gateway()
        count, found = d.stored()
        assert count == len(found) == N_IMAGES  # every image once, nothing lost
    finally:
        d.close()
