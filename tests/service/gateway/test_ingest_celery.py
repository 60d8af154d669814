"""The distributed path end to end: a gateway with a broker (and its writer), one real
``clipsearch indexer`` process, a real private Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from loadtests.procs import stop
from service.core.config import BrokerSettings
from tests.indexer.distributed.test_batches import write_images
from tests.redis_server import redis_server
from tests.service.gateway.conftest import make_settings, running_client

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[3]
N_IMAGES = 30
JOB_TIMEOUT_S = 300.0  # a loaded 2-core machine; the poll ends as soon as the job is done


@dataclass
class Setup:
    client: TestClient
    redis: redis.Redis
    src: Path
    outside: Path
    worker: subprocess.Popen[bytes]
    log: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("celery-gateway")
    settings = make_settings(
        base, tiny_bundle_dir, broker=BrokerSettings(url="redis://unset", writer_block_ms=200)
    )
    photos = base / "src" / "photos"
    write_images(photos, N_IMAGES)
    (photos / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    outside = base / "outside"
    write_images(outside, 2)
    with redis_server(base / "redis") as url:
        settings = settings.model_copy(
            update={"broker": settings.broker.model_copy(update={"url": url})}
        )
        client = redis.Redis.from_url(url)
        with indexer_process(base, url, tiny_bundle_dir, str(base / "src")) as (worker, log_path):
            try:
                for test_client in running_client(settings):
                    yield Setup(test_client, client, base / "src", outside, worker, log_path)
            finally:
                client.close()


@contextmanager
def indexer_process(
    base: Path, broker_url: str, bundle: Path, roots: str, **env: str
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """One real ``clipsearch indexer`` on ``broker_url`` (its log in ``base/indexer.log``),
    with ``env`` over the common settings; stopped (SIGTERM, then SIGKILL) on leaving."""
    environment = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "CLIPSEARCH_BROKER__URL": broker_url,
        "CLIPSEARCH_BUNDLE": str(bundle),
        "CLIPSEARCH_DATA_DIR": str(base / "worker-data"),
        "CLIPSEARCH_SOURCES__ALLOWED_ROOTS": roots,
        "CLIPSEARCH_ENCODER__PREPROCESS_THREADS": "1",
        **env,
    }
    log_path = base / "indexer.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "clipsearch", "indexer", "--name", "w1@%h"],
            cwd=REPO_ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield worker, log_path
    finally:
        stop(worker)


def wait_done(setup: Setup, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        status: dict[str, Any] = setup.client.get(f"/v1/jobs/{job_id}").json()
        if status["state"] in ("completed", "failed", "interrupted"):
            return status
        if time.monotonic() > deadline or setup.worker.poll() is not None:
            raise AssertionError(
                f"job {job_id} not done: {status}; worker exit={setup.worker.poll()}\n"
                + setup.log.read_text()[-4000:]
            )
        time.sleep(0.2)


def count(setup: Setup) -> int:
    comp = setup.client.app.state.runtime.components  # type: ignore[attr-defined]
    return int(comp.store.count(comp.collection))


@pytest.mark.timeout(900)
def test_ingest_through_celery_completes_exactly_once(setup: Setup) -> None:
    deadline = time.monotonic() + 60
    while (ready := setup.client.get("/health/ready")).status_code != 200 or ready.json().get(
        "degraded"
    ):
        # The writer turns ready after its first read of the stream; until then, and while
        # Redis is away, it is a "degraded" note: search (readiness) needs neither.
        assert time.monotonic() < deadline, ready.json()
        time.sleep(0.1)
    assert set(ready.json()["checks"]) == {"encoder", "store"}
    for attempt in range(2):  # the second ingest of the same folder adds nothing
        response = setup.client.post(
            "/v1/ingest", json={"source": {"directory": str(setup.src / "photos")}}
        )
        assert response.status_code == 202, response.json()
        job_id = response.json()["job_id"]
        status = wait_done(setup, job_id)
        assert (status["state"], status["total"]) == ("completed", N_IMAGES + 1), status
        assert (status["done"], status["failed"]) == (N_IMAGES, 1), (attempt, status)
        assert status["errors"][0]["item"].endswith("corrupt.png")
        assert count(setup) == N_IMAGES

    # Redis restarted without persistence: a job seen ended keeps its outcome (the gateway's
    # record holds it); a job still running then reads interrupted (tests/e2e/test_faults.py).
    setup.redis.flushall()
    status = setup.client.get(f"/v1/jobs/{job_id}").json()
    assert (status["state"], status["done"], status["failed"]) == ("completed", N_IMAGES, 1)


def test_a_directory_outside_the_roots_is_refused_at_once(setup: Setup) -> None:
    response = setup.client.post("/v1/ingest", json={"source": {"directory": str(setup.outside)}})
    assert response.status_code == 403, response.json()
    assert setup.client.get("/v1/jobs/" + "0" * 32).status_code == 404
