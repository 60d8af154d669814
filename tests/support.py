"""Small helpers shared by tests."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loadtests.bench.deployment import Deployment


def wait_for_job(
    fetch: Callable[[str], dict[str, Any]], job_id: str, timeout: float = 120.0
) -> dict[str, Any]:
    """Poll ``fetch(job_id)`` until the job leaves queued/running; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = fetch(job_id)
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish within {timeout} s")


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """For conditions another thread brings about that have no event of their own."""
    tick = threading.Event()
    for _ in range(int(timeout / 0.005)):
        if predicate():
            return
        tick.wait(0.005)
    raise AssertionError("condition not reached")


@contextmanager
def serve_directory(root: Path) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving ``root``; yields its base URL."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    """A loopback TCP port nobody listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_gateway(
    tmp: Path, bundle: Path, *args: str, env: dict[str, str] | None = None, ready_s: float = 120
) -> Iterator[str]:
    """A real `clipsearch serve` process on a free loopback port (HTTP alone unless ``env``
    sets ``CLIPSEARCH_GRPC_PORT``), data under ``tmp/data``, its output in ``tmp/serve.log``;
    yields its base URL once ``/health/ready`` answers 200, and stops it on exit."""
    import httpx

    port = free_port()
    full_env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(Path.cwd()),
        "CLIPSEARCH_GRPC_PORT": "0",
        **(env or {}),
    }
    log_path = tmp / "serve.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "clipsearch", "serve", "--port", str(port),
             "--data-dir", str(tmp / "data"), "--bundle", str(bundle), *args],
            env=full_env, stdout=log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + ready_s
            while True:
                assert proc.poll() is None, log_path.read_text()
                try:
                    if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)


# A Celery deployment under test takes small steps: small batches and small writes, so that a job
# takes many of them and a kill lands mid-job; a task stranded by a lost broker connection or a
# killed worker comes back within seconds.
CELERY_SMALL_STEPS = {
    "CLIPSEARCH_ENCODER__PREPROCESS_THREADS": "1",
    "CLIPSEARCH_BROKER__PLAN_BATCH_SIZE": "4",
    "CLIPSEARCH_BROKER__WRITER_MAX_ENTRIES": "2",
    "CLIPSEARCH_BROKER__WRITER_BLOCK_MS": "200",
    "CLIPSEARCH_BROKER__VISIBILITY_TIMEOUT_S": "10",
    "CLIPSEARCH_BROKER__RESTORE_INTERVAL_S": "1",
}


@contextmanager
def celery_deployment(
    base: Path,
    bundle: Path,
    images: int,
    *,
    env: dict[str, str] | None = None,
    workers: tuple[str, ...] = ("w1", "w2"),
) -> Iterator[Deployment]:
    """The real processes of ``loadtests/bench/deployment.py`` under ``base`` (a private
    ``redis-server``, ``clipsearch indexer`` workers named ``workers``, one ``clipsearch serve``
    with the writer inside), with ``images`` PNGs under ``base/src/photos`` to ingest and the
    settings ``env`` (default :data:`CELERY_SMALL_STEPS`); all stopped at the end. Skips without
    redis-server."""
    from loadtests.bench.deployment import deployment
    from tests.indexer.distributed.test_batches import write_images
    from tests.redis_server import redis_binary

    redis_binary()
    photos = base / "src" / "photos"
    paths = write_images(photos, images)
    settings = CELERY_SMALL_STEPS if env is None else env
    with deployment(base, bundle, photos, paths, env=settings, workers=workers) as d:
        yield d
