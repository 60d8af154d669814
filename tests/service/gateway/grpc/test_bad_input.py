"""Bad input over gRPC is INVALID_ARGUMENT (or the REST table's code), loses no other work, and
every ErrorType reaches a gRPC caller with the code of the one table."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from fastapi.testclient import TestClient

from service.core.errors import ClipsearchError, ErrorType
from service.gateway.errors import HTTP_STATUS
from service.gateway.state import Components
from service.rpc.proto import search_pb2 as pb
from service.rpc.proto import search_pb2_grpc as pb_grpc
from service.rpc.status import GRPC_STATUS, TYPE_KEY, from_rpc_error
from tests.service.gateway.conftest import COLOURS, png

Code = grpc.StatusCode


def _refused(call: Any, request: Any) -> ClipsearchError:
    with pytest.raises(grpc.RpcError) as raised:
        call(request, timeout=30)
    err = raised.value
    rebuilt = from_rpc_error(err)
    assert GRPC_STATUS[rebuilt.type] is err.code()
    assert dict(err.trailing_metadata())[TYPE_KEY] == rebuilt.type.value  # the server's own
    return rebuilt


def _filter(**values: pb.FilterValue) -> dict[str, pb.FilterValue]:
    return values


BAD_SEARCHES: dict[str, pb.SearchRequest] = {
    "no query": pb.SearchRequest(mode="caption"),
    "two queries": pb.SearchRequest(text="a red circle", image=png(COLOURS["red"])),
    "text and item": pb.SearchRequest(text="a red circle", item_id="item-red"),
    "bad image bytes": pb.SearchRequest(image=b"not an image at all"),
    "empty text": pb.SearchRequest(text=""),
    "limit 0": pb.SearchRequest(text="a", limit=0),
    "limit 101": pb.SearchRequest(text="a", limit=101),
    "offset too far": pb.SearchRequest(text="a", offset=10_001),
    "unknown mode": pb.SearchRequest(text="a", mode="psychic"),
    "unknown group_by": pb.SearchRequest(text="a", group_by="album"),
    "threshold out of range": pb.SearchRequest(text="a", score_threshold=1e6),
    "fused threshold above 1": pb.SearchRequest(text="a", mode="hybrid", score_threshold=1.5),
    "fused threshold below 0": pb.SearchRequest(text="a", score_threshold=-0.5),
    "cosine threshold below -1": pb.SearchRequest(text="a", mode="caption", score_threshold=-1.5),
    "unknown filter key": pb.SearchRequest(
        text="a", filter=_filter(colour=pb.FilterValue(text="red"))
    ),
    "unknown kind": pb.SearchRequest(text="a", filter=_filter(kind=pb.FilterValue(text="song"))),
    "filter without a value": pb.SearchRequest(text="a", filter=_filter(tags=pb.FilterValue())),
    "description mode for an image": pb.SearchRequest(
        image=png(COLOURS["red"]), mode="description"
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SEARCHES))
def test_a_bad_search_is_invalid_argument(stub: pb_grpc.SearchStub, case: str) -> None:
    error = _refused(stub.Search, BAD_SEARCHES[case])
    assert error.type in (ErrorType.invalid_input, ErrorType.unsupported_media), error
    assert error.message


def test_bad_search_messages_name_the_problem(stub: pb_grpc.SearchStub) -> None:
    assert "exactly one" in _refused(stub.Search, BAD_SEARCHES["two queries"]).message
    assert "limit" in _refused(stub.Search, BAD_SEARCHES["limit 101"]).message
    assert "colour" in _refused(stub.Search, BAD_SEARCHES["unknown filter key"]).message
    assert "song" in _refused(stub.Search, BAD_SEARCHES["unknown kind"]).message
    for case, scale in (
        ("fused threshold above 1", "probability of relevance, in [0, 1]"),
        ("fused threshold below 0", "probability of relevance, in [0, 1]"),
        ("cosine threshold below -1", "cosine, in [-1, 1]"),
    ):
        error = _refused(stub.Search, BAD_SEARCHES[case])
        assert error.type is ErrorType.invalid_input and scale in error.message, error.message


def test_a_threshold_off_the_scale_is_refused_as_rest_refuses_it(
    stub: pb_grpc.SearchStub, rest: TestClient
) -> None:
    by_rest = rest.post("/v1/search", json={"text": "a", "mode": "hybrid", "score_threshold": 1.5})
    error = _refused(stub.Search, BAD_SEARCHES["fused threshold above 1"])
    assert HTTP_STATUS[error.type] == by_rest.status_code == 400
    assert error.message == by_rest.json()["error"]["message"]
    assert error.detail == by_rest.json()["error"]["detail"]


def test_unknown_items_and_jobs_are_not_found(stub: pb_grpc.SearchStub) -> None:
    assert _refused(stub.GetItem, pb.GetItemRequest(id="no-such-item")).type is (
        ErrorType.not_found
    )
    assert _refused(stub.DeleteItem, pb.DeleteItemRequest(id="no-such-item")).type is (
        ErrorType.not_found
    )
    assert _refused(stub.Search, pb.SearchRequest(item_id="no-such-item")).type is (
        ErrorType.not_found
    )
    assert _refused(stub.CancelJob, pb.CancelJobRequest(id="no-such-job")).type is (
        ErrorType.not_found
    )


@pytest.mark.parametrize(
    ("call", "request_"),
    [
        ("GetItem", pb.GetItemRequest()),
        ("DeleteItem", pb.DeleteItemRequest()),
        ("GetJob", pb.GetJobRequest()),
        ("Embed", pb.EmbedRequest()),
        ("Embed", pb.EmbedRequest(images=[b""])),
        ("Embed", pb.EmbedRequest(texts=["ok"], images=[b"junk bytes"])),
        ("Embed", pb.EmbedRequest(texts=["x" * 100_000])),
        ("Ingest", pb.IngestRequest()),
        ("Ingest", pb.IngestRequest(urls=pb.Urls())),
        ("Ingest", pb.IngestRequest(urls=pb.Urls(), collection="media")),
        ("ListJobs", pb.ListJobsRequest(page_token="not a token")),
    ],
)
def test_other_bad_requests_are_invalid_argument(
    stub: pb_grpc.SearchStub, call: str, request_: Any
) -> None:
    error = _refused(getattr(stub, call), request_)
    assert GRPC_STATUS[error.type] is Code.INVALID_ARGUMENT, error


def test_a_folder_outside_the_allowed_roots_is_refused_as_rest_refuses_it(
    stub: pb_grpc.SearchStub, rest: TestClient
) -> None:
    by_rest = rest.post("/v1/ingest", json={"source": {"directory": "/etc"}})
    error = _refused(stub.Ingest, pb.IngestRequest(directory="/etc"))
    assert HTTP_STATUS[error.type] == by_rest.status_code
    assert error.message == by_rest.json()["error"]["message"]


def test_an_oversize_message_is_refused_by_size(stub: pb_grpc.SearchStub, rest: TestClient) -> None:
    limit = rest.app.state.runtime.settings.limits.max_upload_bytes  # type: ignore[attr-defined]
    with pytest.raises(grpc.RpcError) as raised:
        stub.Search(pb.SearchRequest(image=b"\0" * (limit + 512 * 1024)), timeout=30)
    assert raised.value.code() is Code.RESOURCE_EXHAUSTED
    assert from_rpc_error(raised.value).type is ErrorType.payload_too_large


def test_still_serving_after_bad_requests(stub: pb_grpc.SearchStub) -> None:
    for request in BAD_SEARCHES.values():
        with pytest.raises(grpc.RpcError):
            stub.Search(request, timeout=30)
    assert stub.Search(pb.SearchRequest(text="a red circle", limit=2), timeout=30).hits


# -- one table -------------------------------------------------------------------------------

# google.rpc.Code's HTTP mapping: the statuses each gRPC code stands for.
HTTP_OF_CODE = {
    Code.INVALID_ARGUMENT: {400, 413, 415},
    Code.NOT_FOUND: {404},
    Code.ALREADY_EXISTS: {409},
    Code.UNAUTHENTICATED: {401},
    Code.PERMISSION_DENIED: {403},
    Code.RESOURCE_EXHAUSTED: {429},
    Code.DEADLINE_EXCEEDED: {504},
    Code.UNAVAILABLE: {503},
    Code.INTERNAL: {500},
}


@pytest.mark.parametrize("error_type", list(ErrorType))
def test_every_error_type_has_the_same_meaning_on_both_transports(
    error_type: ErrorType,
    stub: pb_grpc.SearchStub,
    rest: TestClient,
    components: Components,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raised = ClipsearchError(error_type, f"{error_type.value} happened", {"why": "test"})

    def fail(*args: Any, **kw: Any) -> Any:
        raise raised

    monkeypatch.setattr(components.search, "search", fail)
    response = rest.post("/v1/search", json={"text": "a"})
    assert response.status_code == HTTP_STATUS[error_type]
    with pytest.raises(grpc.RpcError) as err:
        stub.Search(pb.SearchRequest(text="a"), timeout=30)
    assert err.value.code() is GRPC_STATUS[error_type]
    assert HTTP_STATUS[error_type] in HTTP_OF_CODE[GRPC_STATUS[error_type]]
    rebuilt = from_rpc_error(err.value)
    assert (rebuilt.type, rebuilt.message, rebuilt.detail) == (
        error_type,
        raised.message,
        raised.detail,
    )
    assert response.json()["error"] == {
        "type": rebuilt.type.value,
        "message": rebuilt.message,
        "detail": rebuilt.detail,
    }


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/cat.png", "ftp://example.com/cat.png"])
def test_an_image_url_goes_through_the_ssrf_guard_as_over_rest(
    stub: pb_grpc.SearchStub, rest: TestClient, url: str
) -> None:
    by_rest = rest.post("/v1/search", json={"image_url": url})
    error = _refused(stub.Search, pb.SearchRequest(image_url=url))
    assert 400 <= by_rest.status_code < 500
    assert HTTP_STATUS[error.type] == by_rest.status_code
    assert error.message == by_rest.json()["error"]["message"]
