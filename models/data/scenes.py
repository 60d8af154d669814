"""Deterministic synthetic scenes for training, evaluating and demoing clipsearch's CLIP variant.

1 to 6 shapes (colour, size, texture, position; some overlap a little) on plain, noisy or
gradient backgrounds, some with pixel noise or blur. Each scene carries captions of four kinds
(short, compositional, counting, long; several phrasings each), a structured description for the
vision-free path, and hard negatives (count, attribute, relation) that are false for it. Texts need
no rendering; ``Scene.render(size)`` draws the pixels on demand.

- ``generate_split(split, n, offset=)``: train / val / test from disjoint seed streams; train
  never shows a ``HELD_OUT_COMBOS`` (colour, shape) pair, val and test often do.
- ``generate_scenes(n, seed)``: "demo" scenes of 1 to 3 objects; scene ``i`` depends only on
  ``(seed, i)``.
- ``write_demo_dataset(folder)``: ``<id>.png``, ``<id>.txt`` (caption), ``<id>.desc.txt``.

This module re-exports the public names of the ``models.data`` modules it is built from.
"""

from __future__ import annotations

import logging
from pathlib import Path

from models.data.generate import generate_scenes, generate_split, split_scene
from models.data.relations import RELATION_PHRASES, RELATIONS, REVERSE, relation_holds
from models.data.render import render_scene
from models.data.scene import Scene
from models.data.texts import POSITION_PHRASES, SIZE_WORDS, TEXTURE_WORDS, count_caption
from models.data.vocab import (
    BACKGROUNDS,
    CAPTION_KINDS,
    COLOURS,
    COUNT_WORDS,
    HELD_OUT_COMBOS,
    NEGATIVE_KINDS,
    POSITIONS,
    SHAPE_PLURALS,
    SHAPES,
    SIZE_RADIUS,
    SIZES,
    SPLITS,
    TEXTURES,
    Background,
    SceneObject,
    grid_position,
)

logger = logging.getLogger(__name__)

__all__ = [
    "BACKGROUNDS",
    "CAPTION_KINDS",
    "COLOURS",
    "COUNT_WORDS",
    "HELD_OUT_COMBOS",
    "NEGATIVE_KINDS",
    "POSITIONS",
    "POSITION_PHRASES",
    "RELATIONS",
    "RELATION_PHRASES",
    "REVERSE",
    "SHAPES",
    "SHAPE_PLURALS",
    "SIZES",
    "SIZE_RADIUS",
    "SIZE_WORDS",
    "SPLITS",
    "TEXTURES",
    "TEXTURE_WORDS",
    "Background",
    "Scene",
    "SceneObject",
    "count_caption",
    "generate_scenes",
    "generate_split",
    "grid_position",
    "relation_holds",
    "render_scene",
    "split_scene",
    "write_demo_dataset",
]


def write_demo_dataset(folder: Path, n: int = 60, seed: int = 1234) -> list[Path]:
    """Write ``<id>.png``, ``<id>.txt`` (short caption) and ``<id>.desc.txt`` (description).

    Returns the image paths. Writing twice with the same seed produces the same bytes.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for scene in generate_scenes(n, seed):
        image_path = folder / f"{scene.id}.png"
        # No timestamps or text chunks: PNG bytes depend only on the pixels.
        scene.image.save(image_path, format="PNG", optimize=False)
        (folder / f"{scene.id}.txt").write_text(scene.caption + "\n", encoding="utf-8")
        (folder / f"{scene.id}.desc.txt").write_text(scene.description + "\n", encoding="utf-8")
        paths.append(image_path)
    logger.info("wrote %d demo scenes to %s (seed %d)", len(paths), folder, seed)
    return paths
