"""A Celery task's plain function on a resumed, cancelled or superseded job (real Redis, real
embedded store, the writer's lookup server): skipped items are never embedded."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from clipsearch.bootstrap import build_embedder
from indexer.distributed import batches
from indexer.distributed.lookups import LookupServer
from indexer.distributed.stream import WRITER_GROUP, PointStream
from service.clients.base import EmbeddingClient
from service.core.config import BrokerSettings, Settings, SourcesSettings
from service.core.domain import point_id
from service.store.edge import QdrantEdgeStore
from tests.indexer.distributed.test_batches import write_images
from tests.indexer.pipeline.test_video import make_video
from tests.redis_server import redis_server
from tests.support import serve_directory

COLL = "media"
JOB = "job"


class CountingEmbedder:
    """The real client, counting the images it is asked to embed."""

    def __init__(self, inner: EmbeddingClient) -> None:
        self.inner = inner
        self.images = 0

    def encode_images(self, images: Sequence[bytes], **kw: Any) -> Any:
        self.images += len(images)
        return self.inner.encode_images(images, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path) -> Iterator[Settings]:
    base = tmp_path_factory.mktemp("resume")
    with redis_server(base / "redis") as url:
        yield Settings(
            data_dir=base / "data",
            bundle=str(tiny_bundle_dir),
            broker=BrokerSettings(url=url, append_timeout_s=10),
            sources=SourcesSettings(allowed_roots=[base / "src"]),
        )


@pytest.fixture(scope="module")
def embedder(settings: Settings) -> Iterator[CountingEmbedder]:
    client = build_embedder(settings, wait_for_workers=False)
    yield CountingEmbedder(client)
    client.close()


@pytest.fixture()
def store(tmp_path: Path, embedder: CountingEmbedder) -> Iterator[QdrantEdgeStore]:
    s = QdrantEdgeStore(tmp_path / "store")
    s.ensure_collection(COLL, dict(embedder.info().spaces))  # type: ignore[arg-type]
    yield s
    s.close()


def write_through(stream: PointStream, store: QdrantEdgeStore) -> list[Any]:
    """What the writer does: upsert what the stream holds, count it, acknowledge it."""
    stream.ensure_group(COLL)
    entries = stream.read([COLL], WRITER_GROUP, "w", count=10, block_ms=100)
    store.upsert(COLL, [p for e in entries for p in e.points])
    stream.complete(WRITER_GROUP, entries)
    return entries


def test_a_resumed_batch_embeds_only_what_is_not_indexed_with_the_same_content(
    settings: Settings, embedder: CountingEmbedder, stream: PointStream, store: QdrantEdgeStore
) -> None:
    src = settings.sources.allowed_roots[0] / "resume"
    images = write_images(src, 3)
    entries = [{"uri": str(p)} for p in images]
    kw: dict[str, Any] = {"embedder": embedder, "stream": stream, "settings": settings}
    stream.jobs.start(JOB, run="r1")
    batches.index_batch(JOB, COLL, entries, run="r1", **kw)
    write_through(stream, store)
    ids = [point_id(COLL, p.as_uri()) for p in images]
    first = {r.id: r.payload["created_at"] for r in store.retrieve(COLL, ids)}
    assert len(first) == 3

    write_images(src, 3, seed=1)  # all three change on disk ...
    write_images(src, 2)  # ... and two change back: only the third has new content
    stream.jobs.start(JOB, run="r2", resume=True)
    stream.jobs.init_job(JOB, total=3)
    before = embedder.images
    server = LookupServer(stream.redis, store)
    try:
        outcome = batches.index_batch(JOB, COLL, entries, run="r2", **kw)
    finally:
        server.close()
    assert outcome.skipped == [str(images[0]), str(images[1])]
    assert outcome.sent == [str(images[2])] and outcome.failed == []
    assert embedder.images - before == 1  # the skipped two were never embedded
    (entry,) = write_through(stream, store)
    assert entry.skipped == outcome.skipped and len(entry.points) == 1
    status = stream.jobs.get(JOB)
    assert status and (status["done"], status["skipped"], status["failed"]) == (3, 2, 0)
    after = {r.id: r.payload["created_at"] for r in store.retrieve(COLL, list(first))}
    changed = [pid for pid in first if after[pid] != first[pid]]
    assert len(changed) == 1  # the skipped points were not rewritten


def test_a_resumed_batch_skips_a_url_video_indexed_with_the_same_content(
    settings: Settings, embedder: CountingEmbedder, stream: PointStream, store: QdrantEdgeStore
) -> None:
    """A video given by URL is fetched, then hashed, then looked up: the same bytes at the same
    URL are not embedded again; different bytes are."""
    www = settings.sources.allowed_roots[0] / "www"
    www.mkdir(parents=True, exist_ok=True)
    make_video(www / "clip.mkv")  # 12 s: three segments
    sources = settings.sources.model_copy(update={"allowed_networks": ["127.0.0.1/32"]})
    kw: dict[str, Any] = {
        "embedder": embedder,
        "stream": stream,
        "settings": settings.model_copy(update={"sources": sources}),
    }
    with serve_directory(www) as url:
        entries = [{"uri": f"{url}/clip.mkv", "id": "clip"}]
        stream.jobs.start(JOB, run="r1")
        assert batches.index_batch(JOB, COLL, entries, run="r1", **kw).sent == ["clip"]
        write_through(stream, store)
        ids = [point_id(COLL, "clip", i) for i in range(3)]
        first = {r.id: r.payload for r in store.retrieve(COLL, ids)}
        assert len(first) == 3 and all(p.get("sha256") for p in first.values())

        server = LookupServer(stream.redis, store)
        try:
            stream.jobs.start(JOB, run="r2", resume=True)
            before = embedder.images
            outcome = batches.index_batch(JOB, COLL, entries, run="r2", **kw)
            assert (outcome.skipped, outcome.sent) == (["clip"], [])
            assert embedder.images == before  # fetched and hashed, not embedded
            write_through(stream, store)

            make_video(www / "clip.mkv", audio=True)  # new bytes at the same URL
            stream.jobs.start(JOB, run="r3", resume=True)
            outcome = batches.index_batch(JOB, COLL, entries, run="r3", **kw)
            assert (outcome.skipped, outcome.sent) == ([], ["clip"])
            assert embedder.images > before
        finally:
            server.close()


def test_tasks_of_a_cancelled_or_superseded_attempt_do_nothing(
    settings: Settings, embedder: CountingEmbedder, stream: PointStream
) -> None:
    images = write_images(settings.sources.allowed_roots[0] / "cancel", 2)
    entries = [{"uri": str(p)} for p in images]
    kw: dict[str, Any] = {"embedder": embedder, "stream": stream, "settings": settings}
    before = embedder.images
    stream.jobs.start(JOB, run="r1")
    stream.jobs.mark_cancelled(JOB)
    outcome = batches.index_batch(JOB, COLL, entries, run="r1", **kw)
    assert outcome.stopped == "the job was cancelled" and outcome.entry_id == ""
    stream.jobs.start(JOB, run="r2")
    assert batches.index_batch(JOB, COLL, entries, run="r1", **kw).stopped == (
        "a newer attempt of the job runs"
    )
    plan = batches.plan_job(
        JOB, COLL, {"directory": str(images[0].parent)}, stream=stream,
        send_batch=lambda batch: pytest.fail("a stale plan sends nothing"), settings=settings,
        run="r1",
    )  # fmt: skip
    assert plan.error == "a newer attempt of the job runs"
    assert embedder.images == before and stream.length(COLL) == 0
