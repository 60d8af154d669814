"""Faults mid-job with the real processes: `clipsearch serve` (the writer inside it, the embedded
store), two `clipsearch indexer` Celery workers and a private `redis-server` without persistence.

* The gateway is killed with SIGKILL mid-job and started again: its store reopens (the kernel
  released the flock), its writer re-reads what it held, and the collection ends with exactly N
  points while the job reports done = N, failed = 0.
* Redis is killed and started again empty mid-job: the job reads ``interrupted`` (never done),
  and ``POST /v1/jobs/{id}/retry`` completes it. The points present before the resume are all
  counted ``skipped`` and keep their ``created_at``: nothing finished is embedded again, and
  nothing is lost (N points in the end).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from service.core.domain import point_id
from service.core.tasks import INDEX_QUEUE
from service.store.edge import QdrantEdgeStore
from tests.e2e.test_cli import _free_port
from tests.indexer.test_distributed import write_images
from tests.redis_server import redis_binary

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
N_IMAGES = 160
STREAM = "clipsearch:points:media"
TIMEOUT_S = 240.0  # a loaded 2-core machine; every wait ends as soon as its condition holds


class RedisProcess:
    """A private redis-server on a fixed port, so that it can be killed and started again (empty:
    no persistence) under the same URL."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        log = (self.directory / f"redis-{time.monotonic_ns()}.log").open("wb")
        self.proc = subprocess.Popen(
            [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        try:
            wait(
                "redis up",
                lambda: self.proc is not None and self.proc.poll() is None and _pings(client),
                30,
            )
        finally:
            client.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def wait(what: str, predicate: Callable[[], bool], timeout: float = TIMEOUT_S) -> None:
    """Poll a condition that other processes bring about (there is no event to wait on)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout:.0f} s")
        time.sleep(0.02)


@dataclass
class Deployment:
    base: Path
    redis: RedisProcess
    env: dict[str, str]
    photos: Path
    images: list[Path]
    data_dir: Path
    url: str = ""
    gateway: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_gateway(self) -> None:
        port = _free_port()
        log = (self.base / f"gateway-{time.monotonic_ns()}.log").open("wb")
        self.gateway = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(port),
             "--data-dir", str(self.data_dir), "--bundle", self.env["CLIPSEARCH_BUNDLE"],
             "--allow-root", str(self.photos.parent)],
            cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        self.url = f"http://127.0.0.1:{port}"
        wait("gateway ready", self._ready, 120)

    def _ready(self) -> bool:
        assert self.gateway is not None
        if self.gateway.poll() is not None:
            raise AssertionError(f"the gateway exited: {self.logs()}")
        try:
            return httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def stop_gateway(self, sig: int = signal.SIGTERM) -> None:
        assert self.gateway is not None
        self.gateway.send_signal(sig)
        self.gateway.wait(timeout=60)

    def start_worker(self, name: str) -> None:
        log = (self.base / f"{name}-{time.monotonic_ns()}.log").open("wb")
        self.workers.append(
            subprocess.Popen(
                [sys.executable, "-m", "service.cli", "indexer", "--name", f"{name}@%h"],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        log.close()

    def job(self, job_id: str) -> dict[str, Any]:
        """The job as the gateway reports it ({} while the gateway cannot answer)."""
        try:
            response = httpx.get(f"{self.url}/v1/jobs/{job_id}", timeout=10)
        except httpx.TransportError:
            return {}
        return dict(response.json()) if response.status_code == 200 else {}

    def live_done(self, job_id: str) -> int:
        """The writer's count in Redis, read directly (the gateway may be down)."""
        client = redis.Redis.from_url(self.redis.url)
        try:
            return int(client.hget(f"clipsearch:job:{job_id}", "done") or 0)
        finally:
            client.close()

    def wait_state(self, job_id: str, state: str) -> dict[str, Any]:
        seen: dict[str, Any] = {}

        def reached() -> bool:
            nonlocal seen
            seen = self.job(job_id) or seen
            return seen.get("state") == state

        try:
            wait(f"job {state}", reached)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last seen {seen}\n{self.logs()}") from None
        return seen

    def created_at(self) -> dict[str, str]:
        """Point id -> created_at of the images' points, read from the store on disk (the
        gateway, which holds it, must be stopped)."""
        store = QdrantEdgeStore(self.data_dir)
        try:
            ids = [point_id("media", p.as_uri()) for p in self.images]
            found = {r.id: r.payload["created_at"] for r in store.retrieve("media", ids)}
            assert store.count("media") == len(found)  # no point other than the images'
            return found
        finally:
            store.close()

    def wait_idle(self) -> None:
        """Until no task is queued or held and the points stream is empty, for a few seconds."""
        client = redis.Redis.from_url(self.redis.url)
        quiet_since = time.monotonic()

        def quiet() -> bool:
            nonlocal quiet_since
            if client.xlen(STREAM) or client.hlen("unacked") or client.llen(INDEX_QUEUE):
                quiet_since = time.monotonic()
            return time.monotonic() - quiet_since > 3.0

        try:
            wait("workers and writer idle", quiet)
        finally:
            client.close()

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}"
            for p in sorted(self.base.glob("*.log"))
        )

    def close(self) -> None:
        for proc in [*self.workers, self.gateway]:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*self.workers, self.gateway]:
            if proc is None:
                continue
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        self.redis.kill()


