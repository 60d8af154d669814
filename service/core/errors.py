"""One error taxonomy for every transport.

Domain code raises :class:`ClipsearchError` with an :class:`ErrorType`; the gateway maps the type
to an HTTP status once (``service/gateway/errors.py``) and the gRPC servers map it to a status code
once. The JSON shape is always ``{"error": {"type", "message", "detail"}}``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorType(StrEnum):
    invalid_input = "invalid_input"
    unsupported_media = "unsupported_media"
    payload_too_large = "payload_too_large"
    not_found = "not_found"
    conflict = "conflict"
    unauthorized = "unauthorized"
    forbidden = "forbidden"
    overloaded = "overloaded"
    timeout = "timeout"
    unavailable = "unavailable"
    bundle_invalid = "bundle_invalid"
    internal = "internal"


# The one mapping from error types to HTTP statuses: the REST API's handlers
# (``service/gateway/errors.py``) and the admin dashboard answer with it.
HTTP_STATUS: dict[ErrorType, int] = {
    ErrorType.invalid_input: 400,
    ErrorType.unauthorized: 401,
    ErrorType.forbidden: 403,
    ErrorType.not_found: 404,
    ErrorType.conflict: 409,
    ErrorType.payload_too_large: 413,
    ErrorType.unsupported_media: 415,
    ErrorType.overloaded: 429,
    ErrorType.internal: 500,
    ErrorType.bundle_invalid: 500,
    ErrorType.unavailable: 503,
    ErrorType.timeout: 504,
}


class ClipsearchError(Exception):
    """A failure with a type that every transport knows how to report."""

    def __init__(
        self,
        type: ErrorType,  # noqa: A002 - mirrors the JSON field name
        message: str,
        detail: Any = None,
        *,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.type = type
        self.message = message
        self.detail = detail
        self.retry_after_s = retry_after_s

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"type": self.type.value, "message": self.message, "detail": self.detail}}

    def __repr__(self) -> str:
        return f"ClipsearchError({self.type.value!r}, {self.message!r})"


def invalid(message: str, detail: Any = None) -> ClipsearchError:
    return ClipsearchError(ErrorType.invalid_input, message, detail)


def unsupported(message: str, detail: Any = None) -> ClipsearchError:
    return ClipsearchError(ErrorType.unsupported_media, message, detail)


def too_large(message: str, detail: Any = None) -> ClipsearchError:
    return ClipsearchError(ErrorType.payload_too_large, message, detail)


def not_found(message: str, detail: Any = None) -> ClipsearchError:
    return ClipsearchError(ErrorType.not_found, message, detail)
