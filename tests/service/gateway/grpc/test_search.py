"""Search over gRPC: text, image and item queries, and the same answers as REST."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.clients.search_grpc import SearchClient
from service.core.domain import Point, point_id
from service.gateway.state import Components
from service.rpc.proto import search_pb2 as pb
from service.rpc.proto import search_pb2_grpc as pb_grpc
from tests.service.gateway.conftest import COLOURS, png


def _rest(rest: TestClient, **body: Any) -> dict[str, Any]:
    response = rest.post("/v1/search", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _same(rest_answer: dict[str, Any], grpc_answer: dict[str, Any]) -> None:
    """Identical ids, order, scores and payloads (took_ms is the one field that may differ)."""
    rest_answer.pop("took_ms"), grpc_answer.pop("took_ms")
    assert grpc_answer == rest_answer


@pytest.mark.parametrize("mode", ["auto", "caption", "description", "hybrid", "image"])
def test_a_text_query_answers_as_rest_does(
    rest: TestClient, client: SearchClient, mode: str
) -> None:
    by_rest = _rest(rest, text="a red circle", mode=mode, limit=3)
    by_grpc = client.search(text="a red circle", mode=mode, limit=3).model_dump()
    assert len(by_rest["hits"]) == 3
    _same(by_rest, by_grpc)


def test_an_image_query_answers_as_rest_does(rest: TestClient, client: SearchClient) -> None:
    image = png(COLOURS["green"], size=(52, 44))
    by_rest = _rest(rest, image=base64.b64encode(image).decode(), limit=3)
    by_grpc = client.search(image=image, limit=3).model_dump()
    assert by_rest["hits"][0]["tags"] == ["green", "demo"]
    _same(by_rest, by_grpc)


def test_options_filter_offset_threshold_and_explain(
    rest: TestClient, client: SearchClient
) -> None:
    body: dict[str, Any] = {
        "text": "a blue square",
        "mode": "hybrid",
        "limit": 2,
        "offset": 1,
        "filter": {"tags": ["demo"], "kind": "image"},
        "explain": True,
    }
    by_rest = _rest(rest, **body)
    by_grpc = client.search(**body).model_dump()
    assert by_rest["hits"] and by_rest["hits"][0]["explain"]
    _same(by_rest, by_grpc)
    only_red = client.search(text="a shape", filter={"tags": "red"}, mode="caption")
    assert [h.tags for h in only_red.hits] == [["red", "demo"]]
    top = client.search(text="a blue square", mode="caption", limit=3)
    between = (top.hits[0].score + top.hits[1].score) / 2
    assert top.hits[0].score > between > top.hits[1].score
    cut = client.search(text="a blue square", mode="caption", limit=3, score_threshold=between)
    assert [h.id for h in cut.hits] == [top.hits[0].id]


# Every query kind in every mode it can search (a description search needs a text query).
EXPLAINED = [
    (query, mode)
    for query in ("text", "image", "item_id")
    for mode in ("auto", "caption", "description", "hybrid", "image")
    if (query, mode) != ("image", "description")
]


@pytest.mark.parametrize(("query", "mode"), EXPLAINED)
def test_explain_answers_as_rest_does_with_each_channels_relevance(
    rest: TestClient, client: SearchClient, stub: pb_grpc.SearchStub, mode: str, query: str
) -> None:
    """Explained answers are identical over both transports, each channel's probability of
    relevance included (on the wire: ``ChannelExplain.relevance``); a fused score is the
    weighted mean of its channels' relevance."""
    value: Any = {"text": "a red circle", "image": png(COLOURS["red"]), "item_id": "item-red"}[
        query
    ]
    body: dict[str, Any] = {query: value, "mode": mode, "limit": 3, "explain": True}
    as_json = dict(body)
    if query == "image":  # REST carries the image in base64
        as_json["image"] = base64.b64encode(value).decode()
    by_rest = _rest(rest, **as_json)
    by_grpc = client.search(**body).model_dump()
    wire = stub.Search(pb.SearchRequest(**body), timeout=30)
    assert by_rest["hits"]
    for hit, message in zip(by_rest["hits"], wire.hits, strict=True):
        parts = hit["explain"]
        assert parts and [p["relevance"] for p in parts] == [c.relevance for c in message.explain]
        assert all(0.0 <= p["relevance"] <= 1.0 for p in parts)
        if by_rest["score_kind"] == "probability":
            weights = sum(p["weight"] for p in parts)
            mean = sum(p["weight"] * p["relevance"] for p in parts) / weights
            assert hit["score"] == pytest.approx(mean, abs=1e-9)
    assert wire.score_kind == by_rest["score_kind"]
    assert by_rest["score_kind"] == ("cosine" if len(by_rest["channels"]) == 1 else "probability")
    _same(by_rest, by_grpc)


def test_more_like_an_item_goes_through_the_planner(client: SearchClient, rest: TestClient) -> None:
    red = rest.get("/v1/items/item-red").json()
    for item_id in ("item-red", red["id"]):  # the id it was added with, or its point id
        answer = client.search(item_id=item_id, mode="image", limit=5)
        ids = [h.id for h in answer.hits]
        assert red["id"] not in ids  # the item itself is left out
        assert len(ids) == 2
        assert answer.channels == ["image"]
    # The item's own image vector is the query: the same ranking as searching with its image.
    by_image = client.search(image=png(COLOURS["red"]), mode="image", limit=3)
    assert [h.id for h in by_image.hits][1:] == ids
    assert by_image.hits[1].score == pytest.approx(answer.hits[0].score, abs=1e-5)
    fused = client.search(item_id="item-red", mode="auto", limit=5)
    assert red["id"] not in [h.id for h in fused.hits]
    assert set(fused.channels) >= {"caption", "description"}


def test_get_item_answers_as_rest_does(rest: TestClient, client: SearchClient) -> None:
    by_rest = rest.get("/v1/items/item-blue").json()
    assert client.get_item("item-blue").model_dump() == by_rest
    assert client.get_item(by_rest["id"]).model_dump() == by_rest
    assert by_rest["metadata"] == {"colour": "blue", "n": 1, "x": 0.5}  # exact types kept


def test_delete_item_removes_a_segments_thumbnail_as_rest_does(
    stub: pb_grpc.SearchStub, components: Components, rest: TestClient
) -> None:
    """DeleteItem goes the REST delete's way: the point, then the thumbnail it names."""
    settings = rest.app.state.runtime.settings  # type: ignore[attr-defined]
    red = components.search.find("item-red", with_vectors=True)
    pid = point_id(components.collection, "file:///clips/a.mkv", 0)
    thumb = f"thumbnails/{components.collection}/{pid}.jpg"
    (settings.data_dir / thumb).parent.mkdir(parents=True, exist_ok=True)
    (settings.data_dir / thumb).write_bytes(b"jpeg")
    payload = {"kind": "video_segment", "video_id": "file:///clips/a.mkv", "thumbnail": thumb}
    components.store.upsert(components.collection, [Point(pid, dict(red.vectors), payload)])

    stub.DeleteItem(pb.DeleteItemRequest(id=pid))
    assert not (settings.data_dir / thumb).exists()
    assert components.store.retrieve(components.collection, [pid]) == []
