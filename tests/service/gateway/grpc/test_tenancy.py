"""Keys scoped to collections over gRPC (loopback): NOT_FOUND for a collection the key has no
scope on, RESOURCE_EXHAUSTED with a retry-after for a key over its rate, audit lines for deletes
and cancels."""

from __future__ import annotations

import json
import logging
from typing import Any

import grpc
import pytest
from fastapi.testclient import TestClient

from service.core.config import AuthSettings, RateLimit
from service.core.errors import ErrorType
from service.gateway.ratelimit import RateLimiter
from service.rpc.proto import search_pb2 as pb
from service.rpc.proto import search_pb2_grpc as pb_grpc
from service.rpc.status import from_rpc_error

Code = grpc.StatusCode
KEYS = (
    "alpha-s3cret:search@alpha+ingest@alpha+admin@alpha:alpha-bot,"
    "media-s3cret:search@media+ingest@media:media-bot,"
    "ops-s3cret:search+ingest+admin:ops"
)


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock(rest: TestClient, monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Scoped keys for this test; searches limited to 1 a second, burst 1, on a fake clock."""
    runtime = rest.app.state.runtime  # type: ignore[attr-defined]
    auth = AuthSettings.model_validate(
        {"api_keys": KEYS, "search_rate": {"per_s": 1.0}, "write_rate": RateLimit()}
    )
    monkeypatch.setattr(runtime, "settings", runtime.settings.model_copy(update={"auth": auth}))
    fake = Clock()
    monkeypatch.setattr(runtime, "limiter", RateLimiter(clock=fake))
    return fake


def _bearer(name: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {name}-s3cret"),)


def _refused(call: Any, request: Any, name: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call(request, timeout=30, metadata=_bearer(name))
    return raised.value


def test_a_key_never_reaches_a_collection_it_is_not_scoped_for(
    stub: pb_grpc.SearchStub, clock: Clock
) -> None:
    calls = [
        (stub.Search, pb.SearchRequest(text="red", limit=1)),
        (stub.GetItem, pb.GetItemRequest(id="item-red")),
        (stub.DeleteItem, pb.DeleteItemRequest(id="item-red")),
        (stub.Embed, pb.EmbedRequest(texts=["red"])),
        (stub.Ingest, pb.IngestRequest(directory="/nowhere")),
        (stub.ListJobs, pb.ListJobsRequest(collection="media")),
    ]
    for call, request in calls:
        err = _refused(call, request, "alpha")
        assert err.code() is Code.NOT_FOUND, call
        assert err.details() == "collection 'media' does not exist"
        assert from_rpc_error(err).type is ErrorType.not_found
    # A job is reached through its own collection: an unknown one is unknown to every key.
    for call, request in [
        (stub.GetJob, pb.GetJobRequest(id="j")),
        (stub.CancelJob, pb.CancelJobRequest(id="j")),
    ]:
        err = _refused(call, request, "alpha")
        assert (err.code(), err.details()) == (Code.NOT_FOUND, "no job 'j'")
    # A collection named in the message is checked too: media-bot may not ingest into alpha.
    err = _refused(stub.Ingest, pb.IngestRequest(directory="/x", collection="alpha"), "media")
    assert (err.code(), err.details()) == (Code.NOT_FOUND, "collection 'alpha' does not exist")
    # The item is still there, and the scoped key of its collection reaches it.
    assert stub.GetItem(pb.GetItemRequest(id="item-red"), metadata=_bearer("media")).id


def test_rate_limit_is_resource_exhausted_with_retry_after(
    stub: pb_grpc.SearchStub, clock: Clock
) -> None:
    search = pb.SearchRequest(text="red", limit=1)
    assert stub.Search(search, timeout=30, metadata=_bearer("media")).hits
    err = _refused(stub.Search, search, "media")
    assert err.code() is Code.RESOURCE_EXHAUSTED
    rebuilt = from_rpc_error(err)
    assert rebuilt.type is ErrorType.overloaded and rebuilt.retry_after_s == pytest.approx(1.0)
    # Another key is not held back; the key itself is again after a second.
    assert stub.Search(search, timeout=30, metadata=_bearer("ops")).hits
    clock.now += 1.0
    assert stub.Search(search, timeout=30, metadata=_bearer("media")).hits


def test_deletes_and_cancels_leave_audit_lines(
    stub: pb_grpc.SearchStub, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clipsearch.audit")
    err = _refused(stub.DeleteItem, pb.DeleteItemRequest(id="no-such-item"), "ops")
    assert err.code() is Code.NOT_FOUND
    err = _refused(stub.CancelJob, pb.CancelJobRequest(id="j"), "alpha")
    assert err.code() is Code.NOT_FOUND
    stub.Search(pb.SearchRequest(text="red", limit=1), timeout=30, metadata=_bearer("ops"))
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "clipsearch.audit"]
    assert [(x["who"], x["action"], x["result"], x["via"]) for x in lines] == [
        ("ops", "delete_item", "not_found", "grpc"),
        ("alpha-bot", "cancel_job", "not_found", "grpc"),
    ]
    assert lines[0]["target"] == {"collection": "media", "id": "no-such-item"}
    assert lines[0]["client"] == "127.0.0.1"
    assert "s3cret" not in caplog.text
