"""Sampling scenes: objects, placement, background, noise, texts, and the split streams.

Every scene comes from its own generator, seeded by (split stream, index) or (seed, index), so
scene ``i`` never depends on how many scenes are asked for, and splits never share a stream.
"""

from __future__ import annotations

import numpy as np

from models.data.negatives import attribute_negatives, count_negatives, relation_negatives
from models.data.relations import MARGIN
from models.data.scene import Scene
from models.data.texts import (
    compositional_captions,
    counting_captions,
    describe,
    long_captions,
    short_captions,
)
from models.data.vocab import (
    BACKGROUNDS,
    COLOURS,
    HELD_OUT_COMBOS,
    MAX_OBJECTS,
    SHAPES,
    SIZE_RADIUS,
    SIZES,
    SPLITS,
    TEXTURES,
    SceneObject,
    reading_order,
)

_STREAM_SALT = 0x5CE7E5
_SPLIT_STREAMS: dict[str, int] = {"train": 1, "val": 2, "test": 3}
# Share of val/test scenes that get one held-out (colour, shape) pair on purpose; others may
# still draw one by chance, so the held-out share ends up a little higher.
_FORCED_HELD_OUT = 0.2
_ALL_PAIRS: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLOURS for s in SHAPES)
_TRAIN_PAIRS = tuple(p for p in _ALL_PAIRS if p not in HELD_OUT_COMBOS)
_HELD_OUT_PAIRS = tuple(sorted(HELD_OUT_COMBOS))
_TEXTURE_CDF = np.cumsum([0.4, 0.2, 0.2, 0.2])[:-1]  # solid, striped, dotted, outlined
# Rotation range in degrees per shape: squares and diamonds barely turn, so they stay apart.
_ROTATION: dict[str, float] = {
    "circle": 0.0,
    "square": 10.0,
    "diamond": 10.0,
    "triangle": 20.0,
    "cross": 15.0,
    "hexagon": 30.0,
    "star": 36.0,
}
_PLACEMENT_TRIES = 60
# Demo scenes keep v1's 1..3 objects: the demo often runs on the tiny bundle, whose lexical
# description space cannot bind colour to shape ("a red square and a blue circle" holds the same
# words as "a red circle and a blue square"), so fuller scenes would bury its "red circle" hits.
DEMO_MAX_OBJECTS = 3


def _pairs(n: int, split: str, rng: np.random.Generator) -> list[tuple[str, str]]:
    """``n`` distinct (colour, shape) pairs: names stay unique within a scene."""
    if split == "train":
        return [_TRAIN_PAIRS[i] for i in rng.permutation(len(_TRAIN_PAIRS))[:n]]
    chosen: list[tuple[str, str]] = []
    if split in ("val", "test") and rng.random() < _FORCED_HELD_OUT:
        chosen.append(_HELD_OUT_PAIRS[int(rng.integers(len(_HELD_OUT_PAIRS)))])
    for i in rng.permutation(len(_ALL_PAIRS)):
        if len(chosen) == n:
            break
        if _ALL_PAIRS[i] not in chosen:
            chosen.append(_ALL_PAIRS[i])
    return chosen


def _fits(x: float, y: float, r: float, placed: list[SceneObject]) -> bool:
    # A little overlap is allowed (partial occlusion), never enough to hide an object, and every
    # pair is clearly apart on at least one axis, so a spatial relation holds between them.
    for o in placed:
        dx, dy = abs(x - o.x), abs(y - o.y)
        if max(dx, dy) < MARGIN + 0.01 or (dx * dx + dy * dy) ** 0.5 < 0.85 * (r + o.radius):
            return False
    return True


def _spot(
    r: float, placed: list[SceneObject], rng: np.random.Generator
) -> tuple[float, float] | None:
    """A random centre clear of the objects placed so far, or None after a few tries.

    Scalar draws on purpose: with at most five objects to check, numpy's per-call overhead costs
    more than the loop.
    """
    lo, hi = r + 0.02, 1 - r - 0.02
    for _ in range(_PLACEMENT_TRIES):
        x, y = round(float(rng.uniform(lo, hi)), 3), round(float(rng.uniform(lo, hi)), 3)
        if _fits(x, y, r, placed):
            return x, y
    return None


