"""The in-process job runner: cancelling a queued job and a running one, between batches, and
resuming a cancelled or interrupted job without embedding what is indexed already."""

from __future__ import annotations

import io
import json
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
from service.core.domain import point_id
from service.core.errors import ClipsearchError, ErrorType
from service.store.edge import QdrantEdgeStore
from tests.support import wait_for_job, wait_until

COLL = "media"


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


def _created_at(jobs: InProcessJobQueue, folder: Path) -> dict[str, str]:
    ids = [point_id(COLL, p.as_uri()) for p in sorted(folder.glob("*.png"))]
    return {r.id: r.payload["created_at"] for r in jobs._store.retrieve(COLL, ids)}


def test_retry_resumes_a_cancelled_job_without_embedding_what_is_indexed(
    runner: tuple[InProcessJobQueue, Any, Path],
) -> None:
    jobs, embedder, folder = runner
    job_id = jobs.submit("ingest", {"source": str(folder)})
    wait_until(lambda: embedder.calls == 1)
    jobs.cancel(job_id)
    embedder.gate.set()
    assert wait_for_job(jobs.status, job_id)["done"] == BATCH_SIZE
    indexed = _created_at(jobs, folder)
    assert len(indexed) == BATCH_SIZE

    assert jobs.retry(job_id) == job_id  # the same job, a second attempt
    job = wait_for_job(jobs.status, job_id)
    assert (job["state"], job["done"], job["failed"]) == ("completed", 3 * BATCH_SIZE, 0)
    assert (job["skipped"], job["attempt"]) == (BATCH_SIZE, 2)
    assert embedder.calls == 3  # the first batch was not embedded again
    after = _created_at(jobs, folder)
    assert len(after) == 3 * BATCH_SIZE
    assert {pid: after[pid] for pid in indexed} == indexed  # nor written again
    with pytest.raises(ClipsearchError) as info:
        jobs.retry(job_id)  # completed: nothing to resume
    assert info.value.type is ErrorType.conflict


def test_a_job_interrupted_by_a_crash_resumes_after_the_restart(
    runner: tuple[InProcessJobQueue, Any, Path],
) -> None:
    jobs, embedder, folder = runner
    embedder.gate.set()
    job_id = jobs.submit("ingest", {"source": str(folder)})
    assert wait_for_job(jobs.status, job_id)["state"] == "completed"
    # What a crash mid-job leaves on disk: a record still "running".
    path = jobs._dir / f"{job_id}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "state": "running"}))
    restarted = InProcessJobQueue(
        settings=jobs._settings,
        embedder=embedder,
        store=jobs._store,
    )
    try:
        assert restarted.status(job_id)["state"] == "interrupted"
        calls = embedder.calls
        restarted.retry(job_id)
        job = wait_for_job(restarted.status, job_id)
        assert (job["state"], job["done"], job["skipped"]) == (
            "completed",
            3 * BATCH_SIZE,
            3 * BATCH_SIZE,
        )
        assert embedder.calls == calls  # everything was indexed already: nothing embedded
    finally:
        restarted.close()
