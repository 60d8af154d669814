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
class ServedBundle:
    """One bundle an encoder serves: what a caller needs to pick it and to size its vectors."""

    ref: str  # name@version, the key callers pass as ``bundle``
    spaces: dict[str, int]
    trained: bool
    max_text_tokens: int
    provider: str = ""
    domain: str | None = None  # the manifest card's domain, where the bundle has a card
    default: bool = False  # used by requests that name no bundle
    intended_use: str | None = None  # the manifest card's intended use, where it states one

    @property
    def name(self) -> str:
        return self.ref.rpartition("@")[0]

    @property
    def version(self) -> str:
        return self.ref.rpartition("@")[2]


@dataclass(frozen=True)
class EncoderInfo:
    bundle: str  # name@version
    provider: str
    spaces: dict[str, int]
    trained: bool
    max_text_tokens: int
    # Lane limits, token budget, slice length: what the serving batcher runs with.
    batching: dict[str, Any] = field(default_factory=dict)
    # Every bundle served (the one above among them), default first; empty from old workers.
    bundles: tuple[ServedBundle, ...] = ()


@dataclass(frozen=True)
class EncoderHealth:
    """Whether the encoder can serve, and if not, why (shown by ``/health/ready``)."""

    ready: bool
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
