"""The one place that picks the VectorStore implementation from the settings."""

from __future__ import annotations

import logging

from service.core.config import Settings
from service.store.versions import VersionedStore

logger = logging.getLogger(__name__)


# How long a process may keep using a Qdrant server's alias list before it reads it again; a
# reindex waits twice this before it relies on every writer dual-writing.
SERVER_ALIAS_TTL_S = 1.0


def open_store(settings: Settings) -> VersionedStore:
    """A Qdrant server when ``qdrant.url`` is set, else the embedded store under ``data_dir``;
    either behind the versioned-collection layer (aliases, dual writes during a reindex).

    Each implementation is imported only when chosen: qdrant-client is slow to import and the
    embedded default never needs it.
    """
    if settings.qdrant.url:
        from service.store.server import QdrantServerStore

        logger.info("vector store: Qdrant server at %s", settings.qdrant.url)
        server = QdrantServerStore.from_settings(settings)
        return VersionedStore(server, alias_ttl_s=SERVER_ALIAS_TTL_S)

    from service.store.edge import QdrantEdgeStore

    logger.info("vector store: embedded Qdrant Edge under %s", settings.data_dir)
    # One process owns the embedded store, and its alias list lives in memory: no cache.
    return VersionedStore(QdrantEdgeStore(settings.data_dir))