@pytest.fixture()
def deployment(tmp_path: Path, tiny_bundle_dir: Path) -> Iterator[Deployment]:
    photos = tmp_path / "src" / "photos"
    images = write_images(photos, N_IMAGES)
    server = RedisProcess(tmp_path / "redis")
    server.start()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CLIPSEARCH_")},
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO_ROOT),
        "CLIPSEARCH_BROKER__URL": server.url,
        "CLIPSEARCH_BUNDLE": str(tiny_bundle_dir),
        "CLIPSEARCH_SOURCES__ALLOWED_ROOTS": str(tmp_path / "src"),
        "CLIPSEARCH_ENCODER__PREPROCESS_THREADS": "1",
        # Small batches and small writes: the job takes many steps, so a kill lands mid-job.
        "CLIPSEARCH_BROKER__PLAN_BATCH_SIZE": "4",
        "CLIPSEARCH_BROKER__WRITER_MAX_ENTRIES": "2",
        "CLIPSEARCH_BROKER__WRITER_BLOCK_MS": "200",
        # A task stranded by a lost broker connection comes back within seconds.
        "CLIPSEARCH_BROKER__VISIBILITY_TIMEOUT_S": "10",
        "CLIPSEARCH_BROKER__RESTORE_INTERVAL_S": "1",
        # The indexers' own data dir (video thumbnails); the gateway's is --data-dir.
        "CLIPSEARCH_DATA_DIR": str(tmp_path / "indexer-data"),
    }
    d = Deployment(tmp_path, server, env, photos, images, tmp_path / "gateway-data")
    try:
        d.start_worker("w1")
        d.start_worker("w2")
        d.start_gateway()
        yield d
    finally:
        d.close()


def submit(d: Deployment) -> str:
    response = httpx.post(
        f"{d.url}/v1/ingest", json={"source": {"directory": str(d.photos)}}, timeout=30
    )
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


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
    assert d.job(job_id)["state"] == "interrupted"  # the record alone says so after a restart

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
        [sys.executable, "-m", "service.cli", "ingest", str(mixed), "--server", d.url],
        cwd=REPO_ROOT, env=d.env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr  # an item failed: non-zero, and it is listed
    assert "completed, 6 indexed, 1 failed" in result.stderr
    assert "broken.png" in result.stderr
    assert "items/s" in result.stderr  # the bar's rate, as the job reports it

    # retry-failed: a new job over the failed entry alone, sent to the workers as it was.
    job_id = re.search(r"job ([0-9a-f]{32}): completed", result.stderr)
    assert job_id, result.stderr
    response = httpx.post(f"{d.url}/v1/jobs/{job_id.group(1)}/retry-failed", timeout=30)
    assert response.status_code == 202, response.text
    again = d.wait_state(response.json()["job_id"], "completed")
    assert (again["total"], again["done"], again["failed"]) == (1, 0, 1), again
    assert again["errors"][0]["item"].endswith("broken.png")
