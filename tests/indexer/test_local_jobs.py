"""The in-process job runner: cancelling a queued job and a running one, between batches."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from indexer.local import BATCH_SIZE, InProcessJobQueue
from service.cli.bootstrap import build_embedder
from service.clients.base import EmbeddingClient
from service.core.config import Settings, SourcesSettings
from service.store.edge import QdrantEdgeStore
from tests.support import wait_for_job, wait_until


class GatedEmbedder:
    """The real in-process client; image calls wait for the gate (to hold a job mid-run)."""

    def __init__(self, inner: EmbeddingClient) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.calls = 0

    def embed_images(self, images: Sequence[bytes], **kw: Any) -> Any:
        self.calls += 1
        self.gate.wait(60)
        return self.inner.embed_images(images, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def runner(tmp_path: Path, tiny_bundle_dir: Path) -> Iterator[tuple[InProcessJobQueue, Any, Path]]:
    src = tmp_path / "src"
    folder = src / "many"
    folder.mkdir(parents=True)
    for i in range(3 * BATCH_SIZE):
        buf = io.BytesIO()
        Image.new("RGB", (24, 24), (i * 5 % 256, 40, 90)).save(buf, format="PNG")
        (folder / f"{i:03}.png").write_bytes(buf.getvalue())
    settings = Settings(
        data_dir=tmp_path / "data",
        bundle=str(tiny_bundle_dir),
        sources=SourcesSettings(allowed_roots=[src]),
    )
    embedder = GatedEmbedder(build_embedder(settings))
    store = QdrantEdgeStore(settings.data_dir)
    store.ensure_collection(settings.collection, dict(embedder.info().spaces))
    jobs = InProcessJobQueue(settings=settings, embedder=embedder, store=store)  # type: ignore[arg-type]
    yield jobs, embedder, folder
    embedder.gate.set()
    jobs.close()
    store.close()
    embedder.inner.close()


def test_cancel_a_running_job_between_batches_and_a_queued_one(
    runner: tuple[InProcessJobQueue, Any, Path],
) -> None:
    jobs, embedder, folder = runner
    running = jobs.submit("ingest", {"source": str(folder)})
    queued = jobs.submit("ingest", {"source": str(folder)})
    wait_until(lambda: embedder.calls == 1)  # the first batch is inside the encoder
    assert jobs.cancel(queued)["state"] == "cancelled"
    assert jobs.cancel(running)["state"] == "running"  # stops at the next batch boundary
    embedder.gate.set()
    first = wait_for_job(jobs.status, running)
    assert first["state"] == "cancelled" and first["done"] == BATCH_SIZE
    assert wait_for_job(jobs.status, queued)["done"] == 0
    assert embedder.calls == 1  # neither job embedded anything after being cancelled
