"""A whole Celery deployment as real processes, to break on purpose: a private ``redis-server``
without persistence, ``clipsearch indexer`` workers and one ``clipsearch serve`` gateway (the
writer and the embedded store inside it). ``tests/e2e/test_faults.py`` and ``clipsearch bench
faults`` both drive it.

The processes take their settings from the environment built by :func:`deployment_env`: the
caller's environment without its ``CLIPSEARCH_*`` variables (a developer's broker URL must not
leak in), the bundle, broker, sources root and indexer data dir, then the caller's overrides.
The tests override with small batches and short redelivery delays so that a 160-item job takes
many steps. The benchmark overrides nothing (see ``loadtests/bench/faults.py``): at 2,000 images
the default 32-item batches already make ~63 tasks and the writer's progress moves in steps of
one batch read, so a kill at 10 % lands well inside the job, and the figures are those of a
deployment left at its defaults (a worker's stranded batch comes back after the default
visibility timeout, 25 s + a 5 s sweep).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from service.core.domain import point_id
from service.core.tasks import INDEX_QUEUE
from service.store.edge import QdrantEdgeStore

REPO_ROOT = Path(__file__).resolve().parents[2]
STREAM = "clipsearch:points:media"
TIMEOUT_S = 240.0  # a loaded 2-core machine; every wait ends as soon as its condition holds
READY_TIMEOUT_S = 120.0


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found is None and Path("/usr/bin/redis-server").is_file():
        found = "/usr/bin/redis-server"
    if found is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait(
    what: str, predicate: Callable[[], bool], timeout: float = TIMEOUT_S, poll_s: float = 0.02
) -> None:
    """Poll a condition that other processes bring about (there is no event to wait on)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout:.0f} s")
        time.sleep(poll_s)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


class RedisProcess:
    """A private redis-server on a fixed port, so that it can be killed and started again (empty:
    no persistence) under the same URL."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.binary = redis_binary()
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        log = (self.directory / f"redis-{time.monotonic_ns()}.log").open("wb")
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
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


def deployment_env(
    bundle: Path,
    redis_url: str,
    sources_root: Path,
    indexer_data_dir: Path,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of every process of the deployment (the gateway's data dir is its
    ``--data-dir``)."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("CLIPSEARCH_")},
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO_ROOT),
        "CLIPSEARCH_BROKER__URL": redis_url,
        "CLIPSEARCH_BUNDLE": str(bundle),
        "CLIPSEARCH_SOURCES__ALLOWED_ROOTS": str(sources_root),
        # The indexers' own data dir, shared with nothing (video thumbnails travel in the points
        # stream to the writer in the gateway, whose data dir is --data-dir).
        "CLIPSEARCH_DATA_DIR": str(indexer_data_dir),
        # No gRPC API on the default port (50052): another gateway on the machine (a parallel
        # test, a developer's `make run`) may hold it.
        "CLIPSEARCH_GRPC_PORT": "0",
        **(overrides or {}),
    }


@dataclass
class Deployment:
    base: Path
    redis: RedisProcess
    env: dict[str, str]
    photos: Path
    images: list[Path]
    data_dir: Path
    timeout_s: float = TIMEOUT_S  # of every wait for the job or for quiet
    url: str = ""
    gateway: subprocess.Popen[bytes] | None = None
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    worker_logs: dict[str, Path] = field(default_factory=dict)

    def start_gateway(self) -> None:
        port = free_port()
        log = (self.base / f"gateway-{time.monotonic_ns()}.log").open("wb")
        self.gateway = subprocess.Popen(
            [sys.executable, "-m", "clipsearch", "serve", "--port", str(port),
             "--data-dir", str(self.data_dir), "--bundle", self.env["CLIPSEARCH_BUNDLE"],
             "--allow-root", str(self.photos.parent)],
            cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        self.url = f"http://127.0.0.1:{port}"
        wait("gateway ready", self._ready, READY_TIMEOUT_S)

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
        self.worker_logs[name] = self.base / f"{name}-{time.monotonic_ns()}.log"
        log = self.worker_logs[name].open("wb")
        self.workers[name] = subprocess.Popen(
            [sys.executable, "-m", "clipsearch", "indexer", "--name", f"{name}@%h"],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def restart_worker(self, name: str, sig: int = signal.SIGKILL) -> Path:
        """Kill worker ``name`` (SIGKILL: the batch it holds stays unacknowledged in Redis) and
        start a new one under the same name; the killed one's log."""
        proc, log = self.workers.pop(name), self.worker_logs[name]
        proc.send_signal(sig)
        proc.wait(timeout=60)
        self.start_worker(name)
        return log

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

    def wait_state(self, job_id: str, state: str, *others: str) -> dict[str, Any]:
        """The job once it reads ``state`` (or one of ``others``)."""
        seen: dict[str, Any] = {}
        wanted = {state, *others}

        def reached() -> bool:
            nonlocal seen
            seen = self.job(job_id) or seen
            return seen.get("state") in wanted

        try:
            wait(f"job {'/'.join(sorted(wanted))}", reached, self.timeout_s, poll_s=0.05)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last seen {seen}\n{self.logs()}") from None
        return seen

    def stored(self) -> tuple[int, dict[str, str]]:
        """The points in the collection, and point id -> created_at of the images' points, read
        from the store on disk (the gateway, which holds it, must be stopped)."""
        store = QdrantEdgeStore(self.data_dir)
        try:
            ids = [point_id("media", p.as_uri()) for p in self.images]
            found = {r.id: r.payload["created_at"] for r in store.retrieve("media", ids)}
            return store.count("media"), found
        finally:
            store.close()

    def created_at(self) -> dict[str, str]:
        count, found = self.stored()
        assert count == len(found), (count, len(found))  # no point other than the images'
        return found

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
            wait("workers and writer idle", quiet, self.timeout_s)
        finally:
            client.close()

    def logs(self, tail: int = 2500) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-tail:]}"
            for p in sorted(self.base.glob("*.log"))
        )

    def close(self) -> None:
        procs = [*self.workers.values(), self.gateway]
        for proc in procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            if proc is None:
                continue
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        self.redis.kill()


@contextmanager
def deployment(
    base: Path,
    bundle: Path,
    photos: Path,
    images: list[Path],
    *,
    env: Mapping[str, str] | None = None,
    workers: Sequence[str] = ("w1", "w2"),
    timeout_s: float = TIMEOUT_S,
) -> Iterator[Deployment]:
    """Redis, the workers and the gateway started under ``base``; all stopped at the end.
    ``photos`` (holding ``images``) must lie in a folder of its own: its parent is the sources
    root."""
    server = RedisProcess(base / "redis")
    server.start()
    d = Deployment(
        base,
        server,
        deployment_env(bundle, server.url, photos.parent, base / "indexer-data", env),
        photos,
        images,
        base / "gateway-data",
        timeout_s=timeout_s,
    )
    try:
        for name in workers:
            d.start_worker(name)
        d.start_gateway()
        yield d
    finally:
        d.close()


def submit(d: Deployment) -> str:
    response = httpx.post(
        f"{d.url}/v1/ingest", json={"source": {"directory": str(d.photos)}}, timeout=30
    )
    if response.status_code != 202:
        raise AssertionError(f"ingest refused: {response.status_code} {response.text}")
    return str(response.json()["job_id"])
