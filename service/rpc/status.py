"""The one mapping between :class:`ErrorType` and gRPC status codes, both ways.

A server aborts a call with :func:`abort`: the status code comes from :data:`GRPC_STATUS`, the
message is the error's message, and the trailing metadata carries what a code cannot say — the
exact type, the JSON detail and the retry-after hint — so that :func:`from_rpc_error` on the
client rebuilds the very ``ClipsearchError`` the server raised. Failures that never reached our
code (connection refused, the client's own deadline, grpc's message-size limit) carry no such
metadata and get their type from the code alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, NoReturn

import grpc

from service.core.errors import ClipsearchError, ErrorType

TYPE_KEY = "clipsearch-error-type"
DETAIL_KEY = "clipsearch-error-detail"
RETRY_AFTER_KEY = "retry-after"
# grpc refuses metadata beyond ~8 KiB by default; a bigger detail is dropped, not the error.
MAX_DETAIL_CHARS = 4096

GRPC_STATUS: dict[ErrorType, grpc.StatusCode] = {
    ErrorType.invalid_input: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorType.unsupported_media: grpc.StatusCode.INVALID_ARGUMENT,
    # Not OUT_OF_RANGE: that code means "read past the end" (clients iterate until they see it).
    # The exact type travels in the metadata anyway.
    ErrorType.payload_too_large: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorType.not_found: grpc.StatusCode.NOT_FOUND,
    # google.rpc maps ALREADY_EXISTS to HTTP 409, as the gateway maps conflict.
    ErrorType.conflict: grpc.StatusCode.ALREADY_EXISTS,
    ErrorType.unauthorized: grpc.StatusCode.UNAUTHENTICATED,
    ErrorType.forbidden: grpc.StatusCode.PERMISSION_DENIED,
    ErrorType.overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorType.timeout: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorType.unavailable: grpc.StatusCode.UNAVAILABLE,
    ErrorType.bundle_invalid: grpc.StatusCode.INTERNAL,
    ErrorType.internal: grpc.StatusCode.INTERNAL,
}

# For statuses without our metadata: what each code most plausibly means.
_CODE_TYPE: dict[grpc.StatusCode, ErrorType] = {
    grpc.StatusCode.INVALID_ARGUMENT: ErrorType.invalid_input,
    grpc.StatusCode.OUT_OF_RANGE: ErrorType.invalid_input,
    grpc.StatusCode.NOT_FOUND: ErrorType.not_found,
    grpc.StatusCode.ALREADY_EXISTS: ErrorType.conflict,
    grpc.StatusCode.ABORTED: ErrorType.conflict,
    grpc.StatusCode.FAILED_PRECONDITION: ErrorType.conflict,
    grpc.StatusCode.UNAUTHENTICATED: ErrorType.unauthorized,
    grpc.StatusCode.PERMISSION_DENIED: ErrorType.forbidden,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ErrorType.overloaded,
    grpc.StatusCode.DEADLINE_EXCEEDED: ErrorType.timeout,
    grpc.StatusCode.UNAVAILABLE: ErrorType.unavailable,
    grpc.StatusCode.CANCELLED: ErrorType.unavailable,
}


def error_metadata(exc: ClipsearchError) -> tuple[tuple[str, str], ...]:
    """Trailing metadata that lets the client rebuild ``exc`` exactly (ASCII only)."""
    pairs = [(TYPE_KEY, exc.type.value)]
    if exc.detail is not None:
        detail = json.dumps(exc.detail, default=str, sort_keys=True)
        if len(detail) > MAX_DETAIL_CHARS:
            detail = json.dumps({"truncated": True, "chars": len(detail)})
        pairs.append((DETAIL_KEY, detail))
    if exc.retry_after_s is not None:
        pairs.append((RETRY_AFTER_KEY, format_retry_after(exc.retry_after_s)))
    return tuple(pairs)


def format_retry_after(seconds: float) -> str:
    """Seconds as a decimal string: whole seconds look like HTTP's Retry-After; a fraction is kept
    because the client rebuilds the error exactly."""
    if math.isfinite(seconds) and seconds == int(seconds):
        return str(int(seconds))
    return repr(float(seconds))


def abort(context: grpc.ServicerContext, exc: ClipsearchError) -> NoReturn:
    """End the call with ``exc``: its status code, its message, and its metadata."""
    context.set_trailing_metadata(error_metadata(exc))
    context.abort(GRPC_STATUS[exc.type], exc.message)
    raise AssertionError("unreachable: ServicerContext.abort raises")  # pragma: no cover


def _metadata(err: grpc.RpcError) -> dict[str, str]:
    trailing = getattr(err, "trailing_metadata", None)
    pairs: Sequence[Any] = (trailing() if callable(trailing) else None) or ()
    out: dict[str, str] = {}
    for key, value in pairs:
        out[str(key)] = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    return out


def _type_from_code(code: grpc.StatusCode | None, details: str) -> ErrorType:
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
        return ErrorType.payload_too_large  # grpc's own message-size limit, not a full queue
    return _CODE_TYPE.get(code, ErrorType.internal) if code is not None else ErrorType.internal


def from_rpc_error(err: grpc.RpcError, *, endpoint: str | None = None) -> ClipsearchError:
    """The ``ClipsearchError`` a failed call stands for: the server's own when it sent one."""
    code = err.code() if callable(getattr(err, "code", None)) else None
    details = (err.details() if callable(getattr(err, "details", None)) else None) or ""
    meta = _metadata(err)
    try:
        type_ = ErrorType(meta[TYPE_KEY])
    except (KeyError, ValueError):
        type_ = _type_from_code(code, details)
        detail: Any = {"grpc_code": code.name if code is not None else None}
        if endpoint is not None:
            detail["endpoint"] = endpoint
        message = details or (code.name if code is not None else "gRPC call failed")
        return ClipsearchError(type_, message, detail, retry_after_s=_retry_after(meta))
    raw = meta.get(DETAIL_KEY)
    try:
        detail = json.loads(raw) if raw is not None else None
    except ValueError:
        detail = raw
    return ClipsearchError(type_, details, detail, retry_after_s=_retry_after(meta))


def _retry_after(meta: dict[str, str]) -> float | None:
    raw = meta.get(RETRY_AFTER_KEY)
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None
