"""Array helpers of the engine's stages: normalisation, chunking, token padding."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from service.core.errors import ClipsearchError

ImageResult = np.ndarray | ClipsearchError


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


@dataclass(frozen=True)
class TokenizedText:
    """A text's token ids, unpadded; ``desc_ids`` for a bundle with its own description model."""

    ids: np.ndarray
    desc_ids: np.ndarray | None = None

    @property
    def length(self) -> int:
        return int(self.ids.shape[0])


def pad_batch(rows: Sequence[np.ndarray | None], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to the longest row (not to the model maximum): ids and attention mask."""
    width = max(0 if r is None else r.shape[0] for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        if row is not None:
            ids[i, : row.shape[0]] = row
            mask[i, : row.shape[0]] = 1
    return ids, mask


def token_counts(items: Sequence[TokenizedText]) -> np.ndarray:
    return np.asarray([it.length for it in items], dtype=np.int32)


def good_items(results: Sequence[ImageResult]) -> tuple[list[int], list[np.ndarray]]:
    """Indices and tensors of the items that preprocessed without error."""
    pairs = [(i, r) for i, r in enumerate(results) if isinstance(r, np.ndarray)]
    return [i for i, _ in pairs], [r for _, r in pairs]
