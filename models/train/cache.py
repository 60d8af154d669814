"""Token-state cache: the frozen MiniLM runs once per distinct training text.

MiniLM is frozen, so its outputs for a text never change during training; running it once per
distinct text is where the time budget goes (long captions are ~75 tokens). The text head reads
every token (its conjunction part pairs neighbouring tokens), so the cache keeps each text's
token states, stored flat in fp16 (the head's input precision does not matter at 1e-3), and the
pooled sentence embedding in fp32. The file is keyed by a digest of the texts and of the
encoder's weights, so a rerun with the same seed and settings reuses it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from models.train.labels import token_labels
from models.train.minilm import MiniLM, tokens_to_torch
from service.core.bundle.tokenize import TextTokenizer

logger = logging.getLogger(__name__)


class TextIndex:
    """Distinct texts, each with a row number in the cache."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self._ids: dict[str, int] = {}

    def add(self, text: str) -> int:
        idx = self._ids.get(text)
        if idx is None:
            idx = self._ids[text] = len(self.texts)
            self.texts.append(text)
        return idx

    def __len__(self) -> int:
        return len(self.texts)


class TextBatch(NamedTuple):
    """Rows padded to the longest: states [b, t, 384] fp32, mask [b, t] fp32, sentence
    [b, 384], and the conjunction labels [b, t] (``labels.NO_LABEL`` where none or padding)."""

    states: torch.Tensor
    mask: torch.Tensor
    sentence: torch.Tensor
    colour: torch.Tensor
    shape: torch.Tensor


@dataclass
class TokenStates:
    flat: np.ndarray  # float16 [tokens, 384], every text's tokens one after the other
    offsets: np.ndarray  # int64 [n + 1]: text i is flat[offsets[i]:offsets[i + 1]]
    sentence: np.ndarray  # float32 [n, 384]
    colour: np.ndarray  # int8 [tokens]
    shape: np.ndarray  # int8 [tokens]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self, rows: np.ndarray) -> np.ndarray:
        return self.offsets[rows + 1] - self.offsets[rows]

    def batch(self, rows: np.ndarray) -> TextBatch:
        n, t = len(rows), int(self.lengths(rows).max())
        states = np.zeros((n, t, self.flat.shape[1]), np.float32)
        mask = np.zeros((n, t), np.float32)
        colour = np.full((n, t), -1, np.int64)
        shape = np.full((n, t), -1, np.int64)
        for i, row in enumerate(rows):
            a, b = self.offsets[row], self.offsets[row + 1]
            states[i, : b - a] = self.flat[a:b]
            mask[i, : b - a] = 1.0
            colour[i, : b - a] = self.colour[a:b]
            shape[i, : b - a] = self.shape[a:b]
        return TextBatch(
            torch.from_numpy(states),
            torch.from_numpy(mask),
            torch.from_numpy(self.sentence[rows]),
            torch.from_numpy(colour),
            torch.from_numpy(shape),
        )


def model_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def texts_digest(texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    return digest.hexdigest()[:16]


@torch.inference_mode()
def encode_token_states(
    model: MiniLM, tokenizer: TextTokenizer, texts: Sequence[str], *, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flat fp16 states, offsets, sentence embeddings); length-sorted batches pad little."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    per_text: list[np.ndarray] = [np.zeros((0, 0), np.float16)] * len(texts)
    sentence = np.zeros((len(texts), model.cfg.hidden), np.float32)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        ids, mask = tokens_to_torch(tokenizer, [texts[i] for i in idx])
        states = model.token_states(ids, mask)
        sentence[idx] = model.pool(states, mask).numpy()
        lengths = mask.sum(dim=1).tolist()
        for j, i in enumerate(idx):
            per_text[i] = states[j, : int(lengths[j])].to(torch.float16).numpy()
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in per_text])]).astype(np.int64)
    flat = np.concatenate(per_text) if texts else np.zeros((0, model.cfg.hidden), np.float16)
    return flat, offsets, sentence


def cached_token_states(
    model: MiniLM, tokenizer: TextTokenizer, texts: Sequence[str], *, cache_dir: Path | None
) -> TokenStates:
    """Token states of ``texts``: loaded from ``cache_dir`` when present, else computed."""
    path = None
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    if cache_dir is not None:
        key = f"minilm-states-{model_digest(model)}-{texts_digest(texts)}-{len(texts)}.npz"
        path = Path(cache_dir) / key
        if path.is_file():
            logger.info("text cache hit: %s", path)
            with np.load(path) as z:
                arrays = (z["flat"], z["offsets"], z["sentence"])
    if arrays is None:
        start = time.perf_counter()
        arrays = encode_token_states(model, tokenizer, texts)
        elapsed = time.perf_counter() - start
        logger.info(
            "embedded %d distinct texts (%d tokens) in %.1f s (%.0f texts/s)",
            len(texts),
            len(arrays[0]),
            elapsed,
            len(texts) / max(elapsed, 1e-9),
        )
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, flat=arrays[0], offsets=arrays[1], sentence=arrays[2])
            tmp.replace(path)
    flat, offsets, sentence = arrays
    labels = token_labels(texts)
    colour = np.concatenate([c for c, _ in labels]) if labels else np.zeros(0, np.int8)
    shape = np.concatenate([s for _, s in labels]) if labels else np.zeros(0, np.int8)
    if len(colour) != len(flat):
        raise RuntimeError(f"labels cover {len(colour)} tokens but the cache has {len(flat)}")
    return TokenStates(flat, offsets, sentence, colour, shape)
