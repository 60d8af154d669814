"""The in-process runner on dataset sources: units read one after the other, each unit kept in
the record once every item of it is written, and a resumed job that reads only the others."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from clipsearch.bootstrap import build_embedder
from indexer.jobs.local import InProcessJobQueue
from service.clients.base import EmbeddingClient
from service.core.config import Settings, SourcesSettings
from service.store.edge import QdrantEdgeStore
from tests.indexer.sources.datasets_support import write_shards
from tests.support import wait_for_job


@pytest.fixture
def runner(tmp_path: Path, tiny_bundle_dir: Path) -> Iterator[tuple[InProcessJobQueue, Path]]:
    settings = Settings(
        data_dir=tmp_path / "data",
        bundle=str(tiny_bundle_dir),
        sources=SourcesSettings(allowed_roots=[tmp_path / "src"]),
    )
    write_shards(tmp_path / "src", 5, 12, corrupt=(3, 1))
    embedder: EmbeddingClient = build_embedder(settings)
    store = QdrantEdgeStore(settings.data_dir)
    store.ensure_collection(settings.collection, dict(embedder.info().spaces))
    jobs = InProcessJobQueue(settings=settings, embedder=embedder, store=store)
    yield jobs, tmp_path / "src"
    jobs.close()
    store.close()
    embedder.close()


def test_a_resumed_job_does_not_read_its_finished_shards_again(
    runner: tuple[InProcessJobQueue, Path],
) -> None:
    jobs, src = runner
    job_id = jobs.submit("ingest", {"source": {"webdataset": str(src / "{00000..00004}.tar")}})
    job = wait_for_job(jobs.status, job_id)
    assert (job["state"], job["total"], job["done"], job["failed"]) == ("completed", 60, 59, 1)
    assert (job["shards_total"], job["shards_done"], job["shards_read"]) == (5, 5, 5)
    assert sorted(u[0] for u in job["units_finished"]) == [0, 1, 2, 3, 4]
    assert [u[1:3] for u in sorted(job["units_finished"])][3] == [11, 1]  # the corrupt member
    # What a crash after three shards leaves: a record still running, three units finished.
    path = jobs._files.path(job_id)
    record = json.loads(path.read_text())
    kept = [u for u in record["units_finished"] if u[0] in (0, 1, 3)]
    path.write_text(json.dumps({**record, "state": "running", "units_finished": kept}))
    # Their files are gone: reading them again would fail them.
    for n in (0, 1, 3):
        (src / f"{n:05}.tar").unlink()
    restarted = InProcessJobQueue(
        settings=jobs._settings, embedder=jobs._embedder, store=jobs._store
    )
    try:
        assert restarted.status(job_id)["state"] == "interrupted"
        restarted.retry(job_id)
        job = wait_for_job(restarted.status, job_id)
        assert (job["state"], job["total"], job["done"], job["failed"]) == (
            "completed",
            60,
            59,
            1,
        ), job["errors"]
        assert (job["shards_done"], job["shards_read"]) == (5, 2)
        # The shards read again were already indexed with the same content: skipped, unembedded.
        assert job["skipped"] == 59
        store = jobs._store
        assert store.count(jobs._settings.collection) == 59
    finally:
        restarted.close()
