"""Driving a rollout on a real `clipsearch serve` process through its public API: shared by the
end-to-end rollout test (tiny → tiny-narrow) and the export venv's (photo → an exported
OpenCLIP ViT-B-32), which serve with the main venv's Python."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.test_cli import _free_port, _wait_ready

REPO = Path(__file__).resolve().parents[2]


class Server:
    """`clipsearch serve` on a free loopback port, data and allowed folder under ``tmp``, none of
    this process's CLIPSEARCH_ settings; restartable on the same data."""

    def __init__(
        self, tmp: Path, bundle: Path, *, python: str = sys.executable, ready_s: float = 120
    ) -> None:
        self.tmp, self.bundle, self.python, self.ready_s = tmp, bundle, python, ready_s
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
        for name in [n for n in env if n.startswith("CLIPSEARCH_")]:
            del env[name]
        env["CLIPSEARCH_GRPC_PORT"] = "0"
        self.proc = subprocess.Popen(
            [self.python, "-m", "clipsearch", "serve", "--port", str(self.port),
             "--data-dir", str(self.tmp / "data"), "--bundle", str(self.bundle),
             "--allow-root", str(self.tmp / "src")],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        _wait_ready(self.url, self.proc, timeout=self.ready_s)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


@contextmanager
def served(tmp: Path, bundle: Path, **options: Any) -> Iterator[Server]:
    """A started :class:`Server` over ``tmp`` (with an allowed ``src/media`` folder), stopped
    on exit."""
    (tmp / "src" / "media").mkdir(parents=True)
    server = Server(tmp, bundle, **options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def ingest(url: str, folder: Path, timeout: float = 120) -> None:
    """A folder ingest job, waited for; it must complete."""
    job = httpx.post(f"{url}/v1/ingest", json={"source": str(folder)}, timeout=60).json()["job_id"]
    deadline = time.monotonic() + timeout
    while (state := httpx.get(f"{url}/v1/jobs/{job}").json())["state"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert state["state"] == "completed", (state, httpx.get(f"{url}/v1/jobs/{job}").text)


def search(url: str, text: str, *, limit: int, **extra: Any) -> dict[str, Any]:
    r = httpx.post(f"{url}/v1/search", json={"text": text, "limit": limit, **extra}, timeout=60)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def ranking(body: dict[str, Any]) -> list[tuple[str, float]]:
    return [(h["id"], h["score"]) for h in body["hits"]]


def wait_rollout(url: str, rid: str, states: tuple[str, ...], timeout: float) -> dict[str, Any]:
    """The rollout's record once it reaches one of ``states``; failed or cancelled fails."""
    deadline = time.monotonic() + timeout
    while True:
        record: dict[str, Any] = httpx.get(f"{url}/v1/admin/reindex/{rid}", timeout=60).json()
        if record["state"] in states:
            return record
        assert record["state"] not in ("failed", "cancelled"), record
        assert time.monotonic() < deadline, record
        time.sleep(0.1)
