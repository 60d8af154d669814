"""Issue 14 on real processes: two ``clipsearch worker`` processes on the tiny bundle, a bundle
loaded on both at run time (a rollout's ``LoadBundle``), a thread embedding queries for it; one
worker gets SIGKILL and is started again on its port (a fresh process: configured bundles only).
No embed for that bundle fails, and the client's health watch loads it on the restarted worker,
which takes that bundle's calls again. (In-process variants, back-off and forgetting:
``tests/service/clients/test_grpc_reload.py``.)"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import grpc
import pytest

from loadtests.bench.faults import WorkerProcess
from service.clients.grpc import GrpcEmbeddingClient, HealthPolicy
from service.core.config import EncoderSettings
from service.rpc.proto import encoder_pb2 as pb
from service.rpc.proto import encoder_pb2_grpc as pb_grpc
from tests.support import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(240)]
NARROW = "tiny-narrow@0.1.0"
WAIT_S = 60.0  # generous: the machine is shared


def _serves(worker: WorkerProcess) -> list[str]:
    """The bundles the worker lists in its own Info."""
    with grpc.insecure_channel(worker.endpoint) as channel:
        info = pb_grpc.EncoderStub(channel).Info(pb.InfoRequest(), timeout=10)
    return [f"{b.name}@{b.version}" for b in info.bundles]


def test_a_killed_worker_gets_the_run_time_bundle_back_and_no_embed_fails(
    tiny_bundle_dir: Path, tiny_narrow_bundle_dir: Path
) -> None:
    a, b = WorkerProcess(tiny_bundle_dir), WorkerProcess(tiny_bundle_dir)
    stop = threading.Event()
    errors: list[Exception] = []
    calls = [0]
    try:
        a.start()
        b.start()
        client = GrpcEmbeddingClient(
            [a.endpoint, b.endpoint], EncoderSettings(), policy=HealthPolicy(probe_interval_s=0.2)
        )
        try:
            client.wait_ready(WAIT_S)
            served, loaded = client.load_bundle(str(tiny_narrow_bundle_dir))
            assert (served.ref, loaded) == (NARROW, True)
            assert NARROW in _serves(a) and NARROW in _serves(b)

            def embed() -> None:
                while not stop.is_set():
                    try:
                        client.embed_texts(["a red circle"], bundle=NARROW)
                    except Exception as exc:
                        errors.append(exc)
                    calls[0] += 1
                    stop.wait(0.01)

            thread = threading.Thread(target=embed, daemon=True)
            thread.start()
            wait_until(lambda: calls[0] >= 20, timeout=WAIT_S)
            b.signal(signal.SIGKILL)
            assert b.proc is not None and b.proc.wait(15) == -signal.SIGKILL
            b.start()  # the same port, a fresh process: tiny-test only, at first
            wait_until(lambda: NARROW in _serves(b), timeout=WAIT_S)
            # It takes that bundle's calls again (the thread asks for nothing else).
            wait_until(lambda: b.served() >= 3, timeout=WAIT_S)
            stop.set()
            thread.join(30)
        finally:
            stop.set()
            client.close()
    finally:
        a.stop()
        b.stop()
    assert errors == [], errors[:3]
    assert calls[0] > 20
