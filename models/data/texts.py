"""Captions of every kind and the structured description, computed from objects alone (no pixels).

``objects`` are in reading order. Phrasings vary through synonyms for size, texture and position
words and through sentence templates and order; colour and shape words never vary. Index 0 of each
kind is canonical: fixed templates, first synonyms, reading order.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from models.data.relations import RELATION_PHRASES, REVERSE, true_relations
from models.data.vocab import (
    COUNT_WORDS,
    SHAPE_PLURALS,
    SceneObject,
    article,
    count_phrase,
    join_words,
)

# Position name -> phrases; [0] canonical. "a red circle <phrase>".
POSITION_PHRASES: dict[str, tuple[str, ...]] = {
    "top left": ("in the top left", "in the top left corner", "at the top left"),
    "top": ("at the top", "along the top edge"),
    "top right": ("in the top right", "in the top right corner", "at the top right"),
    "left": ("on the left", "on the left side"),
    "centre": ("in the centre", "in the middle"),
    "right": ("on the right", "on the right side"),
    "bottom left": ("in the bottom left", "in the bottom left corner", "at the bottom left"),
    "bottom": ("at the bottom", "along the bottom edge"),
    "bottom right": ("in the bottom right", "in the bottom right corner", "at the bottom right"),
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little"),
    "medium": ("medium", "medium-sized", "mid-sized"),
    "large": ("large", "big"),
}
TEXTURE_WORDS: dict[str, tuple[str, ...]] = {
    "solid": ("solid", "filled"),
    "striped": ("striped", "stripy"),
    "dotted": ("dotted", "spotted"),
    "outlined": ("outlined", "hollow"),
}
# The same textures said after the shape: "a big red circle with stripes".
TEXTURE_AFTER: dict[str, tuple[str, ...]] = {
    "solid": ("in solid colour", "filled with colour"),
    "striped": ("with stripes", "covered in stripes"),
    "dotted": ("with dots", "covered in little dots"),
    "outlined": ("drawn only as an outline", "drawn as an outline"),
}
_OBJECT_SENTENCES: tuple[str, ...] = (
    "{Pos} of the picture there is {thing}.",
    "There is {thing} {pos} of the picture.",
    "{Thing} can be seen {pos} of the image.",
    "{Pos} of the picture you can see {thing}.",
)
_RELATION_SENTENCES: tuple[str, ...] = (
    "The {a} is {rel} the {b}.",
    "Note that the {a} is {rel} the {b}.",
)
_HEADERS: tuple[str, ...] = (
    "A picture of {count} on a {bg} background.",
    "This image shows {count} on a {bg} background.",
    "On a {bg} background there {be} {count}.",
)
_FOOTERS: tuple[str, ...] = (
    "All of this is on a {bg} background.",
    "The background behind the objects is {bg}.",
)


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _distinct(texts: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(texts))


def _shuffled(objects: tuple[SceneObject, ...], rng: np.random.Generator) -> list[SceneObject]:
    return [objects[i] for i in rng.permutation(len(objects))]


def object_list(objects: tuple[SceneObject, ...] | list[SceneObject]) -> str:
    """ "a red circle and a blue star"."""
    return join_words([article(o.name) for o in objects])


def shape_counts(shapes: list[str]) -> str:
    """ "two circles and a star": shape types in order of first appearance, with their counts."""
    counts = Counter(shapes)
    return join_words(
        [article(s) if k == 1 else count_phrase(k, s, SHAPE_PLURALS[s]) for s, k in counts.items()]
    )


def count_caption(n: int) -> str:
    """One template for every count, so that only the number word differs."""
    return f"the number of objects is {COUNT_WORDS[n - 1]}"


def short_captions(
    objects: tuple[SceneObject, ...], background: str, rng: np.random.Generator
) -> tuple[str, ...]:
    shuffled = _shuffled(objects, rng)
    return _distinct(
        [
            object_list(objects),
            f"a picture of {object_list(shuffled)}",
            f"{object_list(list(reversed(objects)))} on a {background} background",
            f"an image showing {object_list(shuffled)}",
        ]
    )


def relation_phrase(a: SceneObject, relation: str, b: SceneObject, variant: int = 0) -> str:
    phrases = RELATION_PHRASES[relation]
    return f"{article(a.name)} {phrases[variant % len(phrases)]} {article(b.name)}"


def position_phrase(obj: SceneObject, variant: int = 0) -> str:
    phrases = POSITION_PHRASES[obj.position]
    return f"{article(obj.name)} {phrases[variant % len(phrases)]}"


def compositional_captions(
    objects: tuple[SceneObject, ...], rng: np.random.Generator
) -> tuple[str, ...]:
    """True relations only: [0] one relation, [1] its converse, [2] two relations or positions."""
    relations = true_relations(objects)
    if not relations:  # one object: its position in the picture is the only relation
        (obj,) = objects
        size = _pick(rng, SIZE_WORDS[obj.size])
        return _distinct(
            [
                position_phrase(obj),
                position_phrase(obj, 1 + int(rng.integers(2))),
                f"a {size} {obj.name} {_pick(rng, POSITION_PHRASES[obj.position])} of the picture",
            ]
        )
    order = rng.permutation(len(relations))
    a, rel, b = relations[order[0]]
    texts = [
        relation_phrase(a, rel, b),
        relation_phrase(b, REVERSE[rel], a, int(rng.integers(3))),
    ]
    if len(relations) > 1:
        c, rel2, d = relations[order[1]]
        second = (
            relation_phrase(c, rel2, d, int(rng.integers(3)))
            if rng.random() < 0.5
            else relation_phrase(d, REVERSE[rel2], c, int(rng.integers(3)))
        )
        texts.append(f"{relation_phrase(a, rel, b, int(rng.integers(3)))}, and {second}")
    texts.append(
        f"{position_phrase(a, int(rng.integers(3)))} and {position_phrase(b, int(rng.integers(3)))}"
    )
    return _distinct(texts)


def counting_captions(
    objects: tuple[SceneObject, ...], rng: np.random.Generator
) -> tuple[str, ...]:
    n = len(objects)
    word = COUNT_WORDS[n - 1]
    per_shape = shape_counts([o.shape for o in objects])
    per_shape_shuffled = shape_counts([o.shape for o in _shuffled(objects, rng)])
    noun = _pick(rng, ("shape", "object")) + ("s" if n > 1 else "")
    return _distinct(
        [
            f"{count_phrase(n, 'object', 'objects')}: {per_shape}",
            f"there {'is' if n == 1 else 'are'} {word} {noun}",
            f"{per_shape_shuffled}, {count_phrase(n, 'object', 'objects')} in total",
            count_caption(n),
        ]
    )


def _thing(obj: SceneObject, rng: np.random.Generator | None) -> str:
    if rng is None:
        return article(f"{obj.size} {obj.texture} {obj.name}")
    size = _pick(rng, SIZE_WORDS[obj.size])
    if rng.random() < 0.5:
        return article(f"{size} {obj.name} {_pick(rng, TEXTURE_AFTER[obj.texture])}")
    return article(f"{size} {_pick(rng, TEXTURE_WORDS[obj.texture])} {obj.name}")


def _sentence(obj: SceneObject, rng: np.random.Generator | None) -> str:
    template = _OBJECT_SENTENCES[0] if rng is None else _pick(rng, _OBJECT_SENTENCES)
    pos = POSITION_PHRASES[obj.position]
    pos_text = pos[0] if rng is None else _pick(rng, pos)
    thing = _thing(obj, rng)
    return template.format(Pos=_cap(pos_text), pos=pos_text, Thing=_cap(thing), thing=thing)


def _relation_sentence(
    objects: tuple[SceneObject, ...], rng: np.random.Generator, canonical: bool
) -> list[str]:
    """One true relation as a sentence, or nothing for a single object."""
    relations = true_relations(objects)
    if not relations:
        return []
    a, rel, b = relations[int(rng.integers(len(relations)))]
    if not canonical and rng.random() < 0.5:
        a, rel, b = b, REVERSE[rel], a
    template = _RELATION_SENTENCES[0] if canonical else _pick(rng, _RELATION_SENTENCES)
    phrase = RELATION_PHRASES[rel][0] if canonical else _pick(rng, RELATION_PHRASES[rel])
    return [template.format(a=a.name, rel=phrase, b=b.name)]


def long_captions(
    objects: tuple[SceneObject, ...], background: str, rng: np.random.Generator
) -> tuple[str, ...]:
    """Every object with size, texture, colour, shape and position, the background, and one
    true relation between two objects.

    [0] canonical; [1] synonyms and templates varied; [2] objects in shuffled order and the
    background last. Five or more objects always take more than 55 words, and four or more
    usually more than 77 CLIP tokens.
    """
    n = len(objects)
    count = count_phrase(n, "object", "objects")
    be = "is" if n == 1 else "are"
    canonical = _HEADERS[0].format(count=count, bg=background, be=be)
    varied = _pick(rng, _HEADERS).format(count=count, bg=background, be=be)
    return _distinct(
        [
            " ".join(
                [
                    canonical,
                    *(_sentence(o, None) for o in objects),
                    *_relation_sentence(objects, rng, True),
                ]
            ),
            " ".join(
                [
                    varied,
                    *(_sentence(o, rng) for o in objects),
                    *_relation_sentence(objects, rng, False),
                ]
            ),
            " ".join(
                [
                    *(_sentence(o, rng) for o in _shuffled(objects, rng)),
                    *_relation_sentence(objects, rng, False),
                    _pick(rng, _FOOTERS).format(bg=background),
                ]
            ),
        ]
    )


def describe(objects: tuple[SceneObject, ...], background: str) -> str:
    """The structured description for vision-free search; no randomness, one form per scene.

    Colour and shape stay adjacent ("large striped red circle"), so "red circle" appears
    literally for every red circle.
    """
    n = len(objects)
    items = "; ".join(f"{o.size} {o.texture} {o.name} at {o.position}" for o in objects)
    return (
        f"Scene: {n} object{'s' if n > 1 else ''} on a {background} background. Objects: {items}."
    )
