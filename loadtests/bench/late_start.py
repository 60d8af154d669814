"""A gateway started before its encoder worker (issue 19: a node drain, a slow image pull): a
real `clipsearch serve` whose ``CLIPSEARCH_ENCODER__ENDPOINTS`` names a port where nothing
listens yet, then a real `clipsearch worker` on that port ``delay_s`` later. The gateway must
keep trying (live, not ready, naming what it waits for, one log line), then be ready and answer
searches within seconds of the worker listening.

``tests/faults/test_start_order.py`` runs it with a 10-s delay and a 1-s back-off cap; the
acceptance scenario (130 s, the default 5-s cap) is

    python -m loadtests.bench.late_start --bundle tiny --delay 130

which prints the figures as JSON (the bundle: a folder, or ``tiny`` for the test bundle built
under ``--work``).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from loadtests.bench.deployment import REPO_ROOT, free_port, wait
from loadtests.procs import stop

READY_WITHIN_S = 30.0  # issue 19's acceptance bound, after the worker listens


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPSEARCH_")}
    return {**env, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT), **extra}


@contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``clipsearch ARGS`` with its output in ``log``; SIGTERM (then SIGKILL) at the end."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "clipsearch", *args],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield proc
    finally:
        stop(proc)


def wait_gateway_ready(
    url: str,
    gateway: subprocess.Popen[bytes],
    log: Path,
    timeout_s: float = 300,
    poll_s: float = 0.2,
) -> None:
    """Until ``url``'s ``/health/ready`` answers 200; the gateway's log if it exits first."""

    def ready() -> bool:
        if gateway.poll() is not None:
            raise AssertionError(log.read_text()[-3000:])
        response = _get(f"{url}/health/ready")
        return response is not None and response.status_code == 200

    wait("the gateway is ready", ready, timeout_s, poll_s=poll_s)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2)
    except httpx.TransportError:
        return None


def run_late_start(
    bundle: Path, work: Path, *, delay_s: float, backoff_max_s: float | None = None
) -> dict[str, Any]:
    """The scenario's figures: what the gateway said while it waited, and how long after the
    worker listened it was ready (raises if it exited, or was not ready within 30 s)."""
    http_port, worker_port = free_port(), free_port()
    endpoint = f"127.0.0.1:{worker_port}"
    base = f"http://127.0.0.1:{http_port}"
    extra = {"CLIPSEARCH_ENCODER__ENDPOINTS": endpoint, "CLIPSEARCH_GRPC_PORT": "0"}
    if backoff_max_s is not None:
        extra["CLIPSEARCH_STARTUP__BACKOFF_MAX_S"] = str(backoff_max_s)
    gateway_log, worker_log = work / "gateway.log", work / "worker.log"
    serve = ["serve", "--port", str(http_port), "--data-dir", str(work / "data")]
    result: dict[str, Any] = {
        "delay_s": delay_s,
        "backoff_max_s": backoff_max_s,
        "endpoint": endpoint,
    }
    with process(serve, _env(**extra), gateway_log) as gateway:
        started = time.monotonic()

        def waiting() -> bool:
            if gateway.poll() is not None:
                raise AssertionError(f"the gateway exited: {gateway_log.read_text()[-3000:]}")
            response = _get(f"{base}/health/ready")
            return response is not None and "waiting for" in response.json().get("reason", "")

        wait("the gateway says what it waits for", waiting, 120)
        result["while_waiting"] = {
            "ready": httpx.get(f"{base}/health/ready", timeout=2).json(),
            "live_status": httpx.get(f"{base}/health/live", timeout=2).status_code,
            "search": httpx.post(f"{base}/v1/search", json={"text": "x"}, timeout=10).json(),
        }
        time.sleep(max(0.0, delay_s - (time.monotonic() - started)))
        if gateway.poll() is not None:
            raise AssertionError(f"the gateway gave up: {gateway_log.read_text()[-3000:]}")
        result["waited_s"] = round(time.monotonic() - started, 2)
        worker = ["worker", "--host", "127.0.0.1", "--port", str(worker_port)]
        worker += ["--metrics-port", "0", "--bundle", str(bundle)]
        with process(worker, _env(), worker_log) as worker_proc:

            def listening() -> bool:
                if worker_proc.poll() is not None:
                    raise AssertionError(f"the worker exited: {worker_log.read_text()[-3000:]}")
                return _listening(worker_port)

            wait("the worker listens", listening, 300, poll_s=0.05)
            heard = time.monotonic()

            def ready() -> bool:
                response = _get(f"{base}/health/ready")
                return response is not None and response.status_code == 200

            wait("the gateway ready after the worker listened", ready, READY_WITHIN_S, 0.05)
            result["ready_after_worker_s"] = round(time.monotonic() - heard, 2)
            search = httpx.post(f"{base}/v1/search", json={"text": "a red square"}, timeout=30)
            result["first_search_status"] = search.status_code
    log = gateway_log.read_text()
    result["waiting_log_lines"] = log.count(f"waiting for encoder workers at {endpoint}")
    result["reached_logged"] = f"encoder workers at {endpoint}: reached" in log
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, help="a bundle folder, or tiny")
    parser.add_argument("--delay", type=float, default=130.0, help="seconds before the worker")
    parser.add_argument("--backoff-max", type=float, default=None, help="default: the setting's")
    parser.add_argument("--work", type=Path, default=None, help="folder for data and logs")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="late-start-"))
    work.mkdir(parents=True, exist_ok=True)
    bundle = Path(args.bundle)
    if args.bundle == "tiny":
        from models.tiny import build_tiny_bundle

        bundle = build_tiny_bundle(work / "tiny")
    figures = run_late_start(bundle, work, delay_s=args.delay, backoff_max_s=args.backoff_max)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
