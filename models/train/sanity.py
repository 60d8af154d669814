"""A quick sanity evaluation of a written bundle, through ONNX Runtime and the serving
preprocessing: retrieval on test scenes and CPU throughput. The full report is ``models/eval``;
this only checks that a training run produced something sensible, for TRAINING.md.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from models.data.scenes import generate_split
from models.eval.encoder import BundleEncoder
from models.eval.metrics import recall_at_k

logger = logging.getLogger(__name__)

SHORT_QUERIES = (
    "a red circle",
    "two blue squares",
    "a small green star at the top left",
    "three objects",
    "a yellow hexagon next to a pink cross",
    "an orange diamond on a black background",
    "a striped cyan triangle",
    "the number of objects is five",
)


def _pairwise(images: np.ndarray, right: np.ndarray, wrong: np.ndarray) -> float:
    return float(np.mean(np.sum(images * right, 1) > np.sum(images * wrong, 1)))


def sanity_eval(root: Path, *, n: int = 1000) -> dict[str, Any]:
    encoder = BundleEncoder(root)
    scenes = generate_split("test", n)
    rendered = [s.render(encoder.image_size) for s in scenes]
    images = encoder.embed_images(rendered)
    long_joint, long_sent = encoder.embed_texts([s.captions["long"][0] for s in scenes])
    _, desc_sent = encoder.embed_texts([s.description for s in scenes])
    t2i = long_joint @ images.T
    metrics: dict[str, Any] = {
        "scenes": n,
        "long_t2i_r1": recall_at_k(t2i, 1),
        "long_t2i_r10": recall_at_k(t2i, 10),
        "description_r1": recall_at_k(long_sent @ desc_sent.T, 1),
    }
    counts = encoder.embed_texts([c for _, c in scenes[0].count_captions()])[0]
    guess = np.argmax(images @ counts.T, axis=1) + 1
    metrics["count_acc"] = float(np.mean(guess == np.array([len(s.objects) for s in scenes])))
    for kind, neg_kind in (("short", "attribute"), ("compositional", "relation")):
        pairs = [(i, neg) for i, s in enumerate(scenes) for neg in s.negatives.get(neg_kind, ())]
        rows = np.array([i for i, _ in pairs])
        right = encoder.embed_texts([s.captions[kind][0] for s in scenes])[0][rows]
        wrong = encoder.embed_texts([neg for _, neg in pairs])[0]
        metrics[f"{neg_kind}_pair_acc"] = _pairwise(images[rows], right, wrong)
    metrics.update(throughput(encoder, rendered[:32]))
    return metrics


def throughput(
    encoder: BundleEncoder, images: list[Image.Image], *, repeats: int = 20
) -> dict[str, Any]:
    """Items/s at batch 32 including preprocessing and tokenization (``make bench`` measures
    the serving engine; this is the quick figure for TRAINING.md)."""
    queries = [SHORT_QUERIES[i % len(SHORT_QUERIES)] for i in range(32)]
    result: dict[str, Any] = {}
    for name, run in (
        ("image_per_s", lambda: encoder.embed_images(images)),
        ("text_per_s", lambda: encoder.embed_texts(queries)),
    ):
        run()
        start = time.perf_counter()
        for _ in range(repeats):
            run()
        result[name] = 32 * repeats / (time.perf_counter() - start)
    return result
