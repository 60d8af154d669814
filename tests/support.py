"""Small helpers shared by tests."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


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
