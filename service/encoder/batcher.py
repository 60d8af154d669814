"""In-process scheduling in front of the engine: lanes, priority and backpressure.

This is the minimal version of the dynamic batcher; its interface (``embed_texts`` /
``embed_images`` with a ``lane``, ``queue_depth``, ``close``) is the one the full batcher keeps.

* Admission: each lane holds at most ``max_queue`` items in flight. A request that does not fit
  is refused at once with ``overloaded`` (429 / RESOURCE_EXHAUSTED) before any work is done.
* Priority: each tower runs one batch at a time behind a :class:`PriorityGate`. When the tower
  frees up, the oldest waiting ``interactive`` caller goes next; ``bulk`` callers go only when no
  interactive caller waits. Large requests are cut into ``max_batch_size`` chunks and each chunk
  queues again, so a search query waits for at most one bulk chunk.
* Decoding and tokenization run in the caller's thread, outside the gate, so they overlap the
  inference of other callers.

Waiting uses a condition variable: no polling, no sleeps.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import get_args

import numpy as np

from service.core.config import EncoderSettings
from service.core.domain import Lane
from service.core.embeddings import TextEmbeddings
from service.core.errors import ClipsearchError, ErrorType, invalid
from service.encoder.engine import EncoderEngine, ImageResult, chunks, good_items

LANES: tuple[Lane, ...] = get_args(Lane)
RETRY_AFTER_S = 1.0


def _closed() -> ClipsearchError:
    return ClipsearchError(ErrorType.unavailable, "the encoder is shutting down")


def check_lane(lane: str) -> Lane:
    if lane not in LANES:
        raise invalid(f"unknown lane {lane!r}; expected one of {', '.join(LANES)}")
    return lane  # type: ignore[return-value]


class PriorityGate:
    """One holder at a time; interactive waiters before bulk waiters, FIFO within a lane."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._waiting: dict[Lane, deque[object]] = {lane: deque() for lane in LANES}

    def _next(self) -> object | None:
        for lane in LANES:  # "interactive" comes first in Lane
            if self._waiting[lane]:
                return self._waiting[lane][0]
        return None

    def waiting(self, lane: Lane) -> int:
        with self._cond:
            return len(self._waiting[lane])

    @contextmanager
    def hold(self, lane: Lane) -> Iterator[None]:
        ticket = object()
        with self._cond:
            if self._closed:
                raise _closed()
            queue = self._waiting[lane]
            queue.append(ticket)
            try:
                while not self._closed and (self._busy or self._next() is not ticket):
                    self._cond.wait()
            except BaseException:
                queue.remove(ticket)
                self._cond.notify_all()  # someone else may now be at the head
                raise
            queue.remove(ticket)
            if self._closed:
                raise _closed()
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class Batcher:
    """Routes requests of both lanes to one engine, interactive first."""

    def __init__(self, engine: EncoderEngine, settings: EncoderSettings | None = None) -> None:
        self.engine = engine
        self.settings = settings or engine.settings.encoder
        self._gates = {"text": PriorityGate(), "image": PriorityGate()}
        self._lock = threading.Lock()
        self._in_flight: dict[Lane, int] = dict.fromkeys(LANES, 0)
        self._closed = False

    def queue_depth(self, lane: Lane) -> int:
        """Items admitted on ``lane`` and not finished yet."""
        with self._lock:
            return self._in_flight[lane]

    @contextmanager
    def _admit(self, lane: Lane, items: int) -> Iterator[None]:
        with self._lock:
            if self._closed:
                raise _closed()
            held = self._in_flight[lane]
            # An empty lane takes any request, so one large request is never refused forever.
            if held and held + items > self.settings.max_queue:
                raise ClipsearchError(
                    ErrorType.overloaded,
                    f"the {lane} queue is full ({held} items waiting; limit "
                    f"{self.settings.max_queue}); retry later",
                    {"lane": lane, "queued": held, "max_queue": self.settings.max_queue},
                    retry_after_s=RETRY_AFTER_S,
                )
            self._in_flight[lane] = held + items
        try:
            yield
        finally:
            with self._lock:
                self._in_flight[lane] -= items

    def embed_texts(self, texts: Sequence[str], *, lane: Lane = "interactive") -> TextEmbeddings:
        lane = check_lane(lane)
        texts = self.engine.validate_texts(texts)
        if not texts:
            return self.engine.run_texts([])
        parts: list[TextEmbeddings] = []
        with self._admit(lane, len(texts)):
            for s in chunks(len(texts), self.settings.max_batch_size):
                with self._gates["text"].hold(lane):
                    parts.append(self.engine.run_texts(texts[s]))
        if len(parts) == 1:
            return parts[0]
        return TextEmbeddings(
            joint=np.concatenate([p.joint for p in parts]),
            sentence=np.concatenate([p.sentence for p in parts]),
        )

    def embed_images(
        self, images: Sequence[bytes], *, lane: Lane = "interactive"
    ) -> list[ImageResult]:
        lane = check_lane(lane)
        with self._admit(lane, len(images)):
            results = self.engine.preprocess_images(images)
            idx_all, tensors = good_items(results)
            for s in chunks(len(idx_all), self.settings.max_batch_size):
                idx = idx_all[s]
                batch = np.stack(tensors[s])
                with self._gates["image"].hold(lane):
                    vectors = self.engine.run_images(batch)
                for i, vec in zip(idx, vectors, strict=True):
                    results[i] = vec
        return results

    def close(self) -> None:
        with self._lock:
            self._closed = True
        for gate in self._gates.values():
            gate.close()
