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
    # Loopback unless told: a worker serves gRPC without authentication.
    assert settings.bundle == "tiny-test" and settings.worker.host == "127.0.0.1"


def test_repeated_bundles_are_the_default_then_the_extra_bundles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLIPSEARCH_BUNDLE", "env-default")
    monkeypatch.setenv("CLIPSEARCH_ENCODER__EXTRA_BUNDLES", "one, two")
    from_env = worker_settings()
    assert from_env.bundle == "env-default" and from_env.encoder.extra_bundles == ["one", "two"]
    given = worker_settings(bundle=["a", "b", "c"])
    assert given.bundle == "a" and given.encoder.extra_bundles == ["b", "c"]
    assert worker_settings(bundle=["a"]).encoder.extra_bundles == []


def test_the_worker_process_answers_info_and_stops_on_sigterm(
    tiny_bundle_dir: Path, tiny_narrow_bundle_dir: Path
) -> None:
    options = ["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"]
    bundles = ["--bundle", str(tiny_bundle_dir), "--bundle", str(tiny_narrow_bundle_dir)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "clipsearch", "worker", *options, *bundles],
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
            assert [(b.name, b.spaces["image"]) for b in info.bundles] == [
                ("tiny-test", 64),
                ("tiny-narrow", 32),
            ]
            health = stub.Health(pb.HealthRequest(), timeout=30)
            assert health.ready and list(health.bundles) == ["tiny-test@0.1.0", "tiny-narrow@0.1.0"]
            request = pb.EmbedRequest(texts=pb.Texts(items=["a"]), bundle="tiny-narrow@0.1.0")
            assert stub.Embed(request, timeout=30).texts.joint.dim == 32
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


def test_the_worker_process_loads_and_unloads_a_bundle_over_grpc(
    tmp_path: Path, tiny_bundle_dir: Path, tiny_narrow_bundle_dir: Path
) -> None:
    """A rollout onto a bundle the worker was not started with: LoadBundle, with the worker's
    own resolver (checksums verified), and UnloadBundle."""
    options = ["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "clipsearch", "worker", *options, "--bundle", str(tiny_bundle_dir)],
        cwd=ROOT,
        env={
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(ROOT),
            "CLIPSEARCH_DATA_DIR": str(tmp_path / "data"),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        port = None
        while port is None:
            if match := READY.search(lines.get(timeout=120)):
                port = int(match.group(1))
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.EncoderStub(channel)
            with pytest.raises(grpc.RpcError) as unknown:
                stub.LoadBundle(pb.LoadBundleRequest(spec=str(tmp_path / "nothing")), timeout=60)
            assert unknown.value.code() is grpc.StatusCode.NOT_FOUND
            spec = str(tiny_narrow_bundle_dir)
            loaded = stub.LoadBundle(pb.LoadBundleRequest(spec=spec), timeout=120)
            assert loaded.loaded and loaded.bundle.name == "tiny-narrow"
            request = pb.EmbedRequest(texts=pb.Texts(items=["a"]), bundle="tiny-narrow@0.1.0")
            assert stub.Embed(request, timeout=30).texts.joint.dim == 32
            stub.UnloadBundle(pb.UnloadBundleRequest(bundle="tiny-narrow@0.1.0"), timeout=30)
            health = stub.Health(pb.HealthRequest(), timeout=30)
            assert list(health.bundles) == ["tiny-test@0.1.0"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
