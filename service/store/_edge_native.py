"""The boundary to qdrant-edge's native calls: its filters, and its bare exceptions turned into
ClipsearchError (see the facts in ``service.store.edge``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import qdrant_edge as qe

from service.core.domain import FilterValue
from service.core.errors import ClipsearchError, ErrorType, invalid
from service.store._checks import check_filter

# Messages of the bare Exceptions that mean "the caller sent something wrong".
_INPUT_MARKERS = ("Wrong input", "Bad input", "Bad request", "dimension error", "vector name")


def edge_filter(flt: Mapping[str, FilterValue] | None) -> qe.Filter | None:
    conditions: list[Any] = []
    for key, value in check_filter(flt):
        if isinstance(value, list):
            match: Any = qe.MatchAny(value)
        elif isinstance(value, bool):
            match = qe.MatchValue(np.bool_(value))  # type: ignore[arg-type]  # see module doc
        else:
            match = qe.MatchValue(value)
        conditions.append(qe.FieldCondition(key, match=match))
    return qe.Filter(must=conditions) if conditions else None


@contextmanager
def native_errors(action: str, collection: str) -> Iterator[None]:
    """Turn qdrant-edge's bare exceptions into ClipsearchError, keeping the original text."""
    try:
        yield
    except ClipsearchError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:
        raise invalid(f"{action} on {collection!r} rejected: {_first_line(exc)}", str(exc)) from exc
    except Exception as exc:
        text = str(exc)
        if "WouldBlock" in text:
            raise ClipsearchError(
                ErrorType.unavailable, f"collection {collection!r} is open elsewhere", text
            ) from exc
        if any(marker in text for marker in _INPUT_MARKERS):
            raise invalid(f"{action} on {collection!r} rejected: {_first_line(exc)}", text) from exc
        raise ClipsearchError(
            ErrorType.internal, f"embedded store failed to {action} on {collection!r}", text
        ) from exc


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().split("\n", 1)[0][:200]
