"""Domain types shared by the store, the search planner, the indexer and the gateway."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

# ``visual``: image→image features, only in collections built by a bundle that has them.
VectorName = Literal["image", "caption", "description", "visual"]
VECTOR_NAMES: tuple[VectorName, ...] = ("image", "caption", "description", "visual")
# Named vectors stored as a multivector (one row per chunk, compared by MaxSim): a long caption
# is cut into sentence chunks that each fit the text tower, so none of it is truncated away.
MULTI_VECTORS: frozenset[str] = frozenset({"caption"})
Lane = Literal["interactive", "bulk"]
# A named vector's value: one vector, or for a name in MULTI_VECTORS its rows (one per chunk).
Vector = list[float]
MultiVector = list[list[float]]
VectorValue = Vector | MultiVector


class Kind(StrEnum):
    image = "image"
    video_segment = "video_segment"
    text = "text"


# Payload fields a search filter may match on (equality; a list value means "any of").
FILTERABLE_FIELDS: frozenset[str] = frozenset({"kind", "tags", "media_id", "video_id"})
FilterValue = str | int | bool | list[str] | list[int]


def collection_dims(spaces: Mapping[str, int]) -> dict[VectorName, int]:
    """The named vectors (and their sizes) of a collection that a bundle with these vector
    spaces builds: the three every bundle has, and ``visual`` where it has one."""
    return {name: int(spaces[name]) for name in VECTOR_NAMES if spaces.get(name)}


_ROOT_NAMESPACE = uuid.UUID("6f1c1f0e-6a59-5b8e-9d7c-3c1a1e5c2f10")


def collection_namespace(collection: str) -> uuid.UUID:
    return uuid.uuid5(_ROOT_NAMESPACE, f"collection:{collection}")


def point_id(collection: str, source_key: str, segment: int = 0) -> str:
    """UUIDv5 of (collection namespace, source id or content sha256, segment index).

    Re-ingesting the same thing yields the same id, so an upsert replaces instead of duplicating.
    """
    return str(uuid.uuid5(collection_namespace(collection), f"{source_key}#{segment}"))


@dataclass(frozen=True)
class Point:
    """A point to upsert. ``vectors["caption"]`` is a multivector (``list[list[float]]``, one
    row per chunk); every other vector is a ``list[float]``. A store also takes a lone caption
    vector, as a one-row multivector."""

    id: str
    vectors: dict[str, VectorValue]
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredHit:
    id: str
    score: float
    payload: dict[str, Any]


@dataclass(frozen=True)
class Record:
    id: str
    payload: dict[str, Any]
    # The shapes of ``Point.vectors``: a multivector for each name in MULTI_VECTORS.
    vectors: dict[str, VectorValue] = field(default_factory=dict)
