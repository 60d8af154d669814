"""A bundle that names classes and has visual features, through the real gateway: an uncaptioned
image gets a description written from its classes (payload, description vector, search), image
queries go by the visual features, and "more like this" works for images and text items."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.search.planner import Query, SearchOptions
from tests.service.gateway.conftest import make_settings, png, running_client


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory, tiny_labelled_bundle_dir: Path
) -> Iterator[TestClient]:
    yield from running_client(
        make_settings(tmp_path_factory.mktemp("labelled"), tiny_labelled_bundle_dir)
    )


def _halves(left: tuple[int, int, int], right: tuple[int, int, int], shift: int = 0) -> bytes:
    image = Image.new("RGB", (48, 48), left)
    image.paste(Image.new("RGB", (24 - shift, 48), right), (24 + shift, 0))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _post(client: TestClient, item_id: str, data: bytes | None, **fields: str) -> None:
    files = {"file": (f"{item_id}.png", data, "image/png")} if data is not None else None
    response = client.post("/v1/items", files=files, data={"id": item_id, **fields})
    assert response.status_code == 200, response.text


def test_an_uncaptioned_image_gets_a_description_from_its_classes(client: TestClient) -> None:
    _post(client, "plain-red", png((220, 30, 30)))
    item = client.get("/v1/items/plain-red").json()
    assert item["description"].startswith("A photo of a red scene, a kind of coloured scene")
    assert item["description_generated"] is True
    assert item["labels"][0]["name"] == "red scene" and 0 < item["labels"][0]["score"] <= 1
    # The written description is searchable in the vision-free mode.
    _post(client, "plain-blue", png((30, 40, 220)))
    hits = client.post("/v1/search", json={"text": "blue scene", "mode": "description"}).json()
    assert hits["hits"][0]["id"] == client.get("/v1/items/plain-blue").json()["id"]


def test_a_captioned_image_keeps_its_own_words(client: TestClient) -> None:
    _post(client, "captioned", png((235, 215, 40)), caption="sunflowers in a field")
    item = client.get("/v1/items/captioned").json()
    assert item["description"] is None and item["description_generated"] is False
    assert item["labels"][0]["name"] == "yellow scene"  # still says what the model saw


def test_a_given_description_is_kept(client: TestClient) -> None:
    _post(client, "described", png((30, 170, 40)), description="my green wall")
    item = client.get("/v1/items/described").json()
    assert item["description"] == "my green wall" and item["description_generated"] is False
    assert item["labels"][0]["name"] == "green scene"


def test_image_queries_go_by_the_visual_features(client: TestClient) -> None:
    _post(client, "red-left", _halves((220, 30, 30), (245, 245, 245)))
    _post(client, "red-right", _halves((245, 245, 245), (220, 30, 30)))
    # The same colours, one column moved: the layout (visual features) tells the two apart.
    query = _halves((220, 30, 30), (245, 245, 245), shift=2)
    body = client.post("/v1/search/image", files={"file": ("q.png", query, "image/png")}).json()
    assert body["channels"] == ["visual"]
    assert body["hits"][0]["id"] == client.get("/v1/items/red-left").json()["id"]


def test_more_like_this_for_an_image_and_for_a_text_item(client: TestClient) -> None:
    """By stored item (the planner's ``item_id`` query; REST exposes it with issue 15)."""
    search = client.app.state.runtime.components.search  # type: ignore[attr-defined]
    _post(client, "left-again", _halves((220, 30, 30), (245, 245, 245), shift=1))
    left = client.get("/v1/items/red-left").json()["id"]
    found = search.search(Query(item_id="left-again"), SearchOptions(mode="image"))
    assert found.channels == ("visual",) and found.hits[0].id == left
    _post(client, "note", None, caption="a red scene", description="notes about red")
    text = search.search(Query(item_id="note"), SearchOptions(mode="image"))
    assert text.channels == ("image",)  # a text item has no visual features: the joint space
