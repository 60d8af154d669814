"""The in-process job runner: cancelling a queued job and a running one, between batches, and
resuming a cancelled or interrupted job without embedding what is indexed already; batches
loaded ahead of the write, and several batches written in one upsert."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from clipsearch.bootstrap import build_embedder
from indexer.jobs.local import BATCH_SIZE, PREFETCH_BATCHES, WRITE_POINTS, InProcessJobQueue
from service.clients.base import EmbeddingClient
from service.core.config import Settings, SourcesSettings
from service.core.domain import point_id
from service.core.errors import ClipsearchError, ErrorType
from service.store.edge import QdrantEdgeStore
from tests.support import wait_for_job, wait_until

COLL = "media"
# One batch more than the runner loads ahead: a cancel leaves exactly one batch not started.
BATCHES = PREFETCH_BATCHES + 1
IMAGES = BATCHES * BATCH_SIZE
IN_FLIGHT = PREFETCH_BATCHES * BATCH_SIZE


class GatedEmbedder:
    """The real in-process client; image calls wait for the gate (to hold a job mid-run)."""

    def __init__(self, inner: EmbeddingClient) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.calls = 0
        self.inside = 0  # calls inside the encoder at once, at most
        self._now = 0
        self._lock = threading.Lock()

    def encode_images(self, images: Sequence[bytes], **kw: Any) -> Any:
        with self._lock:
            self.calls += 1
            self._now += 1
            self.inside = max(self.inside, self._now)
        try:
            self.gate.wait(60)
            return self.inner.encode_images(images, **kw)
        finally:
            with self._lock:
                self._now -= 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def runner(tmp_path: Path, tiny_bundle_dir: Path) -> Iterator[tuple[InProcessJobQueue, Any, Path]]:
    src = tmp_path / "src"
    folder = src / "many"
    folder.mkdir(parents=True)
    for i in range(IMAGES):
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
    # The batches loaded ahead are inside the encoder.
    wait_until(lambda: embedder.calls == PREFETCH_BATCHES)
    assert jobs.cancel(queued)["state"] == "cancelled"
    assert jobs.cancel(running)["state"] == "running"  # stops at the next batch boundary
    embedder.gate.set()
    first = wait_for_job(jobs.status, running)
    # What was inside the encoder is finished and written; the last batch never starts.
    assert (first["state"], first["done"], first["failed"]) == ("cancelled", IN_FLIGHT, 0)
    assert len(_created_at(jobs, folder)) == IN_FLIGHT
    assert wait_for_job(jobs.status, queued)["done"] == 0
    assert embedder.calls == PREFETCH_BATCHES  # nothing embedded after the cancel


def _created_at(jobs: InProcessJobQueue, folder: Path) -> dict[str, str]:
    ids = [point_id(COLL, p.as_uri()) for p in sorted(folder.glob("*.png"))]
    return {r.id: r.payload["created_at"] for r in jobs._store.retrieve(COLL, ids)}


def test_retry_resumes_a_cancelled_job_without_embedding_what_is_indexed(
    runner: tuple[InProcessJobQueue, Any, Path],
) -> None:
    jobs, embedder, folder = runner
    job_id = jobs.submit("ingest", {"source": str(folder)})
    wait_until(lambda: embedder.calls == PREFETCH_BATCHES)
    jobs.cancel(job_id)
    embedder.gate.set()
    assert wait_for_job(jobs.status, job_id)["done"] == IN_FLIGHT
    indexed = _created_at(jobs, folder)
    assert len(indexed) == IN_FLIGHT

    assert jobs.retry(job_id) == job_id  # the same job, a second attempt
    job = wait_for_job(jobs.status, job_id)
    assert (job["state"], job["done"], job["failed"]) == ("completed", IMAGES, 0)
    assert (job["skipped"], job["attempt"]) == (IN_FLIGHT, 2)
    # The indexed batches were hashed, not embedded: one embedding call, for the last batch.
    assert embedder.calls == BATCHES
    after = _created_at(jobs, folder)
    assert len(after) == IMAGES
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
    path = jobs._files.path(job_id)
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
        assert (job["state"], job["done"], job["skipped"]) == ("completed", IMAGES, IMAGES)
        assert embedder.calls == calls  # everything was indexed already: nothing embedded
    finally:
        restarted.close()


def test_a_job_writes_several_batches_in_one_upsert_and_counts_them_once_written(
    runner: tuple[InProcessJobQueue, Any, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs, embedder, folder = runner
    monkeypatch.setattr("indexer.jobs.local.WRITE_AGE_S", 60.0)  # only the size or the end writes
    assert IMAGES < WRITE_POINTS
    writes: list[tuple[int, int]] = []  # (points in the upsert, done when it was called)
    store, job_ids = jobs._store, []
    real_upsert = store.upsert

    def upsert(collection: str, points: Sequence[Any]) -> None:
        writes.append((len(points), jobs.status(job_ids[0])["done"]))
        real_upsert(collection, points)

    monkeypatch.setattr(store, "upsert", upsert)
    embedder.gate.set()
    job_ids.append(jobs.submit("ingest", {"source": str(folder)}))
    job = wait_for_job(jobs.status, job_ids[0])
    assert (job["state"], job["done"]) == ("completed", IMAGES)
    assert writes == [(IMAGES, 0)]  # every batch in one write, and none counted before it
    assert len(_created_at(jobs, folder)) == IMAGES


def test_list_jobs_pages_newest_first(runner: tuple[InProcessJobQueue, Any, Path]) -> None:
    jobs, embedder, folder = runner
    ids = [jobs.submit("ingest", {"source": str(folder)}) for _ in range(3)]
    wait_until(lambda: embedder.calls == PREFETCH_BATCHES)  # the oldest is running
    page, total = jobs.list_jobs(limit=2, offset=0)
    assert total == 3
    assert [(j["id"], j["state"]) for j in page] == [(ids[2], "queued"), (ids[1], "queued")]
    rest, _ = jobs.list_jobs(limit=2, offset=2)
    assert [(j["id"], j["state"]) for j in rest] == [(ids[0], "running")]
    rest[0]["state"] = "edited"  # a copy: the runner's own record is untouched
    assert jobs.status(ids[0])["state"] == "running"
    embedder.gate.set()
    for job_id in ids:
        wait_for_job(jobs.status, job_id)
    assert [j["state"] for j in jobs.list_jobs(limit=10, offset=0)[0]] == ["completed"] * 3
