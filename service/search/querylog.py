"""A bounded, in-memory log of recent search queries: what a model rollout's comparison replays.

Privacy first: it lives in this process's memory only (never written to disk, gone on restart),
holds at most ``size`` queries, keeps text queries as typed (to replay them against both models)
and an image query only as the sha256 of its bytes (counted, never replayable). Item queries
("more like this") are not kept. ``CLIPSEARCH_ADMIN__QUERY_LOG=0`` turns it off.

:class:`LoggedSearchService` is the gateway's search service with the log in front of it.
"""

from __future__ import annotations

import hashlib
import threading
from collections import deque
from dataclasses import dataclass

from service.clients.base import EmbeddingClient
from service.search.planner import NullCache, Query, SearchOptions, SearchResult, SearchService
from service.store.base import VectorStore


@dataclass(frozen=True)
class LoggedQuery:
    collection: str
    text: str | None = None
    image_sha256: str | None = None


class QueryLog:
    """Thread-safe; the oldest query goes when a new one comes past ``size``."""

    def __init__(self, size: int) -> None:
        self._entries: deque[LoggedQuery] = deque(maxlen=max(1, size))
        self._lock = threading.Lock()

    def record(self, collection: str, query: Query) -> None:
        if query.text is not None:
            entry = LoggedQuery(collection, text=query.text)
        elif query.image is not None:
            entry = LoggedQuery(collection, image_sha256=hashlib.sha256(query.image).hexdigest())
        else:
            return
        with self._lock:
            self._entries.append(entry)

    def recent_texts(self, collection: str, n: int) -> list[str]:
        """Up to ``n`` distinct text queries of ``collection``, most recent first."""
        with self._lock:
            entries = list(self._entries)
        out: dict[str, None] = {}
        for entry in reversed(entries):
            if len(out) >= n:
                break
            if entry.collection == collection and entry.text is not None:
                out.setdefault(entry.text, None)
        return list(out)

    def counts(self, collection: str) -> dict[str, int]:
        """How many text and image queries of ``collection`` the log holds."""
        with self._lock:
            entries = [e for e in self._entries if e.collection == collection]
        return {
            "text": sum(e.text is not None for e in entries),
            "image": sum(e.image_sha256 is not None for e in entries),
        }

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


class LoggedSearchService(SearchService):
    """Logs each query to the collection's alias before searching (a version asked for by a
    rollout's comparison is not a user's query and is not logged)."""

    def __init__(
        self,
        embedder: EmbeddingClient,
        store: VectorStore,
        collection: str,
        *,
        log: QueryLog,
        nulls: NullCache | None = None,
    ) -> None:
        super().__init__(embedder, store, collection, nulls=nulls)
        self.query_log = log

    def search(
        self, query: Query, options: SearchOptions, *, version: str | None = None
    ) -> SearchResult:
        if version is None:
            self.query_log.record(self._collection, query)
        return super().search(query, options, version=version)
