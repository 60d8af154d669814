"""The inference engine: a bundle's ONNX sessions, preprocessing and postprocessing.

Work is split into stages so that a batcher can run the cheap, parallel parts (validation,
decoding, tokenization) in the caller's thread and only the core ``run_*`` calls under its
scheduling: :meth:`EncoderEngine.preprocess_images` → :meth:`EncoderEngine.run_images`, and
:meth:`EncoderEngine.validate_texts` → :meth:`EncoderEngine.run_texts`. ``embed_*`` chain the
stages for callers that need no scheduling. ONNX Runtime sessions are thread-safe for ``run``,
and nothing here mutates shared state after construction except the readiness flag.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import onnxruntime as ort
from PIL import Image

from service.core.bundle.manifest import Bundle
from service.core.bundle.preprocess import preprocess_image
from service.core.bundle.tokenize import TextTokenizer
from service.core.config import Settings
from service.core.domain import Lane
from service.core.embeddings import EncoderInfo, ImageEmbedding, ServedBundle, TextEmbeddings
from service.core.errors import ClipsearchError, ErrorType, invalid, too_large
from service.encoder.arrays import (
    ImageResult,
    TokenizedText,
    chunks,
    good_items,
    l2_normalize,
    pad_batch,
    token_counts,
)
from service.encoder.image_outputs import ImageOutputs, checked_rows
from service.encoder.session import batch_profile, create_session, on_gpu, run_bound
from service.encoder.units import lower_priority

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

__all__ = [
    "EncoderEngine",
    "ImageResult",
    "TokenizedText",
    "chunks",
    "good_items",
    "l2_normalize",
    "pad_batch",
]


def _check_io(
    session: ort.InferenceSession, name: str, inputs: list[str], outputs: list[str]
) -> None:
    have_in = {i.name for i in session.get_inputs()}
    have_out = {o.name for o in session.get_outputs()}
    missing = [n for n in inputs if n not in have_in] + [n for n in outputs if n not in have_out]
    if missing:
        raise ClipsearchError(
            ErrorType.bundle_invalid,
            f"{name} lacks the inputs/outputs the manifest names: {', '.join(missing)}",
            {"inputs": sorted(have_in), "outputs": sorted(have_out)},
        )


class _BulkRunner:
    """One thread at the bulk OS priority that makes a bulk copy of a session (ONNX Runtime's
    worker threads inherit its priority) and runs every bulk forward on it; the tower's core
    thread waits for each call, so batches stay one at a time as before."""

    def __init__(self, priority: str, make: Callable[[], ort.InferenceSession]) -> None:
        self._pool = ThreadPoolExecutor(
            1,
            thread_name_prefix="bulk-inference",
            initializer=lower_priority,
            initargs=(priority,),
        )
        self.session: ort.InferenceSession = self._pool.submit(make).result()

    def call(self, run: Callable[[], _T]) -> _T:
        return self._pool.submit(run).result()

    def close(self) -> None:
        self._pool.shutdown(wait=False)


class EncoderEngine:
    """Embeds texts and images with one model bundle."""

    def __init__(self, bundle: Bundle, settings: Settings) -> None:
        self.bundle = bundle
        self.settings = settings
        m = bundle.manifest
        enc = settings.encoder
        tt, de = m.text_tower, m.description_embedder

        self._image_outputs = ImageOutputs(bundle)
        self._text_outputs = [tt.output_name]
        if de.source == "text_tower":
            self._text_outputs.append(tt.sentence_output_name or "")
        self._tokenizer = TextTokenizer(
            bundle.path(tt.tokenizer), max_tokens=tt.max_tokens, pad_id=tt.pad_id
        )
        self._desc_tokenizer: TextTokenizer | None = None
        if de.source == "onnx" and de.file and de.tokenizer:
            self._desc_tokenizer = TextTokenizer(
                bundle.path(de.tokenizer), max_tokens=de.max_tokens, pad_id=de.pad_id
            )
        # The image tower's interactive and bulk sessions never run at once: one CPU arena.
        bulk = enc.bulk_sessions and enc.bulk_priority != "normal"
        self._image = self._open_image(shared_arena=bulk)
        self._text, self._desc = self._open_text()
        # Bulk image inference (an ingest's heavy part) at a lower OS priority, on a session of
        # its own: ONNX Runtime's worker threads take their priority from the thread that
        # makes the session (Linux threads inherit it), and the thread that calls run()
        # computes too, so one thread at bulk_priority makes and runs it. A query's text
        # inference and request handling then take the cores from it instead of sharing them.
        # Text stays on one session for both lanes: its bulk batches are short slices that a
        # query may wait behind, and at idle priority they would wait for everything else.
        # CPU only: on a GPU the cores are not the contention.
        self._bulk: _BulkRunner | None = None
        if bulk and not on_gpu(self._image):
            self._bulk = _BulkRunner(enc.bulk_priority, lambda: self._open_image(shared_arena=True))
        self._ready = threading.Event()

    def _open_image(self, *, shared_arena: bool = False) -> ort.InferenceSession:
        it, enc = self.bundle.manifest.image_tower, self.settings.encoder
        size = it.image_size
        image = create_session(
            self.bundle.path(it.file),
            enc,
            batch_profile(enc, {it.input_name: (3, size, size)}),
            shared_arena=shared_arena,
        )
        _check_io(image, it.file, [it.input_name], self._image_outputs.names)
        return image

    def _open_text(self) -> tuple[ort.InferenceSession, ort.InferenceSession | None]:
        """The text tower's session, and the description embedder's where it is a model."""
        m, enc = self.bundle.manifest, self.settings.encoder
        tt, de = m.text_tower, m.description_embedder
        text_inputs = self._feed_names(tt.input_ids_name, tt.attention_mask_name)
        text = create_session(
            self.bundle.path(tt.file),
            enc,
            batch_profile(enc, dict.fromkeys(text_inputs, (tt.max_tokens,))),
        )
        _check_io(text, tt.file, text_inputs, self._text_outputs)
        desc: ort.InferenceSession | None = None
        if de.source == "onnx" and de.file and de.tokenizer:
            desc_inputs = self._feed_names(de.input_ids_name, de.attention_mask_name)
            desc = create_session(
                self.bundle.path(de.file),
                enc,
                batch_profile(enc, dict.fromkeys(desc_inputs, (de.max_tokens,))),
            )
            _check_io(desc, de.file, desc_inputs, [de.output_name])
        return text, desc

    @property
    def bulk_sessions(self) -> bool:
        """Whether bulk image inference runs on its own session at the bulk priority."""
        return self._bulk is not None

    @staticmethod
    def _feed_names(ids: str, mask: str | None) -> list[str]:
        return [ids] + ([mask] if mask else [])

    # -- state ---------------------------------------------------------------------------

    @property
    def provider(self) -> str:
        """The execution provider the image tower runs on (all sessions share the chain)."""
        return str(self._image.get_providers()[0])

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def info(self) -> EncoderInfo:
        m = self.bundle.manifest
        return EncoderInfo(
            bundle=m.ref,
            provider=self.provider,
            spaces=m.spaces.model_dump(exclude_none=True),
            trained=m.trained,
            max_text_tokens=m.text_tower.max_tokens,
        )

    def describe(self, *, default: bool = False) -> ServedBundle:
        """This bundle as an entry of a registry's listing."""
        m = self.bundle.manifest
        return ServedBundle(
            ref=m.ref,
            spaces=m.spaces.model_dump(exclude_none=True),
            trained=m.trained,
            max_text_tokens=m.text_tower.max_tokens,
            provider=self.provider,
            domain=m.card.domain if m.card is not None else None,
            default=default,
            intended_use=(m.card.intended_use or None) if m.card is not None else None,
        )

    def warmup(self) -> None:
        """One text and one image inference end to end; readiness turns true only if both work."""
        size = self.bundle.manifest.image_tower.image_size
        buf = io.BytesIO()
        Image.new("RGB", (size, size), (127, 127, 127)).save(buf, format="PNG")
        self.embed_texts(["warm-up"])
        [result] = self.embed_images([buf.getvalue()])
        if isinstance(result, ClipsearchError):
            raise result
        if self._bulk is not None:  # its session's first run allocates too
            self.forward_images(self.preprocess_image(buf.getvalue())[None], "bulk")
        self._ready.set()
        logger.info("encoder %s warmed up on %s", self.bundle.manifest.ref, self.provider)

    def close(self) -> None:
        self._ready.clear()
        if self._bulk is not None:
            self._bulk.close()

    # -- text ----------------------------------------------------------------------------

    def validate_texts(self, texts: Sequence[str]) -> list[str]:
        limit = self.settings.limits.max_text_chars
        checked: list[str] = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise invalid(f"text {i} is not a string", {"index": i})
            if not text.strip():
                raise invalid(f"text {i} is empty", {"index": i})
            if len(text) > limit:
                raise invalid(
                    f"text {i} has {len(text)} characters; the limit is {limit}",
                    {"index": i, "length": len(text), "max_text_chars": limit},
                )
            checked.append(text)
        return checked

    def tokenize_texts(self, texts: Sequence[str]) -> list[TokenizedText]:
        """Validated texts → their token ids, unpadded (the batcher pads per batch)."""
        tokens = self._tokenizer.encode(texts)
        lengths = tokens.attention_mask.sum(axis=1)
        empty = np.flatnonzero(tokens.content_tokens == 0)
        if empty.size:
            i = int(empty[0])
            raise invalid(f"text {i} contains no tokens the model can read", {"index": i})
        desc: list[np.ndarray | None] = [None] * len(texts)
        if self._desc_tokenizer is not None:
            d_tokens = self._desc_tokenizer.encode(texts)
            d_len = d_tokens.attention_mask.sum(axis=1)
            desc = [d_tokens.input_ids[i, : d_len[i]] for i in range(len(texts))]
        return [
            TokenizedText(ids=tokens.input_ids[i, : lengths[i]].copy(), desc_ids=desc[i])
            for i in range(len(texts))
        ]

    def forward_texts(
        self, items: Sequence[TokenizedText], lane: Lane = "interactive"
    ) -> tuple[np.ndarray, np.ndarray]:
        """The core stage: one forward, padded to the longest item → raw (joint, sentence).
        Both lanes run on the same sessions (``lane`` is the tower's, for the image tower)."""
        m = self.bundle.manifest
        tt, de = m.text_tower, m.description_embedder
        ids, mask = pad_batch([it.ids for it in items], tt.pad_id)
        feeds = {tt.input_ids_name: ids}
        if tt.attention_mask_name:
            feeds[tt.attention_mask_name] = mask
        outputs = self._run(self._text, tt.file, self._text_outputs, feeds)
        if self._desc is None:
            return outputs[0], outputs[1]
        d_ids, d_mask = pad_batch([it.desc_ids for it in items], de.pad_id)
        d_feeds = {de.input_ids_name: d_ids}
        if de.attention_mask_name:
            d_feeds[de.attention_mask_name] = d_mask
        [sentence] = self._run(self._desc, de.file or "", [de.output_name], d_feeds)
        return outputs[0], sentence

    def finish_texts(self, joint: np.ndarray, sentence: np.ndarray, n: int) -> TextEmbeddings:
        """The postprocess stage: shape check and L2 normalisation."""
        m = self.bundle.manifest
        return TextEmbeddings(
            joint=self._postprocess(joint, n, m.spaces.caption, m.text_tower.file),
            sentence=self._postprocess(sentence, n, m.spaces.description, "description"),
        )

    def run_texts(self, texts: Sequence[str]) -> TextEmbeddings:
        """All three stages for already validated texts (the caller keeps batches small)."""
        m = self.bundle.manifest
        if not texts:
            return TextEmbeddings(
                joint=np.zeros((0, m.spaces.caption), np.float32),
                sentence=np.zeros((0, m.spaces.description), np.float32),
                tokens=np.zeros(0, np.int32),
            )
        items = self.tokenize_texts(texts)
        out = self.finish_texts(*self.forward_texts(items), len(items))
        return TextEmbeddings(out.joint, out.sentence, token_counts(items))

    def embed_texts(self, texts: Sequence[str]) -> TextEmbeddings:
        texts = self.validate_texts(texts)
        parts = [
            self.run_texts(texts[s])
            for s in chunks(len(texts), self.settings.encoder.bulk.max_batch_size)
        ]
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return self.run_texts([])
        return TextEmbeddings(
            joint=np.concatenate([p.joint for p in parts]),
            sentence=np.concatenate([p.sentence for p in parts]),
            tokens=np.concatenate([p.tokens for p in parts if p.tokens is not None]),
        )

    # -- images --------------------------------------------------------------------------

    def preprocess_images(self, images: Sequence[bytes]) -> list[ImageResult]:
        """Decode each image to its model input, or to its own error."""
        results: list[ImageResult] = []
        for data in images:
            try:
                results.append(self.preprocess_image(data))
            except ClipsearchError as exc:
                results.append(exc)
        return results

    def preprocess_image(self, data: object) -> np.ndarray:
        """One encoded image → its model input; raises its own ClipsearchError."""
        limits = self.settings.limits
        if not isinstance(data, bytes | bytearray | memoryview):
            raise invalid("image is not bytes")
        if len(data) > limits.max_upload_bytes:
            raise too_large(f"image is {len(data)} bytes; the limit is {limits.max_upload_bytes}")
        return preprocess_image(
            bytes(data), self.bundle.manifest.image_tower, limits.max_image_pixels
        )

    def forward_images(self, batch: np.ndarray, lane: Lane = "interactive") -> list[np.ndarray]:
        """The core stage: [n, 3, S, S] model inputs → the tower's raw outputs."""
        it = self.bundle.manifest.image_tower
        names, feeds = self._image_outputs.names, {it.input_name: batch}
        if lane == "bulk" and self._bulk is not None:
            bulk = self._bulk
            return bulk.call(lambda: self._run(bulk.session, it.file, names, feeds))
        return self._run(self._image, it.file, names, feeds)

    def finish_images(self, outs: list[np.ndarray], n: int) -> list[ImageEmbedding]:
        """The postprocess stage: shape checks, L2 normalisation, class names."""
        return self._image_outputs.finish(outs, n)

    def run_images(self, batch: np.ndarray) -> list[ImageEmbedding]:
        """[n, 3, S, S] model inputs → one :class:`ImageEmbedding` each."""
        return self.finish_images(self.forward_images(batch), batch.shape[0])

    def encode_images(self, images: Sequence[bytes]) -> list[ImageEmbedding | ClipsearchError]:
        """Each encoded image → its :class:`ImageEmbedding`, or its own error."""
        prepared = self.preprocess_images(images)
        done: dict[int, ImageEmbedding] = {}
        idx_all, tensors = good_items(prepared)
        for s in chunks(len(idx_all), self.settings.encoder.bulk.max_batch_size):
            done.update(zip(idx_all[s], self.run_images(np.stack(tensors[s])), strict=True))
        return [r if isinstance(r, ClipsearchError) else done[i] for i, r in enumerate(prepared)]

    def embed_images(self, images: Sequence[bytes]) -> list[ImageResult]:
        """Each encoded image → its joint-space (``image``) vector, or its own error."""
        return [
            r if isinstance(r, ClipsearchError) else r.joint for r in self.encode_images(images)
        ]

    # -- internals -----------------------------------------------------------------------

    def _run(
        self, session: ort.InferenceSession, name: str, outputs: list[str], feeds: dict[str, Any]
    ) -> list[np.ndarray]:
        try:
            if self.settings.encoder.io_binding and on_gpu(session):
                return run_bound(session, outputs, feeds)
            return [np.asarray(o) for o in session.run(outputs, feeds)]
        except Exception as exc:  # onnxruntime's own exception types
            logger.exception("inference failed in %s", name)
            raise ClipsearchError(ErrorType.internal, f"inference failed in {name}: {exc}") from exc

    @staticmethod
    def _postprocess(out: np.ndarray, n: int, dim: int, name: str) -> np.ndarray:
        return checked_rows(out, n, dim, name)
