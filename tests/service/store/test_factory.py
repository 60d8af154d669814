"""open_store picks the implementation from the settings alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from service.core.config import QdrantSettings, Settings
from service.core.errors import ClipsearchError
from service.store.base import VectorStore
from service.store.edge import QdrantEdgeStore
from service.store.factory import open_store
from service.store.server import QdrantServerStore


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CLIPSEARCH_QDRANT__URL", "CLIPSEARCH_QDRANT__API_KEY", "CLIPSEARCH_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)


def test_without_a_url_the_store_is_embedded(tmp_path: Path):
    store = open_store(Settings(data_dir=tmp_path))
    try:
        assert isinstance(store.inner, QdrantEdgeStore)
        assert isinstance(store, VectorStore)
        assert (tmp_path / "collections" / ".lock").is_file()
    finally:
        store.close()


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
def test_with_a_url_the_store_is_a_qdrant_server(tmp_path: Path):
    # Nothing listens there: building the store must not connect (qdrant-client is lazy).
    qdrant = QdrantSettings(url="http://127.0.0.1:9", api_key=SecretStr("k"), timeout_s=2.5)
    store = open_store(Settings(data_dir=tmp_path, qdrant=qdrant))
    try:
        assert isinstance(store.inner, QdrantServerStore)
        assert isinstance(store, VectorStore)
        assert not (tmp_path / "collections").exists()
    finally:
        store.close()


def test_an_unreachable_server_is_unavailable_not_internal(tmp_path: Path):
    qdrant = QdrantSettings(url="http://127.0.0.1:9", timeout_s=1)
    store = open_store(Settings(data_dir=tmp_path, qdrant=qdrant))
    try:
        with pytest.raises(ClipsearchError) as err:
            store.collection_exists("media")
        assert err.value.type.value == "unavailable"
    finally:
        store.close()
