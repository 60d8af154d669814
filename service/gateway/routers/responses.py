"""The error responses each operation documents in the OpenAPI schema, all in the one real shape
(``ErrorResponse``: ``{"error": {"type", "message", "detail"}}``).

Naming ``422`` here also keeps FastAPI from documenting its default ``{"detail": [...]}``
validation error, which this gateway never sends (``service.gateway.errors``)."""

from __future__ import annotations

from typing import Any

from service.core.schemas.api import ErrorResponse

_MEANING: dict[int, str] = {
    400: "bad input (`invalid_input`): the message says which field and why",
    401: "no API key, or an unknown one (`unauthorized`)",
    403: "the key lacks this operation's scope, or the target is off limits (`forbidden`)",
    404: "no such resource (`not_found`)",
    409: "the resource's state does not allow it (`conflict`)",
    413: "an upload or fetched body over the size limit (`payload_too_large`)",
    415: "not a supported media type (`unsupported_media`)",
    422: "the request does not match its schema (`invalid_input`; the fields in `detail`)",
    429: "over capacity: retry after the `Retry-After` seconds (`overloaded`)",
    500: "an internal error (`internal`)",
    503: "starting, or a dependency is unreachable: retry after `Retry-After` (`unavailable`)",
    504: "a fetch or a dependency took too long (`timeout`)",
}
# What any authorised operation may answer: no or a wrong key, a malformed request, an internal
# error, and 503 while the service starts.
COMMON = (401, 403, 422, 500, 503)


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: the common errors and ``codes``, each as ``ErrorResponse``."""
    return {
        code: {"model": ErrorResponse, "description": _MEANING[code]}
        for code in sorted({*COMMON, *codes})
    }