def _place(pairs: list[tuple[str, str]], rng: np.random.Generator) -> tuple[SceneObject, ...]:
    placed: list[SceneObject] = []
    for colour, shape in pairs:
        size = SIZES[int(rng.integers(len(SIZES)))]
        texture = TEXTURES[int(np.searchsorted(_TEXTURE_CDF, rng.random(), side="right"))]
        spread = _ROTATION[shape]
        rotation = round(float(rng.uniform(-spread, spread)), 1) if spread else 0.0
        # Falls back to smaller sizes when a crowded scene leaves no room; an object that finds
        # no room even when small is left out (rare, and the texts follow the objects).
        for attempt_size in SIZES[SIZES.index(size) :: -1]:
            r = round(SIZE_RADIUS[attempt_size] * float(rng.uniform(0.92, 1.08)), 4)
            spot = _spot(r, placed, rng)
            if spot is not None:
                placed.append(SceneObject(shape, colour, attempt_size, texture, *spot, r, rotation))
                break
    return reading_order(tuple(placed))


def _tags(objects: tuple[SceneObject, ...]) -> tuple[str, ...]:
    tags = [t for o in objects for t in (o.colour, o.shape, o.texture)]
    return tuple(dict.fromkeys(tags))


def _scene(scene_id: str, split: str, rng: np.random.Generator, max_objects: int) -> Scene:
    background = list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
    n = int(rng.integers(1, max_objects + 1))
    objects = _place(_pairs(n, split, rng), rng)
    noise = round(float(rng.uniform(3.0, 12.0)), 2) if rng.random() < 0.25 else 0.0
    blur = round(float(rng.uniform(0.004, 0.01)), 4) if rng.random() < 0.2 else 0.0
    seed = int(rng.integers(2**31 - 1))
    captions = {
        "short": short_captions(objects, background, rng),
        "compositional": compositional_captions(objects, rng),
        "counting": counting_captions(objects, rng),
        "long": long_captions(objects, background, rng),
    }
    negatives = {
        "count": count_negatives(objects, rng),
        "attribute": attribute_negatives(objects, rng),
        "relation": relation_negatives(objects, rng),
    }
    return Scene(
        id=scene_id,
        split=split,
        objects=objects,
        background=background,
        captions=captions,
        description=describe(objects, background),
        negatives=negatives,
        tags=_tags(objects),
        held_out=any((o.colour, o.shape) in HELD_OUT_COMBOS for o in objects),
        seed=seed,
        noise=noise,
        blur=blur,
    )


def split_scene(split: str, index: int) -> Scene:
    """Scene ``index`` of ``split``; depends on nothing else."""
    if split not in _SPLIT_STREAMS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if index < 0:
        raise ValueError("index must be >= 0")
    rng = np.random.default_rng([_STREAM_SALT, _SPLIT_STREAMS[split], index])
    return _scene(f"{split}-{index:06d}", split, rng, MAX_OBJECTS)


def generate_split(split: str, n: int, *, offset: int = 0) -> list[Scene]:
    """Scenes ``offset .. offset+n-1`` of ``split`` (ids ``"<split>-000123"``).

    Train never holds a ``HELD_OUT_COMBOS`` pair; val and test hold one in roughly a third of
    their scenes.
    """
    if n < 0 or offset < 0:
        raise ValueError("n and offset must be >= 0")
    return [split_scene(split, i) for i in range(offset, offset + n)]


def generate_scenes(n: int, seed: int) -> list[Scene]:
    """``n`` demo scenes ``scene-0000 .. scene-{n-1}`` of 1..3 objects; scene ``i`` depends only
    on (seed, i). Every (colour, shape) pair may appear."""
    if n < 0:
        raise ValueError("n must be >= 0")
    return [
        _scene(f"scene-{i:04d}", "demo", np.random.default_rng([seed, i]), DEMO_MAX_OBJECTS)
        for i in range(n)
    ]
