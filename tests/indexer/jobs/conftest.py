"""The Celery job queue on a private Redis, without a worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from indexer.distributed.stream import PointStream
from indexer.jobs.celery_queue import CeleryJobQueue
from service.core.config import BrokerSettings, Settings, SourcesSettings
from tests.redis_server import redis_server


@pytest.fixture()
def queue(tmp_path: Path) -> Iterator[tuple[CeleryJobQueue, PointStream, Path]]:
    root = tmp_path / "src"
    (root / "photos").mkdir(parents=True)
    with redis_server(tmp_path / "redis") as url:
        settings = Settings(
            data_dir=tmp_path / "data",
            broker=BrokerSettings(url=url),
            sources=SourcesSettings(allowed_roots=[root]),
        )
        stream = PointStream(url, settings.broker)
        jobs = CeleryJobQueue(settings, PointStream(url, settings.broker))
        try:
            yield jobs, stream, root
        finally:
            jobs.close()
            stream.close()
