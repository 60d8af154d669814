"""The indexing task's plain function and the Celery app's settings, without a Celery worker."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from clipsearch.bootstrap import build_embedder, indexer_resources
from indexer.distributed import app as celery_app
from indexer.distributed import batches
from indexer.distributed.stream import WRITER_GROUP, PointStream
from service.clients.base import EmbeddingClient
from service.core.config import BrokerSettings, LimitsSettings, Settings, SourcesSettings
from service.core.domain import point_id
from service.core.errors import ClipsearchError, ErrorType
from service.core.tasks import INDEX_BATCH, INDEX_QUEUE
from tests.indexer.pipeline.test_video import make_video
from tests.support import serve_directory

COLL = "media"


def write_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        pixels = rng.integers(0, 255, size=(24, 24, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG")
        path = folder / f"img-{i:04d}.png"
        path.write_bytes(buf.getvalue())
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sources")


@pytest.fixture(scope="module")
def settings(root: Path, tiny_bundle_dir: Path, redis_url: str) -> Settings:
    return Settings(
        data_dir=root.parent / "data",
        bundle=str(tiny_bundle_dir),
        broker=BrokerSettings(url=redis_url, stream_max_len=5, append_timeout_s=0.3),
        sources=SourcesSettings(allowed_roots=[root]),
        limits=LimitsSettings(max_upload_bytes=64 * 1024),
    )


@pytest.fixture(scope="module")
def embedder(settings: Settings) -> Iterator[EmbeddingClient]:
    client = build_embedder(settings, wait_for_workers=False)
    yield client
    client.close()


def run(entries: list[dict[str, Any]], **kw: Any) -> batches.BatchOutcome:
    return batches.index_batch("job", COLL, entries, **kw)


def test_a_batch_goes_to_the_stream_with_its_failures(
    root: Path, settings: Settings, embedder: EmbeddingClient, stream: PointStream, tmp_path: Path
) -> None:
    good = write_images(root / "batch", 3)
    (root / "batch" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    outside = write_images(tmp_path / "elsewhere", 1)[0]
    entries: list[dict[str, Any]] = [
        {"uri": str(good[0])},
        {"uri": good[1].as_uri(), "id": "stable-1", "caption": "a red square"},
        {"uri": str(good[2]), "metadata": {"shoot": 7}},
        {"uri": str(root / "batch" / "broken.png")},
        {"uri": str(root / "batch" / "missing.png")},
        {"uri": str(outside)},
        {"uri": "http://169.254.169.254/cat.jpg"},
    ]
    kw = {"embedder": embedder, "stream": stream, "settings": settings}
    outcome = run(entries, **kw)
    assert outcome.sent == [str(good[0]), "stable-1", str(good[2])]
    reasons = {f["item"]: f["reason"] for f in outcome.failed}
    assert set(reasons) == {str(root / "batch" / p) for p in ("broken.png", "missing.png")} | {
        str(outside),
        "http://169.254.169.254/cat.jpg",
    }
    assert "outside the allowed roots" in reasons[str(outside)]
    assert "cannot read" in reasons[str(root / "batch" / "missing.png")]

    again = run(entries, **kw)  # a redelivered task: the same points, the same counts
    stream.ensure_group(COLL)
    first, second = stream.read([COLL], WRITER_GROUP, "w", count=10, block_ms=100)
    assert [p.id for p in first.points] == [p.id for p in second.points]
    assert first.points[0].id == point_id(COLL, good[0].as_uri())
    assert first.points[1].id == point_id(COLL, "stable-1")
    assert first.points[1].payload["caption"] == "a red square"
    assert first.points[2].payload["metadata"] == {"shoot": 7}
    assert set(first.points[0].vectors) == {"image"}
    assert (
        (first.items, first.failed) == (second.items, second.failed) == (again.sent, again.failed)
    )
    stream.complete(WRITER_GROUP, [first, second])
    status = stream.jobs.get("job")
    assert status and (status["done"], status["failed"]) == (3, 4)


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1, reached through the SSRF guard's allow-list."""
    www = tmp_path_factory.mktemp("www")
    write_images(www, 1, seed=3)[0].rename(www / "blue.png")

    with serve_directory(www) as url:
        yield url


