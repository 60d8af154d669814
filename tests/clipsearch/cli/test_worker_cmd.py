"""`clipsearch worker` as a real process: serves Info on its port, stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest

from clipsearch.cli.worker_cmd import worker_settings
from service.rpc.proto import encoder_pb2 as pb
from service.rpc.proto import encoder_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[3]
READY = re.compile(r"encoder worker ready on port (\d+)")


def test_options_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPSEARCH_WORKER__PORT", "6000")
    monkeypatch.setenv("CLIPSEARCH_WORKER__METRICS_PORT", "6001")
    settings = worker_settings(port=7000, bundle="tiny-test")
    assert (settings.worker.port, settings.worker.metrics_port) == (7000, 6001)
    assert settings.bundle == "tiny-test" and settings.worker.host == "0.0.0.0"


def test_the_worker_process_answers_info_and_stops_on_sigterm(tiny_bundle_dir: Path) -> None:
    options = ["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "clipsearch", "worker", *options, "--bundle", str(tiny_bundle_dir)],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    seen: list[str] = []
    try:
        port = None
        while port is None:
            line = lines.get(timeout=120)
            seen.append(line)
            if match := READY.search(line):
                port = int(match.group(1))
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.EncoderStub(channel)
            info = stub.Info(pb.InfoRequest(), timeout=30)
            assert info.bundle == "tiny-test@0.1.0" and info.spaces["image"] == 64
            assert stub.Health(pb.HealthRequest(), timeout=30).ready
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    proc.stdout.close()
    while not lines.empty():
        seen.append(lines.get())
    assert any("encoder worker stopped" in line for line in seen), "".join(seen)
