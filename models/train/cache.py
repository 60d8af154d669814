"""Sentence-embedding cache: the frozen MiniLM runs once per distinct training text.

MiniLM is frozen, so its output for a text never changes during training; embedding each
distinct text once is where the time budget goes (long captions are ~60-100 tokens and run at
~50-150 texts/s on two CPU cores). The cache file is keyed by a digest of the texts and of the
encoder's weights, so a rerun with the same seed and settings reuses it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from models.train.minilm import MiniLM, encode_texts
from service.core.tokenize import TextTokenizer

logger = logging.getLogger(__name__)


class TextIndex:
    """Distinct texts, each with a row number in the embedding matrix."""

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


def cached_embeddings(
    model: MiniLM,
    tokenizer: TextTokenizer,
    texts: Sequence[str],
    *,
    cache_dir: Path | None,
    batch_size: int = 64,
) -> np.ndarray:
    """float32 [len(texts), 384]: loaded from ``cache_dir`` when present, else computed."""
    path = None
    if cache_dir is not None:
        key = f"minilm-{model_digest(model)}-{texts_digest(texts)}-{len(texts)}.npy"
        path = Path(cache_dir) / key
        if path.is_file():
            logger.info("text cache hit: %s", path)
            return np.load(path)
    start = time.perf_counter()
    emb = encode_texts(model, tokenizer, texts, batch_size=batch_size)
    elapsed = time.perf_counter() - start
    tokens = int(sum(tokenizer.encode([t]).input_ids.shape[1] for t in texts[:2000]))
    logger.info(
        "embedded %d distinct texts in %.1f s (%.0f texts/s; mean %.1f tokens over a sample)",
        len(texts),
        elapsed,
        len(texts) / max(elapsed, 1e-9),
        tokens / max(min(len(texts), 2000), 1),
    )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, emb)
        tmp.replace(path)
    return emb
