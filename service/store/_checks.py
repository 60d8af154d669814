"""Input checks shared by both VectorStore adapters, so that both refuse the same things alike.

Kept free of qdrant imports: the embedded path must not pay for importing qdrant-client.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence, Set
from numbers import Real
from typing import Any

import numpy as np

from service.core.domain import MULTI_VECTORS, FilterValue, VectorName, VectorValue
from service.core.errors import ClipsearchError, ErrorType, invalid

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


def multi_names(dims: Mapping[str, int]) -> frozenset[str]:
    """The vectors of a new collection that are multivectors (MaxSim over their rows)."""
    return frozenset(name for name in dims if name in MULTI_VECTORS)


def storage_vectors(
    collection: str,
    dims: Mapping[str, int],
    multi: Set[str],
    vectors: Mapping[str, Any],
    what: str,
) -> dict[str, VectorValue]:
    """A point's vectors checked against the collection and shaped as it stores them.

    ``multi`` names the collection's multivectors: each takes a non-empty list of rows, or one
    vector as a one-row multivector. Every row is checked here, before the engine sees it: Qdrant
    Edge panics (it does not raise) on a ragged multivector. A collection created before captions
    were multivectors stores ``caption`` as one vector: it still takes a one-row caption, and
    refuses more rows with the way out named.
    """
    out: dict[str, VectorValue] = {}
    for name, value in vectors.items():
        size = _size(dims, name, what)
        rows = _rows(value, name, what)
        if name in multi:
            if rows is None:
                out[name] = [_flat(value, size, name, what)]
            else:
                out[name] = [
                    _flat(row, size, name, f"{what} (row {i})") for i, row in enumerate(rows)
                ]
        elif rows is None:
            out[name] = _flat(value, size, name, what)
        elif len(rows) == 1 and name in MULTI_VECTORS:
            out[name] = _flat(rows[0], size, name, what)
        elif name in MULTI_VECTORS:
            raise ClipsearchError(
                ErrorType.conflict,
                f"collection {collection!r} stores {name!r} as a single vector (it was created "
                f"before long captions became multivectors), and {what} has {len(rows)} chunks: "
                "reindex the collection to store long captions",
                {"collection": collection, "vector": name, "chunks": len(rows)},
            )
        else:
            raise invalid(f"vector {name!r} of {what} takes one vector, not a list of vectors")
    return out


def query_vector(dims: Mapping[str, int], name: str, vector: Sequence[float]) -> list[float]:
    """A search query: always one vector (against a multivector it is a one-row query, so
    MaxSim scores a point by its best-matching row)."""
    size = _size(dims, name, "query")
    if _rows(vector, name, "query") is not None:
        raise invalid(f"the query for {name!r} must be one vector, not a list of vectors")
    return _flat(vector, size, name, "query")


def domain_vectors(raw: Any) -> dict[str, VectorValue]:
    """Vectors as a store returned them → the domain shapes (``Record.vectors``): a name in
    MULTI_VECTORS always as rows, also when a collection made before multivectors stores it as
    one vector."""
    if not isinstance(raw, Mapping):
        return {}
    out: dict[str, VectorValue] = {}
    for name, value in raw.items():
        values = list(value)
        if values and not isinstance(values[0], Real):
            out[name] = [_floats(row) for row in values]
        elif name in MULTI_VECTORS:
            out[name] = [_floats(values)]
        else:
            out[name] = _floats(values)
    return out


def _floats(values: Any) -> list[float]:
    """A vector as Python floats. A store's own list of floats is taken as it is (converting
    each element again cost a search ~1 ms of 12 on 50 candidates); anything else (numpy
    scalars, an array) in one numpy pass."""
    if isinstance(values, list) and (not values or type(values[0]) is float):
        return values
    converted: list[float] = np.asarray(values, dtype=np.float64).tolist()
    return converted


def _size(dims: Mapping[str, int], name: str, what: str) -> int:
    size = dims.get(name)
    if size is None:
        raise invalid(f"unknown vector {name!r} for {what}", {"vectors": sorted(dims)})
    return size


def _rows(value: Any, name: str, what: str) -> list[Any] | None:
    """The rows of a multivector, or None for one vector."""
    if isinstance(value, str | bytes | Mapping) or not hasattr(value, "__len__"):
        raise invalid(f"vector {name!r} of {what} is not a list of numbers")
    if len(value) == 0:
        raise invalid(f"vector {name!r} of {what} is empty")
    return None if isinstance(value[0], Real) else list(value)


def _flat(value: Any, size: int, name: str, what: str) -> list[float]:
    """One vector of ``size`` numbers (the engines check the numbers themselves)."""
    if isinstance(value, str | bytes | Mapping) or not hasattr(value, "__len__"):
        raise invalid(f"vector {name!r} of {what} is not a list of numbers")
    if len(value) != size:
        raise invalid(f"vector {name!r} of {what} has {len(value)} dims, expected {size}")
    if len(value) and not isinstance(value[0], Real):
        raise invalid(f"vector {name!r} of {what} is not a list of numbers")
    return value if isinstance(value, list) else list(value)
