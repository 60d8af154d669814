"""The OpenAPI schema tells the truth: every error an operation documents has the one real shape
(``{"error": {"type", "message", "detail"}}``, not FastAPI's default ``{"detail": [...]}``), the
errors the gateway really sends match it, and every documented request example works as
pasted into "Try it out". On a real gateway (tiny bundle, Qdrant Edge, in-process jobs)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.core.schemas.api import ErrorResponse
from tests.support import wait_for_job

ERROR_REF = "#/components/schemas/ErrorResponse"
# Operations outside the error contract: the probes answer for themselves (ready: its reasons).
UNCHECKED = {"health_live", "health_ready"}


@pytest.fixture(scope="module")
def spec(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    schema: dict[str, Any] = response.json()
    return schema


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
        if op["operationId"] not in UNCHECKED
    ]


def test_every_error_documented_is_the_real_shape(spec: dict[str, Any]) -> None:
    text = json.dumps(spec)
    assert "HTTPValidationError" not in text
    assert '"ValidationError"' not in text
    operations = _operations(spec)
    assert len(operations) >= 20
    for method, path, op in operations:
        codes = {c for c in op["responses"] if c[0] in "45"}
        assert {"401", "403", "422", "500", "503"} <= codes, (method, path, sorted(codes))
        for code in codes:
            schema = op["responses"][code]["content"]["application/json"]["schema"]
            assert schema == {"$ref": ERROR_REF}, (method, path, code)
            assert op["responses"][code]["description"], (method, path, code)
    error = spec["components"]["schemas"]["ErrorBody"]
    assert set(error["properties"]) == {"type", "message", "detail"}
    assert spec["components"]["schemas"]["ErrorResponse"]["examples"]


def test_operations_document_their_own_errors(spec: dict[str, Any]) -> None:
    def codes(path: str, method: str) -> set[str]:
        return set(spec["paths"][path][method]["responses"])

    assert {"400", "404", "413", "415", "504"} <= codes("/v1/search", "post")
    assert "404" in codes("/v1/items/{item_id}", "delete")
    assert "404" in codes("/v1/videos/{video_id}", "delete")
    assert "409" in codes("/v1/jobs/{job_id}", "delete")
    assert "404" in codes("/v1/jobs", "get")  # ?collection= one the key cannot see
    assert "404" not in codes("/v1/collections", "get")


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("post", "/v1/search", {"text": "x", "limit": 0}, 422),
        ("post", "/v1/search", {"text": "x", "filter": {"colour": "red"}}, 400),
        ("post", "/v1/search", {"item_id": "nothing"}, 404),
        ("get", "/v1/items/nothing", None, 404),
        ("delete", "/v1/videos/nothing", None, 404),
        ("get", "/v1/jobs?limit=0", None, 422),
        ("get", "/v1/jobs/0123", None, 404),
        ("post", "/v1/ingest", {"source": 3}, 422),
        ("get", "/v1/thumbnails/media/nothing.jpg", None, 422),
    ],
)
def test_the_errors_sent_match_the_documented_shape(
    client: TestClient, method: str, path: str, body: Any, status: int
) -> None:
    response = client.request(method, path, json=body)
    assert response.status_code == status, response.text
    parsed = ErrorResponse.model_validate(response.json())
    assert set(response.json()) == {"error"}
    assert parsed.error.type and parsed.error.message


def _examples(spec: dict[str, Any]) -> list[tuple[str, str, str, Any]]:
    """(operation id, path, example name, value) of every documented JSON request example."""
    found = []
    for method, path, op in _operations(spec):
        content = op.get("requestBody", {}).get("content", {}).get("application/json", {})
        for name, example in content.get("examples", {}).items():
            found.append((op["operationId"], path, name, example["value"]))
        assert "{" not in path or not content.get("examples"), path
        assert method == "post" or not content.get("examples"), path
    # The ingest example adds the item the "more like this" example names: it goes first.
    return sorted(found, key=lambda e: e[0] != "ingest")


def test_every_documented_example_works_as_pasted(client: TestClient, spec: dict[str, Any]) -> None:
    examples = _examples(spec)
    names = {(op, name) for op, _, name, _ in examples}
    assert {("ingest", "manifest_lines"), ("search", "more_like_this")} <= names
    assert {("search", "filtered"), ("search", "image"), ("search", "text")} <= names
    assert ("search", "likely_matches") in names
    for op, path, name, value in examples:
        response = client.post(path, json=value)
        assert 200 <= response.status_code < 300, (op, name, response.text)
        if op == "ingest":
            job_id = response.json()["job_id"]
            job = wait_for_job(lambda j: client.get(f"/v1/jobs/{j}").json(), job_id)
            assert (job["state"], job["failed"]) == ("completed", 0), job
        if name == "more_like_this":
            assert response.json()["hits"], "doc-2 is like doc-1"
        if name == "likely_matches":  # fused: the threshold is on the probability of relevance
            answer = response.json()
            assert answer["score_kind"] == "probability"
            assert all(value["score_threshold"] <= h["score"] <= 1.0 for h in answer["hits"])
            for hit in answer["hits"]:
                assert all(0.0 <= part["relevance"] <= 1.0 for part in hit["explain"])


def test_the_schema_says_what_a_score_is(spec: dict[str, Any]) -> None:
    """Fused scores are probabilities of relevance, and the schema says so: the enum, the
    score's and each channel's ``relevance`` descriptions (what 0.3 means)."""
    schemas = spec["components"]["schemas"]
    kind = schemas["SearchResponse"]["properties"]["score_kind"]
    assert kind["enum"] == ["cosine", "probability"]
    assert "[0, 1]" in kind["description"] and "[-1, 1]" in kind["description"]
    assert "probability" in schemas["Hit"]["properties"]["score"]["description"]
    relevance = schemas["ChannelExplain"]["properties"]["relevance"]
    assert relevance["type"] == "number" and "30 %" in relevance["description"]
    assert "relevance" in schemas["ChannelExplain"]["required"]
    assert "standardised" not in json.dumps(kind)
