"""``EmbeddingClient`` over in-process engines (the embedded default).

Calls go through each bundle's :class:`Batcher`, so search queries (``interactive``) overtake
ingestion (``bulk``) exactly as they do on a gRPC worker. Several bundles may be served at once
(:class:`BundleRegistry`); a call's optional ``bundle`` (``name@version``) picks one, none picks
the default, an unknown one is ``not_found`` naming the bundles served.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import numpy as np

from service.clients.base import EncoderHealth, EncoderInfo, ImageEmbedding, TextEmbeddings
from service.core.bundle.manifest import Bundle
from service.core.bundle.tokenize import TokenCounter
from service.core.domain import Lane
from service.core.embeddings import ServedBundle
from service.core.errors import ClipsearchError, ErrorType
from service.encoder.batcher import Batcher
from service.encoder.engine import EncoderEngine
from service.encoder.registry import BundleRegistry, Served

logger = logging.getLogger(__name__)


class InProcessEmbeddingClient:
    """Implements :class:`service.clients.base.EmbeddingClient` with local engines.

    ``InProcessEmbeddingClient(engine)`` serves one bundle as before; pass ``registry`` to serve
    several (its default answers calls that name no bundle)."""

    def __init__(
        self,
        engine: EncoderEngine | None = None,
        *,
        batcher: Batcher | None = None,
        registry: BundleRegistry | None = None,
    ) -> None:
        if registry is None:
            if engine is None:
                raise TypeError("InProcessEmbeddingClient needs an engine or a registry")
            registry = BundleRegistry.of(engine, batcher=batcher)
        elif engine is not None or batcher is not None:
            raise TypeError("pass either an engine (and batcher) or a registry, not both")
        self.registry = registry
        self._closed = False
        self._counters: dict[str, TokenCounter] = {}
        self._counters_lock = threading.Lock()

    @property
    def engine(self) -> EncoderEngine:
        """The default bundle's engine."""
        return self.registry.default.engine

    @property
    def batcher(self) -> Batcher:
        """The default bundle's batcher (its ``metrics.registry`` holds every bundle's)."""
        return self.registry.default.batcher

    def warmup(self) -> None:
        """Run each engine's warm-up inference; :meth:`ready` turns true once they succeed."""
        self.registry.warmup()

    def info(self, *, bundle: str | None = None) -> EncoderInfo:
        return self.registry.info(bundle)

    def bundles(self) -> tuple[ServedBundle, ...]:
        """Every bundle served, default first."""
        return self.registry.describe()

    def embed_texts(
        self, texts: Sequence[str], *, lane: Lane = "interactive", bundle: str | None = None
    ) -> TextEmbeddings:
        return self._served(bundle).batcher.embed_texts(texts, lane=lane)

    def embed_images(
        self, images: Sequence[bytes], *, lane: Lane = "interactive", bundle: str | None = None
    ) -> list[np.ndarray | ClipsearchError]:
        return self._served(bundle).batcher.embed_images(images, lane=lane)

    def encode_images(
        self, images: Sequence[bytes], *, lane: Lane = "interactive", bundle: str | None = None
    ) -> list[ImageEmbedding | ClipsearchError]:
        return self._served(bundle).batcher.encode_images(images, lane=lane)

    def count_tokens(self, text: str, *, bundle: str | None = None) -> int:
        """Tokens the text tower reads for ``text``, untruncated, with the bundle's own
        tokenizer file: long captions are chunked exactly (``service.items.points``)."""
        served = self.registry.get(bundle)
        counter = self._counters.get(served.ref)
        if counter is None:
            b = served.engine.bundle
            counter = TokenCounter(b.path(b.manifest.text_tower.tokenizer))
            with self._counters_lock:
                counter = self._counters.setdefault(served.ref, counter)
        return counter(text)

    # -- bundles at run time ---------------------------------------------------------------

    def add_bundle(self, bundle: Bundle, *, default: bool = False) -> ServedBundle:
        """Load, warm up and serve ``bundle`` beside the others (calls to them go on)."""
        self._check_open()
        served = self.registry.load(bundle, default=default)
        return served.engine.describe(default=default)

    def drop_bundle(
        self, bundle: str, *, grace_s: float | None = None, runtime_only: bool = False
    ) -> None:
        """Stop serving ``bundle`` (``name@version``) once its queued work is done;
        ``runtime_only``: only if :meth:`add_bundle` loaded it (``conflict`` for a configured
        one)."""
        self.registry.drop(bundle, grace_s=grace_s, runtime_only=runtime_only)
        with self._counters_lock:
            self._counters.pop(bundle, None)

    # -- state -----------------------------------------------------------------------------

    def ready(self) -> bool:
        return self.health().ready

    def health(self) -> EncoderHealth:
        if self._closed:
            return EncoderHealth(False, "the embedding client is closed")
        return self.registry.health()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.registry.close()
        logger.info("in-process embedding client closed")

    def _served(self, bundle: str | None) -> Served:
        self._check_open()
        return self.registry.get(bundle)

    def _check_open(self) -> None:
        if self._closed:
            raise ClipsearchError(ErrorType.unavailable, "the embedding client is closed")
