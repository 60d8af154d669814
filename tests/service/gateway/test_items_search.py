"""Items and search over the real stack: upsert, idempotence, the search modes."""

from __future__ import annotations

import base64
import json

from fastapi.testclient import TestClient

from service.gateway.state import Components
from tests.service.gateway.conftest import COLOURS, png

SCENES = {
    "red": ("a red circle", "One large red circle in the centre of a white background."),
    "green": ("a green triangle", "One small green triangle at the top on a grey background."),
    "blue": ("a blue square", "One blue square at the bottom right on a black background."),
}


def _post(client: TestClient, colour: str, **extra: str) -> dict[str, str]:
    caption, description = SCENES[colour]
    response = client.post(
        "/v1/items",
        files={"file": (f"{colour}.png", png(COLOURS[colour]), "image/png")},
        data={
            "caption": caption,
            "description": description,
            "metadata": json.dumps({"colour": colour, "nested": {"n": 1}}),
            "tags": f"{colour},demo",
            "id": f"item-{colour}",
            **extra,
        },
    )
    assert response.status_code == 200, response.text
    body: dict[str, str] = response.json()
    return body


def _index_all(client: TestClient) -> dict[str, str]:
    return {colour: _post(client, colour)["id"] for colour in SCENES}


def test_post_item_returns_point_and_media_id(client: TestClient) -> None:
    body = _post(client, "red")
    assert body["media_id"] == "item-red"
    fetched = client.get(f"/v1/items/{body['id']}").json()
    assert fetched["caption"] == "a red circle"
    assert fetched["metadata"] == {"colour": "red", "nested": {"n": 1}}
    assert fetched["tags"] == ["red", "demo"]
    assert client.get("/v1/items/item-red").json()["id"] == body["id"]


def test_reposting_the_same_item_updates_instead_of_duplicating(
    client: TestClient, components: Components
) -> None:
    _index_all(client)
    before = components.store.count(components.collection)
    again = _post(client, "red", caption="a bright red circle")
    assert components.store.count(components.collection) == before
    assert client.get(f"/v1/items/{again['id']}").json()["caption"] == "a bright red circle"
    _post(client, "red")


def test_item_without_id_is_keyed_by_content(client: TestClient, components: Components) -> None:
    files = {"file": ("x.png", png((1, 2, 3)), "image/png")}
    first = client.post("/v1/items", files=files, data={"caption": "dark"}).json()
    count = components.store.count(components.collection)
    second = client.post("/v1/items", files=files, data={"caption": "dark"}).json()
    assert first["id"] == second["id"]
    assert components.store.count(components.collection) == count
    assert client.delete(f"/v1/items/{first['id']}").status_code == 204
    assert client.get(f"/v1/items/{first['id']}").status_code == 404
    assert components.store.count(components.collection) == count - 1


def test_text_only_item(client: TestClient) -> None:
    response = client.post("/v1/items", data={"description": "a purple hexagon", "id": "txt-1"})
    assert response.status_code == 200
    assert client.get("/v1/items/txt-1").json()["kind"] == "text"
    client.delete("/v1/items/txt-1")


def test_description_search_ranks_the_matching_scene_first(client: TestClient) -> None:
    ids = _index_all(client)
    response = client.post(
        "/v1/search", json={"text": "a red circle", "mode": "description", "limit": 3}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["hits"][0]["id"] == ids["red"]
    assert body["model"] == "tiny-test@0.1.0"
    assert body["channels"] == ["description"]
    scores = [h["score"] for h in body["hits"]]
    assert scores == sorted(scores, reverse=True)


def test_caption_and_auto_modes(client: TestClient) -> None:
    ids = _index_all(client)
    for mode in ("caption", "auto", "hybrid"):
        body = client.post("/v1/search", json={"text": "blue square", "mode": mode}).json()
        assert body["hits"][0]["id"] == ids["blue"], (mode, body)
    assert client.post("/v1/search", json={"text": "x", "mode": "auto"}).json()["channels"] == [
        "caption",
        "description",
    ]


def test_image_query_finds_the_same_image(client: TestClient) -> None:
    ids = _index_all(client)
    encoded = base64.b64encode(png(COLOURS["green"], (64, 64))).decode()
    body = client.post("/v1/search", json={"image": encoded, "limit": 2}).json()
    assert body["hits"][0]["id"] == ids["green"]
    assert body["channels"] == ["image"]
    upload = client.post(
        "/v1/search/image",
        files={"file": ("q.png", png(COLOURS["blue"]), "image/png")},
        data={"limit": "1"},
    )
    assert upload.status_code == 200, upload.text
    assert [h["id"] for h in upload.json()["hits"]] == [ids["blue"]]


def test_filters_limit_and_offset(client: TestClient) -> None:
    ids = _index_all(client)
    body = client.post(
        "/v1/search",
        json={"text": "circle", "mode": "caption", "filter": {"tags": ["green", "blue"]}},
    ).json()
    assert {h["id"] for h in body["hits"]} == {ids["green"], ids["blue"]}
    only = client.post(
        "/v1/search",
        json={"text": "circle", "mode": "caption", "filter": {"media_id": "item-blue"}},
    ).json()
    assert [h["id"] for h in only["hits"]] == [ids["blue"]]
    full = client.post(
        "/v1/search", json={"text": "shape", "mode": "caption", "filter": {"tags": "demo"}}
    ).json()["hits"]
    page = client.post(
        "/v1/search",
        json={
            "text": "shape",
            "mode": "caption",
            "filter": {"tags": "demo"},
            "offset": 1,
            "limit": 2,
        },
    ).json()["hits"]
    assert [h["id"] for h in page] == [h["id"] for h in full[1:3]]
