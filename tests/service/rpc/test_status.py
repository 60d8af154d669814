"""ErrorType <-> gRPC status: one table, and every error survives the trip exactly."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from service.core.errors import ClipsearchError, ErrorType
from service.rpc.status import (
    DETAIL_KEY,
    GRPC_STATUS,
    MAX_DETAIL_CHARS,
    abort,
    error_metadata,
    format_retry_after,
    from_rpc_error,
)

METHOD = "/test.Errors/Raise"
ERRORS: dict[str, ClipsearchError] = {
    t.value: ClipsearchError(t, f"{t.value} happened", {"why": t.value, "n": [1, 2]})
    for t in ErrorType
}
ERRORS["overloaded"] = ClipsearchError(
    ErrorType.overloaded, "the lane is full", {"lane": "bulk"}, retry_after_s=1.0
)
ERRORS["fraction"] = ClipsearchError(ErrorType.unavailable, "soon", retry_after_s=0.25)
ERRORS["no-detail"] = ClipsearchError(ErrorType.internal, "boom: ünïcode message")
ERRORS["huge"] = ClipsearchError(ErrorType.invalid_input, "big detail", {"x": "y" * 20_000})


class _Handler(grpc.GenericRpcHandler):
    def service(self, details: Any) -> grpc.RpcMethodHandler | None:
        if details.method != METHOD:
            return None

        def raise_it(request: bytes, context: grpc.ServicerContext) -> bytes:
            abort(context, ERRORS[request.decode()])

        return grpc.unary_unary_rpc_method_handler(raise_it)


@pytest.fixture(scope="module")
def call() -> Iterator[grpc.UnaryUnaryMultiCallable]:
    server = grpc.server(ThreadPoolExecutor(max_workers=2), handlers=[_Handler()])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel.unary_unary(METHOD)
    server.stop(0)


def test_every_error_type_has_a_status_code() -> None:
    assert set(GRPC_STATUS) == set(ErrorType)
    assert GRPC_STATUS[ErrorType.overloaded] is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert GRPC_STATUS[ErrorType.timeout] is grpc.StatusCode.DEADLINE_EXCEEDED
    assert GRPC_STATUS[ErrorType.unavailable] is grpc.StatusCode.UNAVAILABLE
    assert GRPC_STATUS[ErrorType.payload_too_large] is grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_errors_survive_the_trip_exactly(call: grpc.UnaryUnaryMultiCallable, name: str) -> None:
    sent = ERRORS[name]
    with pytest.raises(grpc.RpcError) as err:
        call(name.encode(), timeout=10)
    assert err.value.code() is GRPC_STATUS[sent.type]
    got = from_rpc_error(err.value)
    assert (got.type, got.message, got.retry_after_s) == (
        sent.type,
        sent.message,
        sent.retry_after_s,
    )
    if name == "huge":  # too big for metadata: dropped, never the error itself
        assert got.detail == {"truncated": True, "chars": len(json.dumps(sent.detail))}
    else:
        assert got.detail == sent.detail


def test_retry_after_is_whole_seconds_when_it_can_be() -> None:
    assert format_retry_after(1.0) == "1"
    assert format_retry_after(0.25) == "0.25"
    assert dict(error_metadata(ERRORS["overloaded"]))["retry-after"] == "1"


def test_large_details_are_truncated() -> None:
    meta = dict(error_metadata(ERRORS["huge"]))
    assert len(meta[DETAIL_KEY]) < MAX_DETAIL_CHARS


class _Bare(grpc.RpcError):
    """An RpcError as grpc raises it for failures outside our code: a code, no metadata."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[()]:
        return ()


@pytest.mark.parametrize(
    ("code", "details", "expected"),
    [
        (grpc.StatusCode.UNAVAILABLE, "failed to connect", ErrorType.unavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", ErrorType.timeout),
        (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "Concurrent RPC limit exceeded!",
            ErrorType.overloaded,
        ),
        (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "Received message larger than max (9 vs. 4)",
            ErrorType.payload_too_large,
        ),
        (grpc.StatusCode.UNKNOWN, "Exception calling application", ErrorType.internal),
        (grpc.StatusCode.UNIMPLEMENTED, "Method not found!", ErrorType.internal),
    ],
)
def test_statuses_without_metadata_get_their_type_from_the_code(
    code: grpc.StatusCode, details: str, expected: ErrorType
) -> None:
    exc = from_rpc_error(_Bare(code, details), endpoint="w:1")
    assert exc.type is expected and exc.message == details
    assert exc.detail == {"grpc_code": code.name, "endpoint": "w:1"}
