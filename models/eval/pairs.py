"""Minimal pairs: for each hard negative of a scene, the true caption it was edited from.

A hard negative only tests what it changed when it is compared with the true text it differs
from, word for word ("a red circle above a blue star" against "... below ..."), not with some
other true caption. ``models.data.negatives`` documents how each kind is made; this module
rebuilds the matching true text from the scene's objects:

- ``attribute``: the canonical short caption (the object list every attribute negative edits);
- ``count``: the fixed count template with the true number for a template negative, otherwise
  the canonical counting caption (which a per-shape count negative edits);
- ``relation``: the same phrase with the relation reversed (which is then the true one), found
  among every phrase the scene's objects can make; for a one-object scene, the canonical
  compositional caption (the object at its true position). A negative whose source cannot be
  rebuilt falls back to the canonical compositional caption and is counted as a fallback.
"""

from __future__ import annotations

from itertools import permutations

from models.data.scenes import (
    COUNT_WORDS,
    RELATION_PHRASES,
    RELATIONS,
    REVERSE,
    Scene,
    count_caption,
    relation_holds,
)
from models.data.texts import relation_phrase

_COUNT_TEMPLATES = frozenset(count_caption(n) for n in range(1, len(COUNT_WORDS) + 1))


def _relation_sources(scene: Scene) -> dict[str, str]:
    """Every false relation phrase about two of the scene's objects -> its true reversal."""
    sources: dict[str, str] = {}
    for a, b in permutations(scene.objects, 2):
        for rel in RELATIONS:
            if not relation_holds(REVERSE[rel], a, b):
                continue
            for variant in range(len(RELATION_PHRASES[rel])):
                false_text = relation_phrase(a, rel, b, variant)
                sources.setdefault(false_text, relation_phrase(a, REVERSE[rel], b, variant))
    return sources


def negative_pairs(scene: Scene) -> tuple[dict[str, list[tuple[str, str]]], int]:
    """``{kind: [(true text, negative), ...]}`` for the scene, and how many fell back."""
    fallbacks = 0
    pairs: dict[str, list[tuple[str, str]]] = {}
    short = scene.captions["short"][0]
    pairs["attribute"] = [(short, neg) for neg in scene.negatives.get("attribute", ())]

    true_count = count_caption(len(scene.objects))
    counting = scene.captions["counting"][0]
    pairs["count"] = [
        (true_count if neg in _COUNT_TEMPLATES else counting, neg)
        for neg in scene.negatives.get("count", ())
    ]

    compositional = scene.captions["compositional"][0]
    relation_negs = scene.negatives.get("relation", ())
    sources = _relation_sources(scene) if len(scene.objects) > 1 and relation_negs else {}
    pairs["relation"] = []
    for neg in relation_negs:
        source = sources.get(neg)
        if source is None and len(scene.objects) > 1:
            fallbacks += 1
        pairs["relation"].append((source or compositional, neg))
    return pairs, fallbacks


def count_pair(scene: Scene) -> tuple[str, list[str]]:
    """The scene's true count caption and the other counts' captions (``count_captions()``)."""
    true_n = len(scene.objects)
    options = scene.count_captions()
    true = [text for n, text in options if n == true_n]
    if len(true) != 1:
        raise ValueError(f"scene {scene.id}: expected one count caption for n={true_n}")
    return true[0], [text for n, text in options if n != true_n]
