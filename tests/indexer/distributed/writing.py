"""What the writer tests share: the collection, its vectors, starting a writer, a job's counts
(the fixtures are in this folder's conftest.py)."""

from __future__ import annotations

from typing import Any

from indexer.distributed.stream import PointStream
from indexer.distributed.writer import Writer
from service.core.config import Settings

COLL = "media"
DIMS: dict[str, int] = {"image": 8, "caption": 8, "description": 4}
TIMEOUT_S = 60.0


def start(writers: list[Writer], store: Any, settings: Settings, **kw: Any) -> Writer:
    assert settings.broker.url
    w = Writer(settings.broker.url, store, settings, **kw)
    writers.append(w)
    return w


def progress(stream: PointStream, job: str = "job") -> dict[str, Any]:
    return stream.jobs.get(job) or {"total": 0, "done": 0, "failed": 0, "errors": []}
