"""Fixtures of the writer tests: a private Redis per module, an embedded store per test, and
the writers a test starts, closed after it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from indexer.distributed.stream import PointStream
from indexer.distributed.writer import Writer
from service.core.config import Settings
from service.store.edge import QdrantEdgeStore
from tests.indexer.distributed.writing import COLL, DIMS
from tests.redis_server import fresh_stream, redis_server


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture()
def stream(settings: Settings) -> Iterator[PointStream]:
    """A fresh points stream on the module's Redis (``settings``: the module's fixture)."""
    with fresh_stream(settings) as s:
        yield s


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[QdrantEdgeStore]:
    s = QdrantEdgeStore(tmp_path / "data")
    s.ensure_collection(COLL, DIMS)  # type: ignore[arg-type]
    yield s
    s.close()


@pytest.fixture()
def writers() -> Iterator[list[Writer]]:
    started: list[Writer] = []
    yield started
    for w in started:
        w.close()
