"""Input checks shared by both VectorStore adapters, so that both refuse the same things alike.

Kept free of qdrant imports: the embedded path must not pay for importing qdrant-client.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence

from service.core.domain import FilterValue, VectorName
from service.core.errors import invalid

# A collection name becomes a folder name in the embedded store: no separators, no dot first.
_COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,254}$")


def check_collection_name(name: str) -> None:
    if not isinstance(name, str) or not _COLLECTION_NAME.fullmatch(name):
        raise invalid(
            f"invalid collection name {name!r}",
            "letters, digits, '_', '-', '.', '@'; starting with a letter or digit; at most 255",
        )


def check_dims(dims: Mapping[VectorName, int]) -> dict[str, int]:
    if not dims:
        raise invalid("a collection needs at least one named vector")
    out: dict[str, int] = {}
    for name, size in dims.items():
        if not isinstance(name, str) or not name:
            raise invalid(f"invalid vector name {name!r}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise invalid(f"vector {name!r} needs a positive integer size, got {size!r}")
        out[name] = size
    return out


def parse_ids(ids: Sequence[str]) -> list[str]:
    """Canonical UUID strings; point ids are UUIDs (``point_id``), anything else is refused."""
    if isinstance(ids, str):
        raise invalid("ids must be a list of UUID strings, not one string")
    out = []
    for raw in ids:
        try:
            out.append(str(uuid.UUID(str(raw))))
        except ValueError:
            raise invalid(
                f"point id {raw!r} is not a UUID", "use service.core.domain.point_id"
            ) from None
    return out


def check_page(limit: int, offset: int) -> None:
    if limit < 1:
        raise invalid(f"limit must be at least 1, got {limit}")
    if offset < 0:
        raise invalid(f"offset must not be negative, got {offset}")


def check_filter(flt: Mapping[str, FilterValue] | None) -> list[tuple[str, FilterValue]]:
    """Filter items after checking them; a list matches any of its values (all str or all int)."""
    if not flt:
        return []
    items: list[tuple[str, FilterValue]] = []
    for key, value in flt.items():
        if not isinstance(key, str) or not key:
            raise invalid(f"invalid filter field {key!r}")
        if isinstance(value, list):
            strings = all(isinstance(v, str) for v in value)
            ints = all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            if not (strings or ints):
                raise invalid(f"filter list for {key!r} must be all strings or all integers")
        elif not isinstance(value, str | int):  # bool is an int
            raise invalid(f"filter value for {key!r} must be a string, integer, bool or list")
        items.append((key, value))
    return items
