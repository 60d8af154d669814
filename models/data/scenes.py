"""Deterministic synthetic scenes for demos and tests: coloured shapes on a plain background.

Each scene comes with a short caption ("a red circle and a blue square") and a structured
description that names every object with its colour, shape, size and position. Scene ``i`` of a
seed depends only on ``(seed, i)``, so ``generate_scenes(10, s)[:5] == generate_scenes(5, s)``.
Phrasings vary a little (synonyms, templates), chosen by the same per-scene random generator.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

logger = logging.getLogger(__name__)

IMAGE_SIZE = 128
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "grey": (128, 128, 128),
    "black": (20, 20, 20),
}
# Radius in pixels; a cell of the 3x3 grid is ~42 px, so even large shapes never overlap.
SIZES: dict[str, int] = {"small": 8, "medium": 13, "large": 19}
# Position name -> (column, row) in the 3x3 grid.
POSITIONS: dict[str, tuple[int, int]] = {
    "top left": (0, 0),
    "top": (1, 0),
    "top right": (2, 0),
    "left": (0, 1),
    "centre": (1, 1),
    "right": (2, 1),
    "bottom left": (0, 2),
    "bottom": (1, 2),
    "bottom right": (2, 2),
}
COUNT_WORDS: tuple[str, ...] = ("one", "two", "three")

_SIZE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little"),
    "medium": ("medium", "medium-sized"),
    "large": ("large", "big"),
}

_HEADERS: tuple[str, ...] = (
    "{Count} {noun} on a {bg} background: {items}.",
    "A {bg} background with {count} {noun}: {items}.",
)
_CAPTIONS: tuple[str, ...] = ("{items}", "a picture of {items}", "{items} on a {bg} background")


class SceneObject(NamedTuple):
    shape: str
    colour: str
    size: str
    position: str


@dataclass
class Scene:
    id: str
    image: Image.Image
    caption: str
    description: str
    tags: list[str] = field(default_factory=list)
    objects: list[SceneObject] = field(default_factory=list)
    background: str = "white"


# Natural phrasings per position; the first one always names the position verbatim.
def _position_phrases(position: str) -> tuple[str, ...]:
    if position == "centre":
        return ("in the centre", "in the middle")
    if " " in position:
        return (f"at the {position}", f"in the {position} corner")
    if position in ("left", "right"):
        return (f"on the {position}", f"on the {position} side")
    return (f"at the {position}", f"at the {position} edge")


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _join(parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _draw(obj: SceneObject, draw: ImageDraw.ImageDraw, jitter: tuple[int, int]) -> None:
    cell = IMAGE_SIZE / 3
    col, row = POSITIONS[obj.position]
    cx = int(cell * (col + 0.5)) + jitter[0]
    cy = int(cell * (row + 0.5)) + jitter[1]
    r = SIZES[obj.size]
    fill = COLOURS[obj.colour]
    if obj.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif obj.shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)


def _scene(index: int, seed: int) -> Scene:
    rng = np.random.default_rng([seed, index])
    background = _pick(rng, list(BACKGROUNDS))
    count = int(rng.integers(1, 4))
    positions = [list(POSITIONS)[i] for i in rng.permutation(len(POSITIONS))[:count]]
    # Distinct (colour, shape) pairs keep every description unambiguous.
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    chosen = [pairs[i] for i in rng.permutation(len(pairs))[:count]]
    objects = [
        SceneObject(shape=s, colour=c, size=_pick(rng, list(SIZES)), position=p)
        for (c, s), p in zip(chosen, positions, strict=True)
    ]
    # Reading order (top to bottom, left to right) makes descriptions easier to follow.
    objects.sort(key=lambda o: (POSITIONS[o.position][1], POSITIONS[o.position][0]))

    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUNDS[background])
    draw = ImageDraw.Draw(image)
    for obj in objects:
        jitter = (int(rng.integers(-3, 4)), int(rng.integers(-3, 4)))
        _draw(obj, draw, jitter)

    caption = _pick(rng, _CAPTIONS).format(
        items=_join([_a(f"{o.colour} {o.shape}") for o in objects]), bg=background
    )
    items = [
        _a(f"{_pick(rng, _SIZE_SYNONYMS[o.size])} {o.colour} {o.shape} ")
        + _pick(rng, _position_phrases(o.position))
        for o in objects
    ]
    noun = _pick(rng, ("object", "shape")) + ("s" if count > 1 else "")
    count_word = COUNT_WORDS[count - 1]
    description = _pick(rng, _HEADERS).format(
        Count=count_word.capitalize(),
        count=count_word,
        noun=noun,
        bg=background,
        items="; ".join(items),
    )
    tags: list[str] = []
    for obj in objects:
        for tag in (obj.colour, obj.shape):
            if tag not in tags:
                tags.append(tag)
    return Scene(
        id=f"scene-{index:04d}",
        image=image,
        caption=caption,
        description=description,
        tags=tags,
        objects=objects,
        background=background,
    )


def generate_scenes(n: int, seed: int) -> list[Scene]:
    """``n`` scenes ``scene-0000 .. scene-{n-1}``; the same ``(n, seed)`` gives the same scenes."""
    if n < 0:
        raise ValueError("n must be >= 0")
    return [_scene(i, seed) for i in range(n)]


def write_demo_dataset(folder: Path, n: int = 60, seed: int = 1234) -> list[Path]:
    """Write ``<id>.png``, ``<id>.txt`` (caption) and ``<id>.desc.txt`` (description) per scene.

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
