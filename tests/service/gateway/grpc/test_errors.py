"""Refusals over gRPC: auth by scope, overload, bad input, deadlines, and the one error table."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import pytest
from fastapi.testclient import TestClient

from service.core.errors import ClipsearchError, ErrorType
from service.gateway.grpc import GrpcGateway
from service.gateway.state import Components
from service.rpc.proto import search_pb2 as pb
from service.rpc.proto import search_pb2_grpc as pb_grpc
from service.rpc.status import from_rpc_error
from tests.service.gateway.grpc.gate import Gated

Code = grpc.StatusCode


def _refused(call: Any, request: Any, **kw: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call(request, timeout=30, **kw)
    return raised.value


def _code(call: Any, request: Any, **kw: Any) -> grpc.StatusCode:
    code: grpc.StatusCode = _refused(call, request, **kw).code()
    return code


def _bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


# -- auth ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("api_keys")
def test_auth_is_refused_or_allowed_by_scope(stub: pb_grpc.SearchStub) -> None:
    search = pb.SearchRequest(text="a red circle", limit=1)
    assert _code(stub.Search, search) is Code.UNAUTHENTICATED
    assert _code(stub.Search, search, metadata=_bearer("wrong")) is Code.UNAUTHENTICATED
    assert _code(stub.Search, search, metadata=_bearer("writer")) is Code.PERMISSION_DENIED
    assert len(stub.Search(search, metadata=_bearer("reader"), timeout=30).hits) == 1
    assert len(stub.Search(search, metadata=(("x-api-key", "admin"),), timeout=30).hits) == 1

    embed = pb.EmbedRequest(texts=["a"])
    assert _code(stub.Embed, embed, metadata=_bearer("writer")) is Code.PERMISSION_DENIED
    assert stub.Embed(embed, metadata=_bearer("reader"), timeout=30).texts
    get = pb.GetItemRequest(id="item-red")
    assert _code(stub.GetItem, get) is Code.UNAUTHENTICATED
    assert stub.GetItem(get, metadata=_bearer("reader"), timeout=30).id

    # The ingest scope: the reader is refused before anything changes or is looked up.
    for call, request in (
        (stub.DeleteItem, pb.DeleteItemRequest(id="item-red")),
        (stub.Ingest, pb.IngestRequest(directory="/nowhere")),
        (stub.GetJob, pb.GetJobRequest(id="nope")),
        (stub.ListJobs, pb.ListJobsRequest()),
        (stub.CancelJob, pb.CancelJobRequest(id="nope")),
    ):
        assert _code(call, request) is Code.UNAUTHENTICATED
        assert _code(call, request, metadata=_bearer("reader")) is Code.PERMISSION_DENIED
    assert stub.GetItem(get, metadata=_bearer("reader"), timeout=30).id  # not deleted
    assert _code(stub.GetJob, pb.GetJobRequest(id="nope"), metadata=_bearer("writer")) is (
        Code.NOT_FOUND  # past auth: the job does not exist
    )
    stub.ListJobs(pb.ListJobsRequest(), metadata=_bearer("writer"), timeout=30)


# -- overload --------------------------------------------------------------------------------


class _Overloaded:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def embed_texts(self, texts: Sequence[str], **kw: Any) -> Any:
        raise ClipsearchError(ErrorType.overloaded, "queue full", retry_after_s=2.5)


def test_a_full_encoder_lane_is_resource_exhausted_as_rest_is_429(
    stub: pb_grpc.SearchStub,
    rest: TestClient,
    components: Components,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(components, "embedder", _Overloaded(components.embedder))
    monkeypatch.setattr(components.search, "_embedder", _Overloaded(components.embedder))
    err = _refused(stub.Search, pb.SearchRequest(text="a red circle"))
    assert err.code() is Code.RESOURCE_EXHAUSTED
    rebuilt = from_rpc_error(err)
    assert (rebuilt.type, rebuilt.retry_after_s) == (ErrorType.overloaded, 2.5)
    assert _code(stub.Embed, pb.EmbedRequest(texts=["a"])) is Code.RESOURCE_EXHAUSTED
    response = rest.post("/v1/search", json={"text": "a red circle"})
    assert (response.status_code, response.headers["retry-after"]) == (429, "3")


@pytest.fixture()
def blocking(components: Components, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gated]:
    slow = Gated(components.embedder, "embed_texts")
    monkeypatch.setattr(components, "embedder", slow)
    yield slow
    slow.release.set()


def test_calls_past_the_edge_limit_are_refused_at_once(rest: TestClient, blocking: Gated) -> None:
    app = rest.app
    edge = GrpcGateway(
        app.state.runtime,  # type: ignore[attr-defined]
        app.state.metrics,  # type: ignore[attr-defined]
        host="127.0.0.1",
        port=0,
        max_workers=2,
        max_concurrent_rpcs=1,
    )
    edge.start()
    try:
        with grpc.insecure_channel(edge.address) as channel:
            stub = pb_grpc.SearchStub(channel)
            first = stub.Embed.future(pb.EmbedRequest(texts=["a"]), timeout=30)
            assert blocking.entered.wait(30)
            started = time.monotonic()
            assert _code(stub.Embed, pb.EmbedRequest(texts=["b"])) is Code.RESOURCE_EXHAUSTED
            assert time.monotonic() - started < 10  # refused, not queued behind the first
            blocking.release.set()
            assert len(first.result().texts) == 1
            assert len(stub.Embed(pb.EmbedRequest(texts=["c"]), timeout=30).texts) == 1
    finally:
        edge.stop(grace=0)


# -- deadlines -------------------------------------------------------------------------------


def _timeouts(rest: TestClient) -> float:
    metrics = rest.app.state.metrics  # type: ignore[attr-defined]
    value = metrics.registry.get_sample_value(
        "clipsearch_errors_total", {"type": "timeout", "transport": "grpc"}
    )
    return value or 0.0


def test_work_past_the_deadline_ends_with_deadline_exceeded(
    stub: pb_grpc.SearchStub, rest: TestClient, blocking: Gated
) -> None:
    before = _timeouts(rest)
    with pytest.raises(grpc.RpcError) as raised:
        stub.Embed(pb.EmbedRequest(texts=["a"]), timeout=0.5)
    err = raised.value
    assert err.code() is Code.DEADLINE_EXCEEDED
    assert blocking.entered.is_set()
    blocking.release.set()
    # The server, not only the client, ended the call as DEADLINE_EXCEEDED: no answer was sent.
    _wait_for_timeouts(rest, before + 1)
    assert len(stub.Embed(pb.EmbedRequest(texts=["a"]), timeout=30).texts) == 1


def _wait_for_timeouts(rest: TestClient, count: float) -> None:
    waited = time.monotonic() + 30
    while _timeouts(rest) < count and time.monotonic() < waited:
        time.sleep(0.02)
    assert _timeouts(rest) == count


def test_a_delete_past_its_deadline_deletes_nothing(
    stub: pb_grpc.SearchStub,
    rest: TestClient,
    components: Components,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The deadline passes while the item is looked up: the call ends before it deletes."""
    find = components.search.find
    entered, release = threading.Event(), threading.Event()
    entered_at: list[float] = []

    def slow_find(item_id: str, **kw: Any) -> Any:
        entered_at.append(time.monotonic())
        entered.set()
        release.wait(30)
        return find(item_id, **kw)

    monkeypatch.setattr(components.search, "find", slow_find)
    before = _timeouts(rest)
    with pytest.raises(grpc.RpcError) as raised:
        stub.DeleteItem(pb.DeleteItemRequest(id="item-red"), timeout=0.5)
    assert raised.value.code() is Code.DEADLINE_EXCEEDED
    assert entered.is_set()
    # The server's deadline counts from when the request reached it, which a loaded machine can
    # make later than the client's: release the lookup only once that deadline has passed too.
    time.sleep(max(0.0, entered_at[0] + 0.6 - time.monotonic()))
    release.set()
    _wait_for_timeouts(rest, before + 1)  # the server's call has ended
    monkeypatch.setattr(components.search, "find", find)
    assert stub.GetItem(pb.GetItemRequest(id="item-red"), timeout=30).id  # still there
