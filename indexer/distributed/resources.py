"""What one indexer worker process holds for all its tasks: the embedder and the points stream.

Which embedder (the engine in this process, or encoder workers over gRPC) is the composition
root's choice (``clipsearch.bootstrap``): it hands in a factory, called on the first task.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from indexer.distributed.bundles import BundleResolver, TaskBundles
from indexer.distributed.probes import IndexerMetrics
from indexer.distributed.stream import PointStream
from indexer.sources.objects import ReadMetrics
from service.clients.base import EmbeddingClient
from service.core.config import Settings
from service.core.errors import invalid


class IndexerResources:
    """One per worker process: the embedder and the stream, built on the first task (a worker
    that never gets one loads no model) and shared by every task after it."""

    def __init__(
        self,
        settings: Settings,
        embedder_factory: Callable[[], EmbeddingClient],
        resolve_bundle: BundleResolver | None = None,
    ) -> None:
        """``resolve_bundle``: loads the bundle a task's spec names (a rollout's, see
        ``indexer.distributed.bundles``); without it the indexer serves its own bundles only."""
        self.settings = settings
        self._embedder_factory = embedder_factory
        self._lock = threading.Lock()
        self._embedder: EmbeddingClient | None = None
        self._stream: PointStream | None = None
        self.metrics = IndexerMetrics()
        # Dataset units and bytes this indexer read, on its probe port's /metrics too.
        self.read_metrics = ReadMetrics(self.metrics.registry)
        self.bundles = TaskBundles(self.embedder, resolve_bundle)

    def embedder(self) -> EmbeddingClient:
        with self._lock:
            if self._embedder is None:
                self._embedder = self._embedder_factory()
            return self._embedder

    def stream(self) -> PointStream:
        with self._lock:
            if self._stream is None:
                if not self.settings.broker.url:
                    raise invalid("the indexer needs a broker: set CLIPSEARCH_BROKER__URL")
                self._stream = PointStream(self.settings.broker.url, self.settings.broker)
            return self._stream

    def close(self) -> None:
        with self._lock:
            if self._embedder is not None:
                self._embedder.close()
            if self._stream is not None:
                self._stream.close()
            self._embedder = self._stream = None
