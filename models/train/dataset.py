"""Training data: rendered scenes as uint8 pixels, and every text as a row of the text index.

Images are rendered at exactly the manifest's ``image_size``, so the serving preprocessing
(:func:`service.core.bundle.preprocess.image_to_tensor`: resize is a no-op, then /255, mean,
std) reduces to :func:`normalise`, which computes the same float32 arithmetic on a whole batch.

Texts are the bottleneck (each distinct one costs a MiniLM forward), so each scene keeps a
seeded subset of its phrasings per kind; across scenes every template still appears. Every scene
also keeps its canonical short caption and all of its attribute negatives, which edit exactly
that caption: the minimal pairs of :func:`models.train.loss.minimal_pair_loss`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from models.data.scenes import CAPTION_KINDS, NEGATIVE_KINDS, Scene
from models.train.cache import TextIndex
from models.train.labels import scene_geometry
from service.core.bundle.manifest import CLIP_MEAN, CLIP_STD

logger = logging.getLogger(__name__)

# Phrasings kept per scene and kind, drawn at random (templates recur across scenes, so all of
# them are seen), and negatives kept per kind. Counting texts recur verbatim and cost ~nothing.
DEFAULT_PHRASINGS: dict[str, int] = {"short": 1, "compositional": 1, "counting": 2, "long": 1}
MAX_ATTRIBUTE_NEGATIVES = 3  # a colour swap, a recolour and a reshape (models.data.negatives)
DEFAULT_NEGATIVES: dict[str, int] = {
    "count": 1,
    "attribute": MAX_ATTRIBUTE_NEGATIVES,
    "relation": 1,
}


@dataclass
class TrainData:
    images: np.ndarray  # uint8 [n, S, S, 3]
    captions: np.ndarray  # int64 [n, kinds, k] text rows, -1 = none
    negatives: np.ndarray  # int64 [n, m] text rows, -1 = none
    short: np.ndarray  # int64 [n]: the canonical short caption (what attribute negatives edit)
    attribute: np.ndarray  # int64 [n, MAX_ATTRIBUTE_NEGATIVES] text rows, -1 = none
    geometry: np.ndarray  # float32 [n, objects, 5] (labels.scene_geometry)
    index: TextIndex

    def __len__(self) -> int:
        return int(self.images.shape[0])


def render_images(scenes: Sequence[Scene], size: int) -> np.ndarray:
    out = np.empty((len(scenes), size, size, 3), dtype=np.uint8)
    for i, scene in enumerate(scenes):
        out[i] = np.asarray(scene.render(size), dtype=np.uint8)
    return out


def _subset(texts: Sequence[str], keep: int, rng: np.random.Generator) -> list[str]:
    if len(texts) <= keep:
        return list(texts)
    picked = rng.choice(len(texts), size=keep, replace=False)
    return [texts[int(i)] for i in sorted(picked)]


def build_train_data(
    scenes: Sequence[Scene],
    image_size: int,
    *,
    seed: int,
    index: TextIndex | None = None,
    phrasings: dict[str, int] | None = None,
    negatives: dict[str, int] | None = None,
) -> TrainData:
    phrasings = phrasings or DEFAULT_PHRASINGS
    negatives = negatives or DEFAULT_NEGATIVES
    index = index if index is not None else TextIndex()
    rng = np.random.default_rng([seed, 17])
    k_max = max(phrasings.values())
    m_max = sum(negatives.values())
    caps = np.full((len(scenes), len(CAPTION_KINDS), k_max), -1, dtype=np.int64)
    negs = np.full((len(scenes), m_max), -1, dtype=np.int64)
    for i, scene in enumerate(scenes):
        for j, kind in enumerate(CAPTION_KINDS):
            for k, text in enumerate(_subset(scene.captions[kind], phrasings[kind], rng)):
                caps[i, j, k] = index.add(text)
        row = [
            index.add(text)
            for kind in NEGATIVE_KINDS
            for text in _subset(scene.negatives.get(kind, ()), negatives[kind], rng)
        ]
        negs[i, : len(row)] = row
    short = np.array([index.add(scene.captions["short"][0]) for scene in scenes], dtype=np.int64)
    attribute = np.full((len(scenes), MAX_ATTRIBUTE_NEGATIVES), -1, dtype=np.int64)
    for i, scene in enumerate(scenes):
        edits = scene.negatives.get("attribute", ())[:MAX_ATTRIBUTE_NEGATIVES]
        attribute[i, : len(edits)] = [index.add(text) for text in edits]
    images = render_images(scenes, image_size)
    logger.info("%d scenes, %d distinct texts so far", len(scenes), len(index))
    return TrainData(
        images=images,
        captions=caps,
        negatives=negs,
        short=short,
        attribute=attribute,
        geometry=scene_geometry(scenes),
        index=index,
    )


_MEAN = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
_STD = torch.tensor(CLIP_STD, dtype=torch.float32).view(1, 3, 1, 1)


def normalise(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [b, S, S, 3] -> float32 [b, 3, S, S], exactly as ``image_to_tensor`` computes it."""
    x = torch.as_tensor(images).permute(0, 3, 1, 2).to(torch.float32) / 255.0
    return (x - _MEAN) / _STD


def shift(
    images: torch.Tensor, max_shift: int, gen: torch.Generator
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Random translation by up to ``max_shift`` pixels (edge-replicated): light augmentation
    that keeps colours, shapes, counts and left/right intact. Also returns how far each image's
    content moved right and down, as fractions of its side (for the cell labels)."""
    b, _, h, w = images.shape
    if max_shift <= 0:
        return images, np.zeros(b), np.zeros(b)
    padded = torch.nn.functional.pad(images, (max_shift,) * 4, mode="replicate")
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
    shifted = torch.stack(
        [padded[i, :, int(dy[i]) : int(dy[i]) + h, int(dx[i]) : int(dx[i]) + w] for i in range(b)]
    )
    # Cropping the padded image at offset d moves its content by (max_shift - d) pixels.
    return shifted, (max_shift - dx.numpy()) / w, (max_shift - dy.numpy()) / h


def sample_batch(
    data: TrainData, idx: np.ndarray, rng: np.random.Generator, *, negatives_per_scene: int
) -> tuple[np.ndarray, np.ndarray]:
    """For each scene: one caption row (random kind, random phrasing), and up to
    ``negatives_per_scene`` hard-negative rows (all scenes' negatives are pooled)."""
    texts = np.empty(len(idx), dtype=np.int64)
    pooled: list[int] = []
    for n, i in enumerate(idx):
        kinds = [j for j in range(data.captions.shape[1]) if data.captions[i, j, 0] >= 0]
        j = kinds[int(rng.integers(len(kinds)))]
        options = data.captions[i, j][data.captions[i, j] >= 0]
        texts[n] = options[int(rng.integers(len(options)))]
        if negatives_per_scene:
            neg = data.negatives[i][data.negatives[i] >= 0]
            if len(neg) > negatives_per_scene:
                neg = rng.choice(neg, size=negatives_per_scene, replace=False)
            pooled.extend(int(t) for t in neg)
    return texts, np.asarray(pooled, dtype=np.int64)
