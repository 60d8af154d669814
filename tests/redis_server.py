"""A private ``redis-server`` for a test: a free port, no persistence, killed at the end."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from indexer.distributed.stream import PointStream
from service.core.config import Settings

START_TIMEOUT_S = 30.0


def redis_binary() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").is_file() else None
    )
    if found is None:
        pytest.skip("redis-server is not installed")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    """Yield the URL of a fresh server; a port taken between probe and bind gets another try."""
    binary = redis_binary()
    directory.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        port = _free_port()
        log = (directory / f"redis-{port}.log").open("wb")
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(directory)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        url = f"redis://127.0.0.1:{port}/0"
        if _wait_up(url, proc):
            try:
                yield url
            finally:
                proc.kill()
                proc.wait(timeout=30)
                log.close()
            return
        proc.kill()
        proc.wait(timeout=30)
        log.close()
    raise RuntimeError(f"redis-server did not start; see the logs in {directory}")


def _wait_up(url: str, proc: subprocess.Popen[bytes]) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                if client.ping():
                    return True
            except redis.ConnectionError:
                time.sleep(0.05)  # the server process is starting: nothing to wait on but it
        return False
    finally:
        client.close()


@contextmanager
def fresh_stream(settings: Settings) -> Iterator[PointStream]:
    """A PointStream on the settings' broker, over an emptied database."""
    assert settings.broker.url
    stream = PointStream(settings.broker.url, settings.broker)
    stream.redis.flushdb()
    try:
        yield stream
    finally:
        stream.close()
