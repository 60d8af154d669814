"""``EmbeddingClient`` over an in-process :class:`EncoderEngine` (the embedded default).

Calls go through the :class:`Batcher`, so search queries (``interactive``) overtake ingestion
(``bulk``) exactly as they do on a gRPC worker.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from service.clients.base import EncoderHealth, EncoderInfo, ImageEmbedding, TextEmbeddings
from service.core.bundle.tokenize import TokenCounter
from service.core.domain import Lane
from service.core.errors import ClipsearchError, ErrorType
from service.encoder.batcher import Batcher
from service.encoder.engine import EncoderEngine

logger = logging.getLogger(__name__)


class InProcessEmbeddingClient:
    """Implements :class:`service.clients.base.EmbeddingClient` with a local engine."""

    def __init__(self, engine: EncoderEngine, *, batcher: Batcher | None = None) -> None:
        self.engine = engine
        self.batcher = batcher or Batcher(engine)
        self._closed = False
        self._counter: TokenCounter | None = None

    def warmup(self) -> None:
        """Run the engine's warm-up inference; :meth:`ready` turns true once it succeeds."""
        self.engine.warmup()

    def info(self) -> EncoderInfo:
        return replace(self.engine.info(), batching=self.batcher.batching_info())

    def embed_texts(self, texts: Sequence[str], *, lane: Lane = "interactive") -> TextEmbeddings:
        self._check_open()
        return self.batcher.embed_texts(texts, lane=lane)

    def embed_images(
        self, images: Sequence[bytes], *, lane: Lane = "interactive"
    ) -> list[np.ndarray | ClipsearchError]:
        self._check_open()
        return self.batcher.embed_images(images, lane=lane)

    def encode_images(
        self, images: Sequence[bytes], *, lane: Lane = "interactive"
    ) -> list[ImageEmbedding | ClipsearchError]:
        self._check_open()
        return self.batcher.encode_images(images, lane=lane)

    def count_tokens(self, text: str) -> int:
        """Tokens the text tower reads for ``text``, untruncated, with the engine's own
        tokenizer file: long captions are chunked exactly (``service.items.points``)."""
        if self._counter is None:  # two threads may both load it: the same, harmlessly
            bundle = self.engine.bundle
            self._counter = TokenCounter(bundle.path(bundle.manifest.text_tower.tokenizer))
        return self._counter(text)

    def ready(self) -> bool:
        return self.health().ready

    def health(self) -> EncoderHealth:
        if self._closed:
            return EncoderHealth(False, "the embedding client is closed")
        return self.batcher.health()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.batcher.close()
        self.engine.close()
        logger.info("in-process embedding client closed")

    def _check_open(self) -> None:
        if self._closed:
            raise ClipsearchError(ErrorType.unavailable, "the embedding client is closed")
