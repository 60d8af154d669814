"""The boundary to qdrant-client: payload filters, and its exceptions turned into
ClipsearchError (connection trouble and our own bad API key → unavailable)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import httpx
from qdrant_client import models
from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from service.core.domain import FilterValue
from service.core.errors import ClipsearchError, ErrorType, invalid, not_found
from service.store._checks import check_filter

_STATUS_TYPES = {
    400: ErrorType.invalid_input,
    404: ErrorType.not_found,
    409: ErrorType.conflict,
    422: ErrorType.invalid_input,
    429: ErrorType.overloaded,
    401: ErrorType.unavailable,  # our API key is wrong: the store is unusable, not the request
    403: ErrorType.unavailable,
    502: ErrorType.unavailable,
    503: ErrorType.unavailable,
    504: ErrorType.unavailable,
}


def server_filter(flt: Mapping[str, FilterValue] | None) -> models.Filter | None:
    conditions: list[models.Condition] = []
    for key, value in check_filter(flt):
        match: models.Match
        if isinstance(value, list):
            match = models.MatchAny(any=value)
        else:
            match = models.MatchValue(value=value)
        conditions.append(models.FieldCondition(key=key, match=match))
    return models.Filter(must=conditions) if conditions else None


@contextmanager
def translate(action: str, collection: str) -> Iterator[None]:
    """qdrant-client exceptions → ClipsearchError (connection trouble → unavailable)."""
    try:
        yield
    except ClipsearchError:
        raise
    except ResourceExhaustedResponse as exc:
        raise ClipsearchError(
            ErrorType.overloaded,
            f"Qdrant is rate limiting {action}",
            str(exc),
            retry_after_s=float(exc.retry_after_s),
        ) from exc
    except UnexpectedResponse as exc:
        kind = _STATUS_TYPES.get(exc.status_code or 0, ErrorType.internal)
        detail = exc.content.decode("utf-8", "replace")[:500]
        if kind is ErrorType.not_found:
            raise not_found(f"collection {collection!r} does not exist", detail) from exc
        raise ClipsearchError(
            kind, f"Qdrant refused {action} on {collection!r} ({exc.status_code})", detail
        ) from exc
    except ResponseHandlingException as exc:
        source = exc.source
        if isinstance(source, httpx.TransportError):
            raise ClipsearchError(
                ErrorType.unavailable, f"Qdrant is unreachable ({action})", repr(source)
            ) from exc
        raise ClipsearchError(
            ErrorType.internal, f"bad answer from Qdrant to {action}", repr(source)
        ) from exc
    except ValueError as exc:
        # Local mode (qdrant-client without a server) reports everything as ValueError.
        text = str(exc)
        if text.startswith("Collection") and text.endswith("not found"):
            raise not_found(f"collection {collection!r} does not exist", text) from exc
        raise invalid(f"{action} on {collection!r} rejected: {text}", text) from exc
    except (httpx.TransportError, ConnectionError, TimeoutError) as exc:
        raise ClipsearchError(
            ErrorType.unavailable, f"Qdrant is unreachable ({action})", repr(exc)
        ) from exc
    except Exception as exc:
        raise ClipsearchError(
            ErrorType.internal, f"Qdrant failed to {action} on {collection!r}", repr(exc)
        ) from exc
