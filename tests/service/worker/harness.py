"""Real encoder workers on loopback for the worker and gRPC client tests.

``GatedEngine`` is the real engine on the tiny bundle; its image core stage can be held at a gate,
so a test builds a backlog (a full lane, a queued request to cancel, a deadline that passes)
deterministically instead of racing the clock.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np

from models.data.scenes import generate_scenes
from service.core.bundle.manifest import Bundle, load_bundle
from service.core.config import EncoderSettings, Settings, WorkerSettings
from service.core.domain import Lane
from service.encoder.engine import EncoderEngine
from service.rpc.proto import encoder_pb2_grpc as pb_grpc
from service.worker.server import WorkerServer


class GatedEngine(EncoderEngine):
    def __init__(self, bundle: Bundle, settings: Settings) -> None:
        super().__init__(bundle, settings)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # set when a gated batch reached the core stage
        self.image_rows = 0  # rows through the image core stage
        self._lock = threading.Lock()

    def hold(self) -> None:
        self.entered.clear()
        self.gate.clear()

    def forward_images(self, batch: np.ndarray, lane: Lane = "interactive") -> list[np.ndarray]:
        if not self.gate.is_set():
            self.entered.set()
            assert self.gate.wait(60), "the test never opened the gate"
        with self._lock:
            self.image_rows += batch.shape[0]
        return super().forward_images(batch, lane)


def worker_settings(encoder: EncoderSettings | None = None) -> Settings:
    return Settings(
        encoder=encoder or EncoderSettings(),
        worker=WorkerSettings(host="127.0.0.1", port=0, metrics_port=0),
    )


@contextmanager
def running_worker(
    bundle_dir: Path, settings: Settings | None = None
) -> Iterator[tuple[WorkerServer, GatedEngine]]:
    settings = settings or worker_settings()
    engine = GatedEngine(load_bundle(bundle_dir), settings)
    server = WorkerServer(settings, engine)
    server.start()
    try:
        yield server, engine
    finally:
        engine.gate.set()
        server.stop(grace=0)


@contextmanager
def stub_for(server: WorkerServer) -> Iterator[pb_grpc.EncoderStub]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield pb_grpc.EncoderStub(channel)


def sample(server: WorkerServer, name: str, **labels: str) -> float:
    """A metric's value; encoder series are the default bundle's unless ``bundle`` is given."""
    if name.startswith("clipsearch_encoder_"):
        labels.setdefault("bundle", server.engine.bundle.manifest.ref)
    value = server.registry.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def png_images(n: int, seed: int = 0) -> list[bytes]:
    out = []
    for scene in generate_scenes(n, seed=seed):
        buf = io.BytesIO()
        scene.image.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out
