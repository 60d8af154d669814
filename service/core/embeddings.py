"""Result types of the encoder, shared by the engine, the clients and the worker."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TextEmbeddings:
    """One text forward, two spaces: ``joint`` (CLIP space, searched against ``image`` and
    ``caption``) and ``sentence`` (the description space). Rows are L2-normalised float32."""

    joint: np.ndarray
    sentence: np.ndarray
    tokens: np.ndarray | None = None  # int32 token count per text, where known


@dataclass(frozen=True)
class Label:
    """A class the image tower sees in an image: its name, probability and broader terms (most
    specific first), from the bundle's ``labels.json``."""

    name: str
    score: float
    broader: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImageEmbedding:
    """One image forward: ``joint`` (the ``image`` vector, searched by text queries), and where
    the bundle has them ``visual`` (image→image search) and ``labels`` (best first). Vectors are
    L2-normalised float32."""

    joint: np.ndarray
    visual: np.ndarray | None = None
    labels: tuple[Label, ...] = ()


@dataclass(frozen=True)
class EncoderInfo:
    bundle: str  # name@version
    provider: str
    spaces: dict[str, int]
    trained: bool
    max_text_tokens: int
    # Lane limits, token budget, slice length: what the serving batcher runs with.
    batching: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EncoderHealth:
    """Whether the encoder can serve, and if not, why (shown by ``/health/ready``)."""

    ready: bool
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
