"""The dynamic batcher in front of an :class:`EncoderEngine`: one scheduler per tower.

Stages (the engine's pre / core / post split):

* preprocess — a search query (``interactive``) is decoded or tokenized on its caller's thread
  at admission: the caller would only wait otherwise, callers work in parallel, and a bad text
  is refused before it takes a queue slot (text-embeddings-inference tokenizes before its queue
  for the same reason). Ingestion (``bulk``) items are decoded and tokenized by preprocess
  threads at a low OS priority, a bounded number ahead of the core, so the next batch is ready
  while this one runs and a reindex never takes CPU from a query;
* core — one thread per tower runs ONNX Runtime, the only stage that touches the accelerator;
  text batches are packed by token budget and padded to their longest item, not to the model
  maximum;
* postprocess — normalise and split each batch back into its requests, on the core thread
  (microseconds; a separate thread would add two wake-ups to every request).

Backpressure: each lane of each tower admits at most ``max_queue`` items; beyond that a request is
refused at once with ``overloaded`` (429 / RESOURCE_EXHAUSTED), before any work. A cancelled or
timed-out request's items are dropped before inference. A watchdog flips readiness when a core
stage hangs, and re-probes a failed tower until it works again.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any, get_args

import numpy as np
from PIL import Image

from service.core.config import EncoderSettings
from service.core.domain import Lane
from service.core.embeddings import EncoderHealth, ImageEmbedding, TextEmbeddings
from service.core.errors import ClipsearchError, ErrorType, invalid
from service.encoder.engine import EncoderEngine, ImageResult, TokenizedText
from service.encoder.metrics import BundleMetrics, EncoderMetrics
from service.encoder.requests import Pending, Request
from service.encoder.tower import TowerScheduler
from service.encoder.units import LANES, Batch, Item, SearchTraffic

log = logging.getLogger(__name__)

assert get_args(Lane) == LANES


def check_lane(lane: str) -> Lane:
    if lane not in LANES:
        raise invalid(f"unknown lane {lane!r}; expected one of {', '.join(LANES)}")
    return lane  # type: ignore[return-value]


def _texts_result(request: Request) -> TextEmbeddings:
    for value in request.results:
        if isinstance(value, ClipsearchError):
            raise value
    joint, sentence, tokens = zip(*request.results, strict=True)
    return TextEmbeddings(
        joint=np.stack(joint), sentence=np.stack(sentence), tokens=np.asarray(tokens, np.int32)
    )


def _images_result(request: Request) -> list[ImageEmbedding | ClipsearchError]:
    return list(request.results)


class Batcher:
    """Routes requests of both lanes to one engine (one bundle), interactive first, in batches."""

    def __init__(
        self,
        engine: EncoderEngine,
        settings: EncoderSettings | None = None,
        *,
        metrics: EncoderMetrics | BundleMetrics | None = None,
        traffic: SearchTraffic | None = None,
    ) -> None:
        """``traffic``: shared by the batchers of every bundle one encoder serves, so a search
        query to any bundle slices every bundle's bulk batches (see :mod:`.tower`)."""
        self.engine = engine
        self.settings = settings or engine.settings.encoder
        self.bundle = engine.bundle.manifest.ref
        # Every series is labelled with the bundle: several batchers share one registry.
        if not isinstance(metrics, BundleMetrics):
            metrics = (metrics or EncoderMetrics()).for_bundle(self.bundle)
        self.metrics = metrics
        # One CPU is left to the core stage: bulk decoding that takes both cores of a small
        # machine slows every search query (the image p99 ratio of `make bench-encoder`).
        threads = self.settings.preprocess_threads or max(
            1, min(4, len(os.sched_getaffinity(0)) - 1)
        )
        self.towers = {
            "text": TowerScheduler(
                "text",
                self.settings,
                self.metrics,
                forward=self._forward_texts,
                emit=self._postprocess,
                prepare=self._tokenize_one,
                prepare_threads=1,  # tokenizing is cheap: one low-priority thread for bulk
                token_cost=True,
                traffic=traffic,
            ),
            "image": TowerScheduler(
                "image",
                self.settings,
                self.metrics,
                forward=lambda inputs, lane: engine.forward_images(np.stack(inputs), lane),
                emit=self._postprocess,
                prepare=engine.preprocess_image,
                prepare_threads=threads,
                traffic=traffic,
            ),
        }
        for name, tower in self.towers.items():
            self.metrics.track_tower(name, engine.provider, tower.depth, LANES)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._watchdog, name="encoder-watchdog", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -- submission ------------------------------------------------------------------------

    def _deadline(self, deadline: float | None) -> float:
        default = time.monotonic() + self.settings.request_timeout_s
        return default if deadline is None else deadline

    def submit_texts(
        self, texts: Sequence[str], *, lane: Lane = "interactive", deadline: float | None = None
    ) -> Pending[TextEmbeddings]:
        lane = check_lane(lane)
        checked = self.engine.validate_texts(texts)
        tower = self.towers["text"]
        request = Request("text", lane, len(checked), self._deadline(deadline))
        pending = Pending(request, _texts_result)
        if not checked:
            request.fail(invalid("no texts to embed"))  # never reached by the clients' []
            return pending
        tower.admit(lane, len(checked))
        if lane == "bulk":  # tokenized by the bulk preprocess thread, at low priority
            tower.enqueue([Item(request, i, (i, t)) for i, t in enumerate(checked)], prepared=False)
            return pending
        t0 = time.perf_counter()
        try:
            tokenized = self.engine.tokenize_texts(checked)
        except BaseException:
            tower.release(lane, len(checked))
            raise
        each = (time.perf_counter() - t0) / len(tokenized)
        items = [
            Item(request, i, t, prepared=t, length=t.length, prep_s=each)
            for i, t in enumerate(tokenized)
        ]
        tower.enqueue(items, prepared=True)
        return pending

    def submit_images(
        self, images: Sequence[bytes], *, lane: Lane = "interactive", deadline: float | None = None
    ) -> Pending[list[ImageEmbedding | ClipsearchError]]:
        lane = check_lane(lane)
        tower = self.towers["image"]
        request = Request("image", lane, len(images), self._deadline(deadline))
        pending = Pending(request, _images_result)
        if not images:
            return pending  # a request of no items is finished at birth
        tower.admit(lane, len(images))
        items = [Item(request, i, data) for i, data in enumerate(images)]
        if lane == "bulk":
            tower.enqueue(items, prepared=False)  # decoded by the bulk preprocess threads
            return pending
        # A search query's image is decoded on its caller's thread: the caller would only wait
        # otherwise, callers decode in parallel, and the query skips a thread hand-off.
        ready = []
        for item in items:
            t0 = time.perf_counter()
            try:
                item.prepared = self.engine.preprocess_image(item.payload)
                ready.append(item)
            except Exception as exc:  # its own error, never the request's slots
                error = exc if isinstance(exc, ClipsearchError) else _decoder_bug(exc)
                tower.release(lane, 1)
                request.set_item(item.index, error)  # fails alone
            item.prep_s = time.perf_counter() - t0
        tower.enqueue(ready, prepared=True)
        return pending

    def embed_texts(
        self, texts: Sequence[str], *, lane: Lane = "interactive", timeout_s: float | None = None
    ) -> TextEmbeddings:
        if not texts:
            return self.engine.run_texts([])
        return self.submit_texts(texts, lane=lane, deadline=_after(timeout_s)).result()

    def encode_images(
        self, images: Sequence[bytes], *, lane: Lane = "interactive", timeout_s: float | None = None
    ) -> list[ImageEmbedding | ClipsearchError]:
        return self.submit_images(images, lane=lane, deadline=_after(timeout_s)).result()

    def embed_images(
        self, images: Sequence[bytes], *, lane: Lane = "interactive", timeout_s: float | None = None
    ) -> list[ImageResult]:
        """The joint-space (``image``) vectors alone."""
        results = self.encode_images(images, lane=lane, timeout_s=timeout_s)
        return [r if isinstance(r, ClipsearchError) else r.joint for r in results]

    # -- stages ----------------------------------------------------------------------------

    def _tokenize_one(self, payload: tuple[int, str]) -> TokenizedText:
        index, text = payload
        try:
            [tokens] = self.engine.tokenize_texts([text])
        except ClipsearchError as exc:  # name the text by its place in its own request
            raise invalid(
                f"text {index} contains no tokens the model can read", {"index": index}
            ) from exc
        return tokens

    def _forward_texts(self, items: list[TokenizedText], lane: Lane) -> Any:
        return self.engine.forward_texts(items, lane)

    def _postprocess(self, batch: Batch) -> None:
        """Runs on the core thread right after inference: normalising and splitting a batch
        costs microseconds, far less than the two thread wake-ups a separate stage would add
        to every request (on 2 CPU cores they showed as idle latency in `make bench-encoder`)."""
        # Free the queue slots before waking callers: one that sends its next request at
        # once must find room for it.
        self.towers[batch.tower].release(batch.lane, len(batch.items))
        try:
            self._finish(batch)
        except Exception:  # a bug here must not strand callers: fail the batch's requests
            log.exception("postprocessing failed in the %s tower", batch.tower)
            for item in batch.items:
                item.request.fail(ClipsearchError(ErrorType.internal, "postprocessing failed"))

    def _finish(self, batch: Batch) -> None:
        t0 = time.monotonic()
        n = len(batch.items)
        if batch.tower == "text":
            joint, sentence = batch.outputs
            out = self.engine.finish_texts(joint, sentence, n)
            for row, item in enumerate(batch.items):
                value = (out.joint[row], out.sentence[row], item.length)
                item.request.set_item(item.index, value)
            self.metrics.batch_tokens.labels(batch.lane).observe(batch.cost)
        else:
            embeddings = self.engine.finish_images(batch.outputs, n)
            for row, item in enumerate(batch.items):
                item.request.set_item(item.index, embeddings[row])
        m, tower, lane = self.metrics, batch.tower, batch.lane
        prep = sum(item.prep_s for item in batch.items) / n
        waited = sum(batch.started - item.request.submitted for item in batch.items) / n
        m.batch_size.labels(tower, lane).observe(n)
        m.stage_seconds.labels(tower, lane, "queue").observe(max(0.0, waited - prep))
        m.stage_seconds.labels(tower, lane, "preprocess").observe(prep)
        m.stage_seconds.labels(tower, lane, "inference").observe(batch.ended - batch.started)
        m.stage_seconds.labels(tower, lane, "postprocess").observe(time.monotonic() - t0)
        m.done(tower, lane, n)

    # -- health ----------------------------------------------------------------------------

    def _watchdog(self) -> None:
        interval = min(1.0, self.settings.hang_timeout_s / 4)
        next_probe = 0.0
        while not self._stop.wait(interval):
            now = time.monotonic()
            for tower in self.towers.values():
                tower.check_hang(now)
            failed = [t for t in self.towers.values() if t.failure and not t.crashed]
            if failed and now >= next_probe:
                next_probe = now + self.settings.probe_interval_s
                try:
                    self._probe([t.name for t in failed if t.idle()])
                except ClipsearchError as exc:  # full or closing: try again next interval
                    log.warning("encoder probe not submitted: %s", exc.message)

    def _probe(self, towers: list[str]) -> None:
        """A warm-up item through the failed tower's own core; its success clears the failure."""
        deadline = time.monotonic() + self.settings.hang_timeout_s
        if "text" in towers:
            self.submit_texts(["warm-up"], deadline=deadline)
        if "image" in towers:
            size = self.engine.bundle.manifest.image_tower.image_size
            buf = io.BytesIO()
            Image.new("RGB", (size, size), (127, 127, 127)).save(buf, format="PNG")
            self.submit_images([buf.getvalue()], deadline=deadline)

    def health(self) -> EncoderHealth:
        now = time.monotonic()
        problems = {n: p for n, t in self.towers.items() if (p := t.problem(now))}
        if self._stop.is_set():
            return EncoderHealth(False, "the encoder is closed")
        if not self.engine.ready:
            return EncoderHealth(False, "the encoder has not warmed up")
        if problems:
            return EncoderHealth(False, "; ".join(problems.values()), {"towers": problems})
        return EncoderHealth(True)

    def queue_depth(self, lane: Lane) -> int:
        return sum(t.depth(lane) for t in self.towers.values())

    def batching_info(self) -> dict[str, Any]:
        s = self.settings
        return {
            "interactive": s.interactive.model_dump(),
            "bulk": s.bulk.model_dump(),
            "bulk_slice_ms": s.bulk_slice_ms,
            "max_batch_tokens": s.max_batch_tokens,
        }

    def close(self, *, remove_metrics: bool = False) -> None:
        """Stop the towers (queued requests fail with ``unavailable``); ``remove_metrics`` also
        drops this bundle's series from the shared registry (the bundle is no longer served)."""
        if self._stop.is_set():
            return
        self._stop.set()
        for tower in self.towers.values():
            tower.close()
        for thread in self._threads:
            thread.join(5.0)
        if remove_metrics:
            self.metrics.remove()


def _decoder_bug(exc: Exception) -> ClipsearchError:
    log.error("image preprocessing raised %r", exc, exc_info=exc)
    return ClipsearchError(ErrorType.internal, f"preprocessing failed: {exc}")


def _after(timeout_s: float | None) -> float | None:
    return None if timeout_s is None else time.monotonic() + timeout_s