@pytest.fixture(scope="module")
def open_settings(settings: Settings) -> Settings:
    sources = settings.sources.model_copy(update={"allowed_networks": ["127.0.0.1/32"]})
    return settings.model_copy(update={"sources": sources})


def test_a_batch_of_every_kind_goes_to_the_stream(
    root: Path,
    open_settings: Settings,
    embedder: EmbeddingClient,
    stream: PointStream,
    web: str,
) -> None:
    image = write_images(root / "kinds", 1)[0]
    video = root / "kinds" / "clip.mkv"
    make_video(video)  # 12 s: segments of 5 + 5 + 2 s
    url = f"{web}/blue.png"
    entries: list[dict[str, Any]] = [
        {"uri": str(image), "id": "local"},
        {"uri": url, "caption": "a blue square"},
        {"id": "note", "caption": "a quiet harbour", "description": "boats at dawn"},
        {"uri": video.as_uri(), "id": "clip", "metadata": {"reel": 2}},
    ]
    kw = {"embedder": embedder, "stream": stream, "settings": open_settings}
    outcome = run(entries, **kw)
    assert outcome.sent == ["local", url, "note", "clip"] and outcome.failed == []
    run(entries, **kw)  # a redelivered task
    stream.ensure_group(COLL)
    first, second = stream.read([COLL], WRITER_GROUP, "w", count=10, block_ms=100)
    assert (first.items, first.failed) == (second.items, second.failed) == (outcome.sent, [])
    ids = [point_id(COLL, k) for k in ("local", url, "note")]
    ids += [point_id(COLL, "clip", i) for i in range(3)]
    assert sorted(p.id for p in first.points) == sorted(p.id for p in second.points) == sorted(ids)

    by_id = {p.id: p for p in first.points}
    assert by_id[point_id(COLL, url)].payload["uri"] == url
    assert set(by_id[point_id(COLL, url)].vectors) == {"image", "caption"}
    text = by_id[point_id(COLL, "note")]
    assert (text.payload["kind"], set(text.vectors)) == ("text", {"caption", "description"})
    segments = [by_id[point_id(COLL, "clip", i)] for i in range(3)]
    assert [s.payload["video_id"] for s in segments] == ["clip"] * 3
    assert [(s.payload["t_start"], s.payload["t_end"]) for s in segments] == [
        (0.0, 5.0),
        (5.0, 10.0),
        (10.0, 12.0),
    ]
    assert all(s.payload["kind"] == "video_segment" for s in segments)
    assert all(s.payload["metadata"] == {"reel": 2} for s in segments)
    # The keyframes travel in the entry for the writer to store: none on the worker's disk.
    for entry in (first, second):
        assert sorted(entry.thumbnails) == sorted(s.payload["thumbnail"] for s in segments)
        for data in entry.thumbnails.values():
            with Image.open(io.BytesIO(data)) as thumb:
                assert thumb.format == "JPEG" and max(thumb.size) <= 256
    assert not (open_settings.data_dir / "thumbnails").exists()

    stream.complete(WRITER_GROUP, [first, second])
    status = stream.jobs.get("job")
    assert status and (status["done"], status["failed"]) == (4, 0)


def test_a_url_to_the_metadata_endpoint_fails_alone(
    root: Path, open_settings: Settings, embedder: EmbeddingClient, stream: PointStream, web: str
) -> None:
    image = write_images(root / "ssrf", 1)[0]
    metadata = "http://169.254.169.254/latest/meta-data/"
    entries = [{"uri": metadata}, {"uri": f"{web}/blue.png"}, {"uri": str(image)}]
    outcome = run(entries, embedder=embedder, stream=stream, settings=open_settings)
    assert outcome.sent == [f"{web}/blue.png", str(image)]
    assert [f["item"] for f in outcome.failed] == [metadata]
    assert "link-local" in outcome.failed[0]["reason"]


