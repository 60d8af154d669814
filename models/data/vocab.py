"""The scenes' world: shapes, colours, sizes, textures, backgrounds, the 3x3 position grid, the
held-out (colour, shape) pairs, and :class:`SceneObject`.

Colour and shape words are canonical everywhere (captions, descriptions, negatives), so that their
meaning stays learnable; only the other words get synonyms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "diamond", "cross")
# Plural forms for counting captions ("two crosses").
SHAPE_PLURALS: dict[str, str] = {s: s + ("es" if s.endswith("s") else "s") for s in SHAPES}
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
    "pink": (250, 130, 200),
    "cyan": (40, 200, 210),
}
SIZES: tuple[str, ...] = ("small", "medium", "large")
# Radius as a fraction of the image side: each class is ~1.5x the one below it, so "bigger than"
# is visible at any render size. A per-object factor in [0.92, 1.08] keeps classes apart.
SIZE_RADIUS: dict[str, float] = {"small": 0.065, "medium": 0.1, "large": 0.145}
SIZE_RANK: dict[str, int] = {s: i for i, s in enumerate(SIZES)}
TEXTURES: tuple[str, ...] = ("solid", "striped", "dotted", "outlined")


class Background(NamedTuple):
    """``kind`` is plain, noisy or gradient; ``top`` and ``bottom`` are equal unless gradient."""

    kind: str
    top: tuple[int, int, int]
    bottom: tuple[int, int, int]


# Neutral tones only: a "blue background" would blur what "blue" means for objects.
BACKGROUNDS: dict[str, Background] = {
    "white": Background("plain", (245, 245, 245), (245, 245, 245)),
    "grey": Background("plain", (128, 128, 128), (128, 128, 128)),
    "black": Background("plain", (20, 20, 20), (20, 20, 20)),
    "beige": Background("plain", (225, 212, 185), (225, 212, 185)),
    "noisy white": Background("noisy", (235, 235, 235), (235, 235, 235)),
    "noisy grey": Background("noisy", (128, 128, 128), (128, 128, 128)),
    "light gradient": Background("gradient", (250, 250, 250), (150, 150, 150)),
    "dark gradient": Background("gradient", (110, 110, 110), (15, 15, 15)),
}
# Position name -> (column, row) in the 3x3 grid over the image.
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
_CELLS: dict[tuple[int, int], str] = {cell: name for name, cell in POSITIONS.items()}
COUNT_WORDS: tuple[str, ...] = ("one", "two", "three", "four", "five", "six")
MAX_OBJECTS = len(COUNT_WORDS)
# Never in the train split: each colour and each shape still appears in train with other partners,
# so a model can only get these right by composing colour and shape.
HELD_OUT_COMBOS: frozenset[tuple[str, str]] = frozenset(
    {
        ("blue", "triangle"),
        ("yellow", "star"),
        ("green", "hexagon"),
        ("purple", "square"),
        ("orange", "circle"),
        ("cyan", "diamond"),
    }
)
CAPTION_KINDS: tuple[str, ...] = ("short", "compositional", "counting", "long")
NEGATIVE_KINDS: tuple[str, ...] = ("count", "attribute", "relation")
SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class SceneObject:
    """One shape. ``x``, ``y``: centre in [0, 1] (y grows downwards); ``radius``: fraction of the
    image side; ``rotation``: degrees, small for squares and diamonds so they stay told apart."""

    shape: str
    colour: str
    size: str
    texture: str
    x: float
    y: float
    radius: float
    rotation: float = 0.0

    @property
    def position(self) -> str:
        """The 3x3 grid cell of the centre: "top left", "centre", "bottom" ..."""
        return grid_position(self.x, self.y)

    @property
    def name(self) -> str:
        """Colour and shape, e.g. "red circle": unique within a scene."""
        return f"{self.colour} {self.shape}"


def grid_cell(x: float, y: float) -> tuple[int, int]:
    return min(2, max(0, int(x * 3))), min(2, max(0, int(y * 3)))


def grid_position(x: float, y: float) -> str:
    return _CELLS[grid_cell(x, y)]


def reading_order(objects: tuple[SceneObject, ...]) -> tuple[SceneObject, ...]:
    """Top to bottom by grid row, then left to right: the order texts name objects in."""
    return tuple(sorted(objects, key=lambda o: (grid_cell(o.x, o.y)[1], o.x, o.y)))


def article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def join_words(parts: list[str] | tuple[str, ...]) -> str:
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def count_phrase(n: int, singular: str, plural: str) -> str:
    """ "one circle", "three circles"."""
    return f"{COUNT_WORDS[n - 1]} {singular if n == 1 else plural}"
