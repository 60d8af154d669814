"""The writer and collections made or deleted while it runs, on a real private Redis and a real
embedded Qdrant Edge store behind the versioned store: it finds a new collection's points stream
by itself, and refuses the entries of a deleted one with the reason (their items fail, their
job completes) without turning unhealthy or holding up the other collections."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from indexer.distributed.stream import PointStream
from indexer.distributed.writer import Writer
from service.core.config import BrokerSettings, Settings
from service.store.edge import QdrantEdgeStore
from service.store.versions import VersionedStore
from tests.indexer.distributed.test_stream import items, points
from tests.indexer.distributed.writing import COLL, DIMS, TIMEOUT_S, progress, start
from tests.support import wait_until

BUNDLE = "tiny-test@0.1.0"


@pytest.fixture()
def settings(redis_url: str) -> Settings:
    # Claim passes (and with them, looking for new collections) every 150 ms.
    broker = BrokerSettings(url=redis_url, writer_block_ms=100, claim_idle_ms=300)
    return Settings(collection=COLL, broker=broker)


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[VersionedStore]:
    s = VersionedStore(QdrantEdgeStore(tmp_path / "data"))
    s.ensure(COLL, DIMS, BUNDLE)  # type: ignore[arg-type]
    yield s
    s.close()


def test_a_collection_created_since_is_found_and_written(
    stream: PointStream,
    store: VersionedStore,
    settings: Settings,
    writers: list[Writer],
) -> None:
    w = start(writers, store, settings, consumer="w1")
    wait_until(w.ready, TIMEOUT_S)
    store.ensure("alpha", DIMS, BUNDLE)  # type: ignore[arg-type]
    ps = points(4, coll="alpha")
    stream.jobs.init_job("job", total=4)
    stream.append("alpha", "job", items(ps), ps)  # no add_collection: the writer looks
    wait_until(lambda: progress(stream)["done"] == 4, TIMEOUT_S)
    assert "alpha" in w.collections
    assert (store.count("alpha"), store.count(COLL)) == (4, 0)


def test_entries_of_a_deleted_collection_fail_with_the_reason(
    stream: PointStream,
    store: VersionedStore,
    settings: Settings,
    writers: list[Writer],
) -> None:
    store.ensure("gone", DIMS, BUNDLE)  # type: ignore[arg-type]
    w = start(writers, store, settings, consumer="w1", collections=[COLL, "gone"])
    wait_until(w.ready, TIMEOUT_S)
    store.remove("gone")
    lost, kept = points(3, coll="gone"), points(5, start=10)
    stream.jobs.init_job("lost", total=3)
    stream.jobs.init_job("kept", total=5)
    stream.append("gone", "lost", items(lost), lost)
    stream.append(COLL, "kept", items(kept), kept)
    wait_until(lambda: progress(stream, "lost")["failed"] == 3, TIMEOUT_S)
    wait_until(lambda: progress(stream, "kept")["done"] == 5, TIMEOUT_S)
    reasons = {e["reason"] for e in progress(stream, "lost")["errors"]}
    assert reasons == {"collection 'gone' does not exist (deleted after the job was submitted)"}
    assert progress(stream, "lost")["done"] == 0
    assert store.count(COLL) == 5
    assert w.health().ready, w.health()
