"""Result types of the encoder, shared by the engine, the clients and the worker."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TextEmbeddings:
    """One text forward, two spaces: ``joint`` (CLIP space, searched against ``image`` and
    ``caption``) and ``sentence`` (the description space). Rows are L2-normalised float32."""

    joint: np.ndarray
    sentence: np.ndarray


@dataclass(frozen=True)
class EncoderInfo:
    bundle: str  # name@version
    provider: str
    spaces: dict[str, int]
    trained: bool
    max_text_tokens: int
