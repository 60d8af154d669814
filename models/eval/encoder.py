"""ONNX Runtime sessions for one bundle, on CPU, for offline evaluation.

``models/`` may not import the serving engine (``service.encoder``), so this is a small
evaluation-only twin of it built on the same ``service.core`` preprocessing and tokenization:
images go through :func:`image_to_tensor`, texts through :class:`TextTokenizer`, and every output
is L2-normalised, exactly as the server embeds them. It adds what an offline pass wants and a
server does not: texts sorted by length before batching (less padding) and timing counters.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from service.core.bundle.manifest import Bundle, load_bundle
from service.core.bundle.preprocess import image_to_tensor
from service.core.bundle.tokenize import TextTokenizer

logger = logging.getLogger(__name__)

BATCH_SIZE = 32


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; an all-zero row stays zero instead of turning into NaN."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class _TextModel:
    """One text graph + its tokenizer; feeds int64 or int32 ids, pads to a static length."""

    def __init__(
        self,
        session: ort.InferenceSession,
        tokenizer: TextTokenizer,
        ids_name: str,
        mask_name: str | None,
    ) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.ids_name = ids_name
        self.mask_name = mask_name
        inputs = {i.name: i for i in session.get_inputs()}
        missing = [n for n in (ids_name, mask_name) if n and n not in inputs]
        if missing:
            raise ValueError(f"text graph lacks the inputs the manifest names: {missing}")
        ids_input = inputs[ids_name]
        seq = ids_input.shape[1] if len(ids_input.shape) == 2 else None
        # Some exports fix the context length (e.g. 77): pad every batch to it.
        self.static_len = seq if isinstance(seq, int) else None
        self.dtype = np.int32 if ids_input.type == "tensor(int32)" else np.int64

    def run(self, texts: Sequence[str], outputs: list[str]) -> list[np.ndarray]:
        tokens = self.tokenizer.encode(texts)
        ids, mask = tokens.input_ids, tokens.attention_mask
        if self.static_len is not None and ids.shape[1] < self.static_len:
            pad = self.static_len - ids.shape[1]
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=self.tokenizer.pad_id)
            mask = np.pad(mask, ((0, 0), (0, pad)), constant_values=0)
        feeds = {self.ids_name: ids.astype(self.dtype)}
        if self.mask_name:
            feeds[self.mask_name] = mask.astype(self.dtype)
        return [np.asarray(o) for o in self.session.run(outputs, feeds)]


class BundleEncoder:
    """Embeds images and texts with a bundle's towers on ONNX Runtime (CPU), in batches of 32.

    ``image_seconds`` / ``text_seconds`` accumulate the time spent in ``embed_images`` /
    ``embed_texts`` (preprocessing + inference), and ``images_embedded`` / ``texts_embedded``
    the item counts, so callers can report throughput.
    """

    def __init__(self, bundle: Bundle | Path, *, batch_size: int = BATCH_SIZE) -> None:
        if not isinstance(bundle, Bundle):
            bundle = load_bundle(Path(bundle))
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.bundle = bundle
        self.batch_size = batch_size
        m = bundle.manifest
        tt, de = m.text_tower, m.description_embedder
        self._image = _session(bundle.path(m.image_tower.file))
        self._text = _TextModel(
            _session(bundle.path(tt.file)),
            TextTokenizer(bundle.path(tt.tokenizer), max_tokens=tt.max_tokens, pad_id=tt.pad_id),
            tt.input_ids_name,
            tt.attention_mask_name,
        )
        self._text_outputs = [tt.output_name]
        self._desc: _TextModel | None = None
        if de.source == "text_tower":
            self._text_outputs.append(tt.sentence_output_name or "")
        elif de.file and de.tokenizer:
            self._desc = _TextModel(
                _session(bundle.path(de.file)),
                TextTokenizer(
                    bundle.path(de.tokenizer), max_tokens=de.max_tokens, pad_id=de.pad_id
                ),
                de.input_ids_name,
                de.attention_mask_name,
            )
        self.image_seconds = 0.0
        self.text_seconds = 0.0
        self.images_embedded = 0
        self.texts_embedded = 0

    @property
    def ref(self) -> str:
        return self.bundle.manifest.ref

    @property
    def image_size(self) -> int:
        return self.bundle.manifest.image_tower.image_size

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """``[n, joint_dim]`` L2-normalised image embeddings."""
        m = self.bundle.manifest
        it = m.image_tower
        start = time.perf_counter()
        parts = [np.zeros((0, m.spaces.image), np.float32)]
        for s in range(0, len(images), self.batch_size):
            batch = np.stack([image_to_tensor(img, it) for img in images[s : s + self.batch_size]])
            [out] = self._image.run([it.output_name], {it.input_name: batch})
            parts.append(_checked(out, batch.shape[0], m.spaces.image, it.file))
        self.image_seconds += time.perf_counter() - start
        self.images_embedded += len(images)
        return np.concatenate(parts)

    def embed_texts(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(joint [n, joint_dim], sentence [n, description_dim])``, both L2-normalised."""
        m = self.bundle.manifest
        start = time.perf_counter()
        joint = np.zeros((len(texts), m.spaces.caption), np.float32)
        sentence = np.zeros((len(texts), m.spaces.description), np.float32)
        # Similar lengths in one batch keep padding (wasted compute) small.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for s in range(0, len(order), self.batch_size):
            idx = order[s : s + self.batch_size]
            batch = [texts[i] for i in idx]
            outs = self._text.run(batch, self._text_outputs)
            joint[idx] = _checked(outs[0], len(idx), m.spaces.caption, "text tower")
            if self._desc is not None:
                outs = [outs[0], *self._desc.run(batch, [m.description_embedder.output_name])]
            sentence[idx] = _checked(outs[1], len(idx), m.spaces.description, "description")
        self.text_seconds += time.perf_counter() - start
        self.texts_embedded += len(texts)
        return joint, sentence


def _checked(out: np.ndarray, n: int, dim: int, name: str) -> np.ndarray:
    out = np.asarray(out)
    if out.shape != (n, dim):
        raise ValueError(f"{name} returned shape {out.shape}; the manifest says ({n}, {dim})")
    if not np.isfinite(out).all():
        raise ValueError(f"{name} returned NaN or infinite values")
    return l2_normalize(out)
