"""Bulk embedding that waits out a busy encoder instead of failing the job.

Interactive queries go first on every encoder (the lanes, and the cross-bundle priority gate),
so under a heavy search load a bulk call can wait past its deadline (``timeout``) or find the
bulk lane full (``overloaded``); a gRPC worker may be restarting (``unavailable``). None of these
says anything about the items: an ingestion job or a rebuild that failed for them would lose
work that a few seconds' wait would have done. The Celery indexers get this from Celery's task
retries (``indexer.distributed.tasks``); the in-process job runner and the rebuild of a reindex
wrap their encoder client in :class:`PatientEmbedder`.

Only ``lane="bulk"`` calls wait, with exponential back-off and jitter, for at most
``encoder.bulk_patience_s`` per call; after that the last error is raised as before. Errors that
name the input (``invalid_input``, ``not_found``, ...) are raised at once.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from service.clients.base import EmbeddingClient, ImageEmbedding, TextEmbeddings
from service.core.domain import Lane
from service.core.errors import ClipsearchError, ErrorType

log = logging.getLogger(__name__)

# The whole call met a condition that passes: a busy or unreachable encoder.
RETRYABLE_TYPES = frozenset({ErrorType.overloaded, ErrorType.unavailable, ErrorType.timeout})
FIRST_WAIT_S = 0.5
MAX_WAIT_S = 10.0

T = TypeVar("T")


class PatientEmbedder:
    """``inner`` with its bulk calls retried while the encoder is busy (see the module doc).
    Everything else (``info``, ``ready``, bundle loading, ...) is ``inner``'s own."""

    def __init__(
        self,
        inner: EmbeddingClient,
        patience_s: float,
        *,
        sleep: Callable[[float], Any] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._patience_s = patience_s
        self._sleep = sleep
        self._clock = clock
        self._lock = threading.Lock()
        self.waits = 0  # how many times a bulk call waited (for tests and logs)

    @property
    def inner(self) -> EmbeddingClient:
        return self._inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def embed_texts(
        self, texts: Sequence[str], *, lane: Lane = "interactive", bundle: str | None = None
    ) -> TextEmbeddings:
        return self._call(lane, lambda: self._inner.embed_texts(texts, lane=lane, bundle=bundle))

    def embed_images(
        self, images: Sequence[bytes], *, lane: Lane = "interactive", bundle: str | None = None
    ) -> list[Any]:
        return self._call(lane, lambda: self._inner.embed_images(images, lane=lane, bundle=bundle))

    def encode_images(
        self, images: Sequence[bytes], *, lane: Lane = "interactive", bundle: str | None = None
    ) -> list[ImageEmbedding | ClipsearchError]:
        return self._call(lane, lambda: self._inner.encode_images(images, lane=lane, bundle=bundle))

    def _call(self, lane: Lane, call: Callable[[], T]) -> T:
        if lane != "bulk" or self._patience_s <= 0:
            return call()
        give_up = self._clock() + self._patience_s
        wait = FIRST_WAIT_S
        while True:
            try:
                return call()
            except ClipsearchError as exc:
                pause = wait * random.uniform(0.5, 1.0)
                if exc.type not in RETRYABLE_TYPES or self._clock() + pause > give_up:
                    raise
                with self._lock:
                    self.waits += 1
                log.info("encoder busy (%s): the bulk call waits %.1f s", exc, pause)
                self._sleep(pause)
                wait = min(wait * 2, MAX_WAIT_S)


def patient(inner: EmbeddingClient, patience_s: float) -> EmbeddingClient:
    """``inner`` wrapped once (wrapping a :class:`PatientEmbedder` again returns it)."""
    if isinstance(inner, PatientEmbedder):
        return inner
    return PatientEmbedder(inner, patience_s)  # type: ignore[return-value]
