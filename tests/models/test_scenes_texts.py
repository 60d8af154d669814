"""Scene texts tell the truth and the negatives do not.

Truth is re-derived here from the objects' geometry with plain comparisons (left: smaller x;
above: smaller y; bigger: larger size class; position: 3x3 grid of the centre), independently of
the generator's own relation code. Each text is parsed into claims, and a text is true when all
its claims hold, false when one fails.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from models.data.scenes import (
    CAPTION_KINDS,
    COLOURS,
    COUNT_WORDS,
    NEGATIVE_KINDS,
    POSITION_PHRASES,
    RELATION_PHRASES,
    SHAPE_PLURALS,
    SHAPES,
    SIZE_WORDS,
    SIZES,
    TEXTURE_WORDS,
    Scene,
    SceneObject,
    generate_scenes,
    generate_split,
)

_ALT = "|".join
_COLOUR = _ALT(COLOURS)
_SHAPE = _ALT(SHAPES)
_SIZE = _ALT(sorted({w for ws in SIZE_WORDS.values() for w in ws}, key=len, reverse=True))
_TEXTURE = _ALT(sorted({w for ws in TEXTURE_WORDS.values() for w in ws}, key=len, reverse=True))
_THING = rf"\b(?:[aA]|[aA]n|[tT]he) (?:(?:{_SIZE}) )?(?:(?:{_TEXTURE}) )?({_COLOUR}) ({_SHAPE})\b"
_REL_PHRASE = {p: rel for rel, ps in RELATION_PHRASES.items() for p in ps}
_POS_PHRASE = {p: pos for pos, ps in POSITION_PHRASES.items() for p in ps}
_RELATION = re.compile(
    rf"{_THING} (?:is )?({_ALT(sorted(_REL_PHRASE, key=len, reverse=True))}) {_THING}"
)
# "on the left" is a position; "on the left of a blue star" is a relation.
_POSITION = re.compile(
    rf"{_THING} ({_ALT(sorted(_POS_PHRASE, key=len, reverse=True))})\b(?! of an? )"
)
_OBJECT = re.compile(_THING)
_NUMBERS = {w: i + 1 for i, w in enumerate(COUNT_WORDS)} | {"a": 1, "an": 1}
_NOUNS = {"object": None, "shape": None} | {s: s for s in SHAPES}
_NOUNS |= {SHAPE_PLURALS[s]: s for s in SHAPES} | {"objects": None, "shapes": None}
_COUNT = re.compile(rf"\b({_ALT(_NUMBERS)}) ({_ALT(sorted(_NOUNS, key=len, reverse=True))})\b")
_COUNT_IS = re.compile(rf"number of (?:objects|shapes) is ({_ALT(COUNT_WORDS)})\b")


def _grid(obj: SceneObject) -> tuple[int, int]:
    return min(2, int(obj.x * 3)), min(2, int(obj.y * 3))


_CELLS = {
    "top left": (0, 0), "top": (1, 0), "top right": (2, 0),
    "left": (0, 1), "centre": (1, 1), "right": (2, 1),
    "bottom left": (0, 2), "bottom": (1, 2), "bottom right": (2, 2),
}  # fmt: skip


def _relation_true(rel: str, a: SceneObject, b: SceneObject) -> bool:
    return {
        "left of": a.x < b.x,
        "right of": a.x > b.x,
        "above": a.y < b.y,
        "below": a.y > b.y,
        "bigger than": SIZES.index(a.size) > SIZES.index(b.size),
        "smaller than": SIZES.index(a.size) < SIZES.index(b.size),
    }[rel]


def claims(scene: Scene, text: str) -> list[bool]:
    """Every checkable claim in ``text``, each as whether it holds for ``scene``."""
    by_name = {(o.colour, o.shape): o for o in scene.objects}
    found: list[bool] = []
    for m in _OBJECT.finditer(text):  # every named object exists
        found.append((m[1], m[2]) in by_name)
    for m in _RELATION.finditer(text):
        a, b = by_name.get((m[1], m[2])), by_name.get((m[4], m[5]))
        found.append(a is not None and b is not None and _relation_true(_REL_PHRASE[m[3]], a, b))
    for m in _POSITION.finditer(text):
        a = by_name.get((m[1], m[2]))
        found.append(a is not None and _grid(a) == _CELLS[_POS_PHRASE[m[3]]])
    shapes = Counter(o.shape for o in scene.objects)
    if "object" in text or "shape" in text or any(w in text for w in COUNT_WORDS):
        for m in _COUNT.finditer(text):
            n, noun = _NUMBERS[m[1]], _NOUNS[m[2]]
            found.append(n == (len(scene.objects) if noun is None else shapes[noun]))
    for m in _COUNT_IS.finditer(text):
        found.append(_NUMBERS[m[1]] == len(scene.objects))
    return found


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    return generate_split("train", 300) + generate_split("test", 300) + generate_scenes(60, 1)


def test_every_kind_has_several_distinct_phrasings(scenes: list[Scene]) -> None:
    for scene in scenes:
        for kind in CAPTION_KINDS:
            texts = scene.captions[kind]
            assert len(texts) >= 2 and len(set(texts)) == len(texts), (scene.id, kind)
        for kind in NEGATIVE_KINDS:
            assert len(scene.negatives[kind]) >= 1, (scene.id, kind)


@pytest.mark.parametrize("kind", CAPTION_KINDS)
def test_captions_are_true(scenes: list[Scene], kind: str) -> None:
    for scene in scenes:
        for text in scene.captions[kind]:
            found = claims(scene, text)
            assert found and all(found), (scene.id, text, found)


def test_short_captions_name_every_object(scenes: list[Scene]) -> None:
    for scene in scenes:
        for text in scene.captions["short"]:
            named = Counter((m[1], m[2]) for m in _OBJECT.finditer(text))
            assert named == Counter((o.colour, o.shape) for o in scene.objects), text


def test_compositional_captions_state_relations(scenes: list[Scene]) -> None:
    for scene in scenes:
        text = scene.captions["compositional"][0]
        if len(scene.objects) > 1:
            assert _RELATION.search(text), text
        else:
            assert _POSITION.search(text), text


@pytest.mark.parametrize("kind", NEGATIVE_KINDS)
def test_negatives_are_false(scenes: list[Scene], kind: str) -> None:
    for scene in scenes:
        own = {t for ts in scene.captions.values() for t in ts}
        for text in scene.negatives[kind]:
            found = claims(scene, text)
            assert found and not all(found), (scene.id, kind, text)
            assert text not in own


def test_relation_negatives_reverse_true_relations(scenes: list[Scene]) -> None:
    for scene in (s for s in scenes if len(s.objects) > 1):
        for text in scene.negatives["relation"]:
            m = _RELATION.search(text)
            assert m, text
            by_name = {(o.colour, o.shape): o for o in scene.objects}
            a, b = by_name[(m[1], m[2])], by_name[(m[4], m[5])]
            rel = _REL_PHRASE[m[3]]
            assert not _relation_true(rel, a, b)


def test_long_captions_name_everything(scenes: list[Scene]) -> None:
    for scene in scenes:
        for text in scene.captions["long"]:
            assert scene.background in text
            for obj in scene.objects:
                assert re.search(rf"\b{obj.colour} {obj.shape}\b", text), (obj, text)
            # A header or footer, a sentence per object, and one relation when there are two.
            sentences = len(scene.objects) + 1 + (len(scene.objects) > 1)
            assert len(re.findall(r"[.]", text)) == sentences, text
            if len(scene.objects) >= 5:
                assert len(text.split()) > 55, text
        canonical = scene.captions["long"][0]
        for obj in scene.objects:
            thing = f"{obj.size} {obj.texture} {obj.colour} {obj.shape}"
            pos = POSITION_PHRASES[obj.position][0].capitalize()
            assert f"{pos} of the picture there is a {thing}." in canonical


def test_descriptions_are_structured_and_discriminative(scenes: list[Scene]) -> None:
    for scene in scenes:
        assert scene.description.startswith(f"Scene: {len(scene.objects)} object")
        assert f"on a {scene.background} background" in scene.description
        for obj in scene.objects:
            item = f"{obj.size} {obj.texture} {obj.colour} {obj.shape} at {obj.position}"
            assert item in scene.description
    # A bag-of-words stand-in for a sentence embedder: each varied long caption finds its own
    # scene's description first among all the others, nearly always.
    pool = scenes[:300]
    vocab = {w: i for i, w in enumerate(sorted({w for s in pool for w in _words(s.description)}))}
    descs = np.stack([_bag(s.description, vocab) for s in pool])
    longs = np.stack([_bag(s.captions["long"][-1], vocab) for s in pool])
    top = np.argmax(longs @ descs.T, axis=1)
    assert np.mean(top == np.arange(len(pool))) > 0.9


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def _bag(text: str, vocab: dict[str, int]) -> np.ndarray:
    v = np.zeros(len(vocab))
    for w in _words(text):
        if w in vocab:
            v[vocab[w]] += 1
    return v / max(float(np.linalg.norm(v)), 1e-9)
