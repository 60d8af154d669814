"""Hard negatives: captions that read like the scene's own but are false for it.

- ``count``: the counting caption with one shape type's count changed (the total follows), and
  the fixed count template with a wrong number.
- ``attribute``: the short caption with two objects' colours swapped, or one object's colour or
  shape changed; always to a (colour, shape) pair that is not in the scene, so the text is false
  however it is read. One-object scenes get a changed colour and a changed shape.
- ``relation``: a true relation reversed (left/right, above/below, bigger/smaller) and the same
  relation with its arguments swapped; for one object, a wrong position in the picture.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np

from models.data.relations import REVERSE, true_relations
from models.data.texts import (
    POSITION_PHRASES,
    count_caption,
    object_list,
    relation_phrase,
    shape_counts,
)
from models.data.vocab import (
    COLOURS,
    MAX_OBJECTS,
    POSITIONS,
    SHAPES,
    SceneObject,
    article,
    count_phrase,
    grid_position,
)


def _wrong_count(n: int, rng: np.random.Generator) -> int:
    near = [k for k in (n - 1, n + 1) if 1 <= k <= MAX_OBJECTS]
    far = [k for k in range(1, MAX_OBJECTS + 1) if k != n and k not in near]
    return int(rng.choice(near if rng.random() < 0.7 or not far else far))


def count_negatives(objects: tuple[SceneObject, ...], rng: np.random.Generator) -> tuple[str, ...]:
    n = len(objects)
    counts = Counter(o.shape for o in objects)

    def options(shape: str) -> list[int]:
        # Another count for this shape type that keeps the total within 1..MAX_OBJECTS.
        k = counts[shape]
        return [j for j in range(1, MAX_OBJECTS + 1) if j != k and n - k + j <= MAX_OBJECTS]

    # Six objects of six types leave no other count to give a type: one type is left out.
    changeable = [s for s in counts if options(s)] or list(counts)
    shape = changeable[int(rng.integers(len(changeable)))]
    k = counts[shape]
    j = int(rng.choice(options(shape) or [0]))
    # The changed type keeps the place of its first appearance: "three circles and a star".
    first = next(i for i, o in enumerate(objects) if o.shape == shape)
    head = [o.shape for o in objects[:first] if o.shape != shape]
    tail = [o.shape for o in objects[first:] if o.shape != shape]
    changed = shape_counts([*head, *([shape] * j), *tail])
    total = n - k + j
    return (
        f"{count_phrase(total, 'object', 'objects')}: {changed}",
        count_caption(_wrong_count(n, rng)),
    )


def _recolour(obj: SceneObject, taken: set[tuple[str, str]], rng: np.random.Generator) -> str:
    options = [c for c in COLOURS if c != obj.colour and (c, obj.shape) not in taken]
    return options[int(rng.integers(len(options)))]


def _reshape(obj: SceneObject, taken: set[tuple[str, str]], rng: np.random.Generator) -> str:
    options = [s for s in SHAPES if s != obj.shape and (obj.colour, s) not in taken]
    return options[int(rng.integers(len(options)))]


def attribute_negatives(
    objects: tuple[SceneObject, ...], rng: np.random.Generator
) -> tuple[str, ...]:
    taken = {(o.colour, o.shape) for o in objects}
    texts: list[str] = []
    n = len(objects)
    swaps = [
        (i, j)
        for i in range(n)
        for j in range(i + 1, n)
        if objects[i].colour != objects[j].colour
        and objects[i].shape != objects[j].shape
        and not {(objects[j].colour, objects[i].shape), (objects[i].colour, objects[j].shape)}
        <= taken
    ]
    if swaps:
        i, j = swaps[int(rng.integers(len(swaps)))]
        swapped = list(objects)
        swapped[i] = replace(objects[i], colour=objects[j].colour)
        swapped[j] = replace(objects[j], colour=objects[i].colour)
        texts.append(object_list(swapped))
    k = int(rng.integers(n))
    recoloured = list(objects)
    recoloured[k] = replace(objects[k], colour=_recolour(objects[k], taken, rng))
    texts.append(object_list(recoloured))
    k = int(rng.integers(n))
    reshaped = list(objects)
    reshaped[k] = replace(objects[k], shape=_reshape(objects[k], taken, rng))
    texts.append(object_list(reshaped))
    return tuple(dict.fromkeys(texts))


def relation_negatives(
    objects: tuple[SceneObject, ...], rng: np.random.Generator
) -> tuple[str, ...]:
    relations = true_relations(objects)
    if not relations:
        (obj,) = objects
        here = obj.position
        col, row = POSITIONS[here]
        mirrored = grid_position((2 - col + 0.5) / 3, (2 - row + 0.5) / 3)
        if mirrored == here:  # the centre mirrors onto itself: any other cell is wrong
            others = [p for p in POSITIONS if p != here]
            mirrored = others[int(rng.integers(len(others)))]
        return (f"{article(obj.name)} {POSITION_PHRASES[mirrored][0]}",)
    a, rel, b = relations[int(rng.integers(len(relations)))]
    return (
        relation_phrase(a, REVERSE[rel], b),
        relation_phrase(b, rel, a, int(rng.integers(3))),
    )
