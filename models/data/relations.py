"""Spatial and size relations between two objects, computed from geometry, and their phrases.

A spatial relation is stated only with a clear margin (``MARGIN`` of the image side between the
centres), so that it and its reverse are never both arguable; scene sampling places every pair of
objects at least that far apart on one axis, so every pair has one.
"""

from __future__ import annotations

from functools import lru_cache

from models.data.vocab import SIZE_RANK, SceneObject

MARGIN = 0.15
RELATIONS: tuple[str, ...] = (
    "left of",
    "right of",
    "above",
    "below",
    "bigger than",
    "smaller than",
)
REVERSE: dict[str, str] = {
    "left of": "right of",
    "right of": "left of",
    "above": "below",
    "below": "above",
    "bigger than": "smaller than",
    "smaller than": "bigger than",
}
# Relation -> phrases; [0] is canonical. "a red circle <phrase> a blue star".
RELATION_PHRASES: dict[str, tuple[str, ...]] = {
    "left of": ("to the left of", "on the left of", "left of"),
    "right of": ("to the right of", "on the right of", "right of"),
    "above": ("above", "higher up than"),
    "below": ("below", "beneath", "under"),
    "bigger than": ("bigger than", "larger than"),
    "smaller than": ("smaller than", "tinier than"),
}


def relation_holds(relation: str, a: SceneObject, b: SceneObject) -> bool:
    """True when "a <relation> b" is clearly true for the scene's geometry."""
    if relation == "left of":
        return b.x - a.x >= MARGIN
    if relation == "right of":
        return a.x - b.x >= MARGIN
    if relation == "above":
        return b.y - a.y >= MARGIN
    if relation == "below":
        return a.y - b.y >= MARGIN
    if relation == "bigger than":
        return SIZE_RANK[a.size] > SIZE_RANK[b.size]
    if relation == "smaller than":
        return SIZE_RANK[a.size] < SIZE_RANK[b.size]
    raise ValueError(f"unknown relation {relation!r}")


# Each scene's texts and negatives ask for its relations several times in a row.
@lru_cache(maxsize=32)
def true_relations(
    objects: tuple[SceneObject, ...],
) -> tuple[tuple[SceneObject, str, SceneObject], ...]:
    """Every clearly true ``(a, relation, b)`` with ``a`` before ``b`` in ``objects``.

    The converse (``b``, reversed relation, ``a``) is true too and left to the phrasing.
    """
    return tuple(
        (a, rel, b)
        for i, a in enumerate(objects)
        for b in objects[i + 1 :]
        for rel in RELATIONS
        if relation_holds(rel, a, b)
    )
