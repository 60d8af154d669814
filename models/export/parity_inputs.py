"""Deterministic inputs for parity checks: captions and pixel tensors for a given batch size.

Batch 1 is one short query, batch 8 mixes lengths below the context (so a dynamic sequence axis
is exercised), and batch 32 also holds one text longer than the context (so truncation is).
"""

from __future__ import annotations

import numpy as np

CAPTIONS: tuple[str, ...] = (
    "a photo of a cat",
    "Two dogs playing in the snow.",
    "A red double-decker bus drives past Big Ben in London, England!",
    "close-up of a bowl of ramen with a soft-boiled egg & green onions",
    "an astronaut riding a horse on the moon, digital art",
    "The quick brown fox jumps over the lazy dog; 3 times.",
    "a diagram",
    "people walking along a busy street at night with neon signs reflecting on wet pavement",
    "Café terrace at night — Vincent van Gogh (1888)",
    "a small blue circle above a large yellow square on a grey background",
    "sunset",
    "It's a bird... it's a plane... it's 50% off!",
    "a child's drawing of a house with a tree and a smiling sun",
    "aerial view of a river delta with green fields",
    "\u201cHello world\u201d written on a whiteboard",
    "two people shaking hands in an office",
)


def parity_texts(batch: int, context_length: int) -> list[str]:
    texts = [CAPTIONS[i % len(CAPTIONS)] for i in range(batch)]
    if batch >= 32:
        words = (CAPTIONS[7] + " ").split() * (context_length // 10 + 2)
        texts[-1] = " ".join(words)  # more words than the context has tokens
    return texts


def parity_pixels(batch: int, image_size: int) -> np.ndarray:
    rng = np.random.default_rng(1000 + batch)
    return rng.standard_normal((batch, 3, image_size, image_size)).astype(np.float32)