class NoEmbedder:
    """Fails the test if a task embeds anything."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the embedder was used ({name}) although the stream was full")


def test_a_full_stream_stops_the_task_before_it_embeds(
    root: Path, settings: Settings, stream: PointStream
) -> None:
    for i in range(settings.broker.stream_max_len):
        stream.append(COLL, "other", [f"x{i}"], [])
    image = write_images(root / "full", 1)[0]
    with pytest.raises(ClipsearchError) as caught:
        run([{"uri": str(image)}], embedder=NoEmbedder(), stream=stream, settings=settings)
    assert caught.value.type is ErrorType.overloaded


def test_an_indexer_without_allowed_roots_reads_nothing(
    root: Path, settings: Settings, embedder: EmbeddingClient, stream: PointStream
) -> None:
    image = write_images(root / "roots", 1)[0]
    closed = settings.model_copy(update={"sources": SourcesSettings()})
    outcome = run([{"uri": str(image)}], embedder=embedder, stream=stream, settings=closed)
    assert outcome.sent == []
    assert "CLIPSEARCH_SOURCES__ALLOWED_ROOTS" in outcome.failed[0]["reason"]


def test_celery_app_settings(settings: Settings) -> None:
    app = celery_app.make_celery(settings, indexer_resources(settings))
    conf = app.conf
    assert (conf.task_acks_late, conf.task_reject_on_worker_lost) == (True, True)
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_default_queue == INDEX_QUEUE
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    options = conf.broker_transport_options
    assert options["visibility_timeout"] == settings.broker.visibility_timeout_s
    assert options["unacked_restore_interval"] == settings.broker.restore_interval_s
    assert options["unacked_restore_throttle"] == 1
    assert INDEX_BATCH in app.tasks
    # Without resources: an app for control commands (the container probe's ping), no tasks.
    assert INDEX_BATCH not in celery_app.make_celery(settings).tasks
    with pytest.raises(ClipsearchError):
        celery_app.make_celery(Settings(broker=BrokerSettings()))


def test_malformed_entries_fail_by_name_not_the_batch(
    root: Path, settings: Settings, embedder: EmbeddingClient, stream: PointStream
) -> None:
    image = write_images(root / "malformed", 1)[0]
    entries: list[Any] = ["just a string", {"uri": str(image), "caption": 7}, {"id": "no-uri"}]
    outcome = run(entries, embedder=embedder, stream=stream, settings=settings)
    assert outcome.sent == []
    assert [f["item"] for f in outcome.failed] == ["'just a string'", str(image), "no-uri"]


def test_a_task_that_gives_up_reports_its_items_failed(settings: Settings, root: Path) -> None:
    broken = settings.model_copy(update={"bundle": "no-such-bundle"})
    app = celery_app.make_celery(broken, indexer_resources(broken))
    app.conf.task_always_eager = True
    stream = PointStream(settings.broker.url or "", settings.broker)
    try:
        stream.redis.flushdb()
        image = write_images(root / "give-up", 1)[0]
        with pytest.raises(ClipsearchError) as caught:
            app.tasks[INDEX_BATCH].apply(args=["job", COLL, [{"uri": str(image)}]], throw=True)
        assert caught.value.type is ErrorType.bundle_invalid
        stream.ensure_group(COLL)
        (entry,) = stream.read([COLL], WRITER_GROUP, "w", count=10, block_ms=100)
        assert entry.items == [] and entry.points == []
        # With its task entry, so that retry-failed can send it again as it was.
        assert entry.failed == [
            {"item": str(image), "reason": caught.value.message, "entry": {"uri": str(image)}}
        ]
    finally:
        stream.close()
