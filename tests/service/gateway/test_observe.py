"""The gateway's request observer (service.gateway.app.Observe, plain ASGI): each request's count
by method, matched route and status, its latency by route, and the refusal of a body declared
over the limit before any of it is read."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.gateway.app import MULTIPART_OVERHEAD


def _value(client: TestClient, name: str, **labels: str) -> float:
    registry = client.app.state.metrics.registry  # type: ignore[attr-defined]
    return registry.get_sample_value(name, labels) or 0.0


def _requests(client: TestClient, method: str, route: str, status: str) -> float:
    return _value(
        client, "clipsearch_http_requests_total", method=method, route=route, status=status
    )


def _timed(client: TestClient, method: str, route: str) -> float:
    return _value(client, "clipsearch_http_request_seconds_count", method=method, route=route)


def test_a_request_is_counted_and_timed_under_its_route_template(client: TestClient) -> None:
    model = client.get("/health/ready").json()["model"]
    before = _requests(client, "POST", "/v1/embeddings", "200")
    timed = _timed(client, "POST", "/v1/embeddings")
    for text in ("a cat", "a dog"):
        answer = client.post("/v1/embeddings", json={"model": model, "input": text})
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["data"][0]["embedding"]) > 1
    assert _requests(client, "POST", "/v1/embeddings", "200") == before + 2
    assert _timed(client, "POST", "/v1/embeddings") == timed + 2
    seconds = _value(
        client, "clipsearch_http_request_seconds_sum", method="POST", route="/v1/embeddings"
    )
    assert seconds > 0


def test_errors_count_under_their_status_and_unknown_paths_as_unmatched(
    client: TestClient,
) -> None:
    invalid = _requests(client, "POST", "/v1/embeddings", "422")
    assert client.post("/v1/embeddings", json={"input": "no model"}).status_code == 422
    assert _requests(client, "POST", "/v1/embeddings", "422") == invalid + 1

    # A raw path never becomes a label (bounded cardinality): every unknown one is "unmatched".
    unmatched = _requests(client, "GET", "unmatched", "404")
    for path in ("/nowhere", "/v1/nowhere/else"):
        assert client.get(path).status_code == 404
    assert _requests(client, "GET", "unmatched", "404") == unmatched + 2


def test_a_body_declared_over_the_limit_is_refused_before_the_route(client: TestClient) -> None:
    limit = client.app.state.runtime.settings.limits.max_upload_bytes + MULTIPART_OVERHEAD  # type: ignore[attr-defined]
    refused = _requests(client, "POST", "unmatched", "413")
    reached = _timed(client, "POST", "/v1/items")
    too_large = _value(
        client, "clipsearch_errors_total", type="payload_too_large", transport="http"
    )
    answer = client.post("/v1/items", files={"file": ("big.png", b"x" * (limit + 1), "image/png")})
    assert answer.status_code == 413
    body = answer.json()
    assert body["error"]["type"] == "payload_too_large"
    assert f"{limit}-byte limit" in body["error"]["message"]
    assert _requests(client, "POST", "unmatched", "413") == refused + 1
    assert _timed(client, "POST", "/v1/items") == reached  # the route never saw it
    assert (
        _value(client, "clipsearch_errors_total", type="payload_too_large", transport="http")
        == too_large + 1
    )
    # The connection's next request is served as usual.
    assert client.get("/health/live").status_code == 200
