"""Text tokenization with the bundle's HF ``tokenizers`` file.

Truncation and padding are set here, explicitly, from the manifest: whatever a tokenizer.json
carries (some hub files pad to a fixed length, some truncate at 512) must not decide what the
ONNX graph receives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from service.core.errors import ClipsearchError, ErrorType


@dataclass(frozen=True)
class TokenBatch:
    input_ids: np.ndarray  # int64 [batch, seq]
    attention_mask: np.ndarray  # int64 [batch, seq]
    content_tokens: np.ndarray  # int64 [batch]: tokens that are not special ([CLS], [PAD], ...)


class TextTokenizer:
    """Wraps ``tokenizers.Tokenizer``: truncates to ``max_tokens``, pads to the batch's longest."""

    def __init__(self, path: Path, *, max_tokens: int, pad_id: int) -> None:
        tokenizer = _load(path)
        pad_token = tokenizer.id_to_token(pad_id)
        if pad_token is None:
            raise ClipsearchError(
                ErrorType.bundle_invalid,
                f"tokenizer {Path(path).name} has no token with id {pad_id}",
            )
        tokenizer.enable_truncation(max_length=max_tokens)
        tokenizer.enable_padding(direction="right", pad_id=pad_id, pad_token=pad_token)
        self._tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.pad_id = pad_id

    def encode(self, texts: Sequence[str]) -> TokenBatch:
        encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        content = np.asarray(
            [
                sum(
                    m and not s
                    for m, s in zip(e.attention_mask, e.special_tokens_mask, strict=True)
                )
                for e in encodings
            ],
            dtype=np.int64,
        )
        if ids.ndim != 2:  # only for an empty batch
            ids = ids.reshape(len(encodings), 0)
            mask = mask.reshape(len(encodings), 0)
        return TokenBatch(input_ids=ids, attention_mask=mask, content_tokens=content)


class TokenCounter:
    """Counts the tokens of a text as the text tower receives them: special tokens included,
    nothing truncated (a caption chunk is made to fit by this count, so it must see past the
    limit that :class:`TextTokenizer` cuts at)."""

    def __init__(self, path: Path) -> None:
        tokenizer = _load(path)
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer

    def __call__(self, text: str) -> int:
        return len(self._tokenizer.encode(text).ids)


def _load(path: Path) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust side raises plain Exception
        raise ClipsearchError(
            ErrorType.bundle_invalid, f"cannot load tokenizer {Path(path).name}: {exc}"
        ) from exc
