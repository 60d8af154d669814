"""`clipsearch serve` serves the gRPC API beside HTTP on grpc_port, `clipsearch search --grpc`
asks it, and the server shuts down cleanly; a gRPC port in use is one line and exit 1."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from tests.support import free_port

ROOT = Path(__file__).resolve().parents[3]


def _env(tmp: Path, bundle: Path, grpc_port: int) -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "CLIPSEARCH_DATA_DIR": str(tmp / "data"),
        "CLIPSEARCH_BUNDLE": str(bundle),
        "CLIPSEARCH_GRPC_PORT": str(grpc_port),
    }


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clipsearch", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
        env=env,
    )


@pytest.fixture()
def served(tmp_path: Path, tiny_bundle_dir: Path) -> Iterator[tuple[int, int, Any]]:
    http_port, grpc_port = free_port(), free_port()
    env = _env(tmp_path, tiny_bundle_dir, grpc_port)
    proc = subprocess.Popen(
        [sys.executable, "-m", "clipsearch", "serve", "--port", str(http_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                if httpx.get(f"http://127.0.0.1:{http_port}/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        else:
            raise AssertionError("serve never turned ready")
        yield http_port, grpc_port, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.slow
def test_serve_answers_grpc_and_the_cli_asks_it(
    served: tuple[int, int, Any], tmp_path: Path, tiny_bundle_dir: Path
) -> None:
    http_port, grpc_port, proc = served
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (200, 20, 20)).save(buf, format="PNG")
    added = httpx.post(
        f"http://127.0.0.1:{http_port}/v1/items",
        files={"file": ("red.png", buf.getvalue(), "image/png")},
        data={"caption": "a red square", "id": "red"},
    )
    assert added.status_code == 200, added.text
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        check = health_pb2.HealthCheckRequest(service="clipsearch.v1.Search")
        status = health_pb2_grpc.HealthStub(channel).Check(check, timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING

    env = _env(tmp_path, tiny_bundle_dir, grpc_port)
    server = f"http://127.0.0.1:{http_port}"
    by_grpc = _cli("search", "a red square", "--json", "--grpc", f"127.0.0.1:{grpc_port}", env=env)
    by_rest = _cli("search", "a red square", "--json", "--server", server, env=env)
    assert by_grpc.returncode == 0, by_grpc.stderr
    grpc_answer, rest_answer = json.loads(by_grpc.stdout), json.loads(by_rest.stdout)
    grpc_answer.pop("took_ms"), rest_answer.pop("took_ms")
    assert grpc_answer == rest_answer and grpc_answer["hits"][0]["caption"] == "a red square"

    nowhere = _cli("search", "a", "--grpc", f"127.0.0.1:{free_port()}", env=env)
    assert nowhere.returncode == 1 and "unavailable" in nowhere.stderr

    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    # uvicorn re-raises the signal once it has shut down: 128 + SIGINT, as a shell expects.
    assert proc.returncode in (0, 128 + signal.SIGINT), output
    # gRPC drained and stopped before the components its calls use were closed.
    assert output.index("gRPC API stopped") < output.index("embedding client closed")
    assert "Traceback" not in output


@pytest.mark.slow
def test_a_grpc_port_in_use_is_one_line_and_exit_1(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = _env(tmp_path, tiny_bundle_dir, port)
        result = _cli("serve", "--port", str(free_port()), env=env)
    assert result.returncode == 1, result.stderr
    assert f"cannot listen for gRPC on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
