"""Each collection version records the cluster-wide settings it is built with, in the store's
collection metadata, on both adapters: written when a version is created, read back by any
process, kept across a restart of the embedded store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from qdrant_client import QdrantClient

from service.core.config import Settings
from service.core.contract import METADATA_KEY, CollectionSettings
from service.core.domain import VectorName
from service.store.edge import QdrantEdgeStore
from service.store.server import QdrantServerStore
from service.store.versions import VersionedStore

DIMS: dict[VectorName, int] = {"image": 8, "caption": 8, "description": 12}


def recorded(bundle: str, segment_s: float) -> CollectionSettings:
    settings = Settings(video={"segment_s": segment_s})  # type: ignore[arg-type]
    return CollectionSettings.of(settings, bundle=bundle, max_chunks=512)


@pytest.fixture(params=["edge", "server"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VersionedStore]:
    inner = (
        QdrantEdgeStore(tmp_path / "edge")
        if request.param == "edge"
        else QdrantServerStore(QdrantClient(":memory:"))
    )
    versioned = VersionedStore(inner)
    yield versioned
    versioned.close()


def read(store: VersionedStore, collection: str, role: str = "") -> CollectionSettings | None:
    return CollectionSettings.from_metadata(store.metadata_of(collection, role=role)[1])


def test_a_new_collection_records_its_settings_and_a_later_ensure_keeps_them(
    store: VersionedStore,
) -> None:
    first = store.ensure("media", DIMS, "tiny@1", recorded("tiny@1", 10).metadata())
    assert store.metadata_of("media")[0] == first
    assert read(store, "media") == recorded("tiny@1", 10)
    # Another process's ensure (other settings) never overwrites what the version records.
    store.ensure("media", DIMS, "tiny@1", recorded("tiny@1", 5).metadata())
    assert read(store, "media") == recorded("tiny@1", 10)


def test_a_version_that_records_nothing_adopts_the_settings_of_the_first_ensure(
    store: VersionedStore,
) -> None:
    store.ensure("media", DIMS, "tiny@1")  # as before settings were recorded
    assert read(store, "media") is None
    store.inner.set_collection_metadata("media__tiny@1__1", {"owner": "ops"})
    store.ensure("media", DIMS, "tiny@1", recorded("tiny@1", 7).metadata())
    assert read(store, "media") == recorded("tiny@1", 7)
    # Metadata keys of others are merged with, not replaced.
    assert store.collection_metadata("media__tiny@1__1")["owner"] == "ops"


def test_a_reindex_version_records_its_own_settings_and_the_swap_makes_them_current(
    store: VersionedStore,
) -> None:
    store.ensure("media", DIMS, "tiny@1", recorded("tiny@1", 5).metadata())
    nxt = store.begin("media", DIMS, "tiny@1", recorded("tiny@1", 10).metadata())
    assert store.metadata_of("media", role=".next")[0] == nxt
    assert read(store, "media", ".next") == recorded("tiny@1", 10)
    assert read(store, "media") == recorded("tiny@1", 5)
    store.swap("media")
    assert read(store, "media") == recorded("tiny@1", 10)
    assert read(store, "media", ".previous") == recorded("tiny@1", 5)
    store.rollback("media")
    assert read(store, "media") == recorded("tiny@1", 5)
    # GET /v1/collections/{name} shows what each version was built with.
    shown = {v["role"]: v["settings"] for v in store.describe("media")["versions"]}
    assert shown["current"]["video"]["segment_s"] == 5.0
    assert shown["previous"]["video"]["segment_s"] == 10.0


def test_the_embedded_store_keeps_the_record_across_a_restart(tmp_path: Path) -> None:
    store = VersionedStore(QdrantEdgeStore(tmp_path / "edge"))
    store.ensure("media", DIMS, "tiny@1", recorded("tiny@1", 3).metadata())
    store.close()
    again = VersionedStore(QdrantEdgeStore(tmp_path / "edge"))
    try:
        assert read(again, "media") == recorded("tiny@1", 3)
        assert again.vector_dims("media") == DIMS  # the collection file is otherwise intact
        assert METADATA_KEY in again.collection_metadata("media")  # aliases resolve
    finally:
        again.close()
