"""Planning a Celery job: the worker reads the source, sets the total, fans out batches."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from indexer.distributed.batches import plan_job
from indexer.distributed.stream import PointStream
from service.core.config import BrokerSettings, Settings, SourcesSettings
from tests.indexer.distributed.test_batches import write_images
from tests.redis_server import redis_server


@pytest.fixture()
def setup(tmp_path: Path) -> Iterator[tuple[PointStream, Settings, Path]]:
    root = tmp_path / "src"
    write_images(root / "photos", 5)
    (root / "photos" / "clip.mp4").write_bytes(b"not really a video")
    with redis_server(tmp_path / "redis") as url:
        settings = Settings(
            broker=BrokerSettings(url=url, plan_batch_size=2),
            sources=SourcesSettings(allowed_roots=[root]),
        )
        stream = PointStream(url, settings.broker)
        try:
            yield stream, settings, root
        finally:
            stream.close()


def run(
    stream: PointStream, settings: Settings, source: dict[str, Any]
) -> list[list[dict[str, Any]]]:
    sent: list[list[dict[str, Any]]] = []
    plan_job("job", "media", source, stream=stream, send_batch=sent.append, settings=settings)
    return sent


def test_plan_fans_out_batches_of_every_kind(
    setup: tuple[PointStream, Settings, Path],
) -> None:
    stream, settings, root = setup
    source = {"directory": str(root / "photos")}
    sent = run(stream, settings, source)
    assert [len(b) for b in sent] == [2, 2, 2]
    assert all(e["id"] == e["uri"] for b in sent for e in b)
    assert sorted(e["uri"].rsplit(".", 1)[1] for b in sent for e in b) == ["mp4"] + ["png"] * 5
    status = stream.jobs.get("job")
    assert status is not None
    assert (status["total"], status["done"], status["failed"]) == (6, 0, 0)
    # Planning twice (a redelivered task) sends the same batches and counts nothing twice.
    assert run(stream, settings, source) == sent
    status = stream.jobs.get("job")
    assert status is not None and (status["total"], status["failed"]) == (6, 0)


def test_a_source_outside_the_roots_fails_the_job(
    setup: tuple[PointStream, Settings, Path], tmp_path: Path
) -> None:
    stream, settings, _ = setup
    assert run(stream, settings, {"directory": str(tmp_path)}) == []
    status = stream.jobs.get("job")
    assert status is not None and "outside the allowed roots" in status["error"]


def test_url_and_text_entries_are_sent_to_the_indexers(
    setup: tuple[PointStream, Settings, Path],
) -> None:
    stream, settings, _ = setup
    urls = ["https://example.com/a.png", "https://example.com/b.mp4"]
    assert run(stream, settings, {"urls": urls}) == [[{"uri": u, "id": u} for u in urls]]
    lines = ['{"id": "note", "caption": "a harbour"}']
    assert run(stream, settings, {"manifest_lines": lines}) == [
        [{"uri": None, "id": "note", "caption": "a harbour"}]
    ]
    status = stream.jobs.get("job")
    assert status is not None and (status["total"], status["failed"]) == (1, 0)


def test_an_item_listed_twice_is_one_failure_named_by_its_place(
    setup: tuple[PointStream, Settings, Path],
) -> None:
    """Progress counts each item once (through sets): the repeat is named by its place, not by
    the first one's id, so it is counted failed beside the first (indexed) and done + failed
    reaches the total, with the repeat reported (the rule of ``indexer.sources.datasets``)."""
    stream, settings, _ = setup
    urls = ["https://example.com/a.png", "https://example.com/b.png", "https://example.com/a.png"]
    run(stream, settings, {"urls": urls})
    stream.jobs.count("job", ["https://example.com/a.png", "https://example.com/b.png"])
    status = stream.jobs.get("job")
    assert status is not None
    assert (status["total"], status["done"], status["failed"]) == (3, 2, 1)
    [error] = status["errors"]
    assert error["item"] == "URL 3" and "more than once" in error["reason"], error
