"""The one place that picks the VectorStore implementation from the settings."""

from __future__ import annotations

import logging

from service.core.config import Settings
from service.store.base import VectorStore

logger = logging.getLogger(__name__)


def open_store(settings: Settings) -> VectorStore:
    """A Qdrant server when ``qdrant.url`` is set, else the embedded store under ``data_dir``.

    Each implementation is imported only when chosen: qdrant-client is slow to import and the
    embedded default never needs it.
    """
    if settings.qdrant.url:
        from service.store.server import QdrantServerStore

        logger.info("vector store: Qdrant server at %s", settings.qdrant.url)
        return QdrantServerStore.from_settings(settings)

    from service.store.edge import QdrantEdgeStore

    logger.info("vector store: embedded Qdrant Edge under %s", settings.data_dir)
    return QdrantEdgeStore(settings.data_dir)
