"""POST /v1/search by item id ("more like this") and by image URL (through the SSRF guard), and
filters checked against their documented schema; on a real gateway (tiny bundle, Qdrant Edge)
with a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.core.config import SourcesSettings
from tests.service.gateway.conftest import COLOURS, make_settings, png, running_client
from tests.support import serve_directory, wait_for_job


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    www = tmp_path_factory.mktemp("www")
    (www / "red.png").write_bytes(png(COLOURS["red"]))
    (www / "page.html").write_text("<html>not an image</html>")
    (www / "huge.png").write_bytes(b"\x89PNG" + b"\0" * (300 * 1024))
    (www / "fake.png").write_bytes(b"hello, I am text dressed as a png")
    with serve_directory(www) as url:
        yield url


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("queries")
    settings = make_settings(tmp, tiny_bundle_dir)
    # 127.0.0.1 is let through (the test server); every other private or loopback address is not.
    sources = SourcesSettings(allowed_roots=[tmp / "src"], allowed_networks=["127.0.0.1/32"])
    yield from running_client(settings.model_copy(update={"sources": sources}))


@pytest.fixture(scope="module")
def items(client: TestClient) -> dict[str, str]:
    """Point ids by media id: two copies of one red picture, a green and a blue one, and a
    two text-only documents."""
    ids: dict[str, str] = {}
    for media_id, colour, caption in [
        ("red-1", "red", "a red circle"),
        ("red-2", "red", "a red circle"),
        ("green", "green", "a green triangle"),
        ("blue", "blue", "a blue square"),
    ]:
        response = client.post(
            "/v1/items",
            files={"file": (f"{colour}.png", png(COLOURS[colour]), "image/png")},
            data={"caption": caption, "id": media_id},
        )
        assert response.status_code == 200, response.text
        ids[media_id] = response.json()["id"]
    lines = [
        {"id": "doc-1", "description": "a text-only note about red circles"},
        {"id": "doc-2", "description": "a text-only note about blue squares"},
    ]
    job = client.post("/v1/ingest", json={"source": {"manifest_lines": lines}}).json()
    assert wait_for_job(lambda j: client.get(f"/v1/jobs/{j}").json(), job["job_id"])["state"] == (
        "completed"
    )
    for doc in ("doc-1", "doc-2"):
        ids[doc] = client.get(f"/v1/items/{doc}").json()["id"]
    return ids


def _search(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/search", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _error(response: Any, status: int, type_: str) -> str:
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    assert response.json()["error"]["type"] == type_
    message: str = response.json()["error"]["message"]
    assert message
    return message


# -- more like this ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["image", "auto", "hybrid"])
def test_more_like_this_finds_the_copy_and_leaves_the_item_out(
    client: TestClient, items: dict[str, str], mode: str
) -> None:
    result = _search(client, {"item_id": "red-1", "mode": mode, "limit": 10})
    ids = [h["id"] for h in result["hits"]]
    assert items["red-1"] not in ids
    assert ids[0] == items["red-2"], result["hits"]  # the same picture and caption
    if mode == "image":
        assert result["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_more_like_this_by_point_id_is_the_same_search(
    client: TestClient, items: dict[str, str]
) -> None:
    by_media = _search(client, {"item_id": "red-1", "mode": "caption"})
    by_point = _search(client, {"item_id": items["red-1"], "mode": "caption"})
    assert [h["id"] for h in by_point["hits"]] == [h["id"] for h in by_media["hits"]]


def test_more_like_a_text_document(client: TestClient, items: dict[str, str]) -> None:
    # Only the documents have descriptions: the other one is the whole answer.
    hits = _search(client, {"item_id": "doc-1", "mode": "auto"})["hits"]
    assert [h["id"] for h in hits] == [items["doc-2"]]


def test_more_like_this_with_a_filter(client: TestClient, items: dict[str, str]) -> None:
    hits = _search(client, {"item_id": "red-1", "mode": "image", "filter": {"kind": "image"}})[
        "hits"
    ]
    assert {h["kind"] for h in hits} == {"image"}
    assert items["doc-1"] not in [h["id"] for h in hits]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"item_id": "never-added"}, 404, "never-added"),
        ({"item_id": "red-1", "text": "a red circle"}, 400, "exactly one"),
        ({"item_id": "red-1", "image_url": "http://example.com/a.png"}, 400, "exactly one"),
        ({"item_id": ""}, 404, "no item"),
        ({"item_id": "x" * 3000}, 422, "item_id"),
    ],
)
def test_bad_item_queries(
    client: TestClient, items: dict[str, str], body: dict[str, Any], status: int, needle: str
) -> None:
    response = client.post("/v1/search", json=body)
    kind = {404: "not_found"}.get(status, "invalid_input")
    assert needle in _error(response, status, kind)


# -- image URLs ----------------------------------------------------------------------------------


def test_an_image_url_query_is_the_same_as_the_image(
    client: TestClient, items: dict[str, str], web: str
) -> None:
    by_url = _search(client, {"image_url": f"{web}/red.png", "mode": "image"})
    upload = client.post(
        "/v1/search/image",
        files={"file": ("red.png", png(COLOURS["red"]), "image/png")},
        data={"mode": "image"},
    )
    assert [h["id"] for h in by_url["hits"]] == [h["id"] for h in upload.json()["hits"]]
    assert by_url["hits"][0]["id"] in (items["red-1"], items["red-2"])
    assert by_url["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_bad_image_urls(client: TestClient, items: dict[str, str], web: str) -> None:
    port = web.rsplit(":", 1)[1]
    cases: list[tuple[str, int, str, str]] = [
        ("http://10.1.2.3/cat.png", 403, "forbidden", "private address"),
        ("http://169.254.169.254/latest/meta-data", 403, "forbidden", "metadata"),
        (f"http://[::1]:{port}/red.png", 403, "forbidden", "loopback"),
        (f"http://127.0.0.1:{_closed_port()}/red.png", 400, "invalid_input", "could not be"),
        (f"{web}/missing.png", 400, "invalid_input", "404"),
        (f"{web}/page.html", 415, "unsupported_media", "text/html"),
        (f"{web}/huge.png", 413, "payload_too_large", "limit"),
        ("ftp://example.com/cat.png", 400, "invalid_input", "http"),
        ("not a url", 400, "invalid_input", ""),
        ("http://user:pw@example.com/cat.png", 400, "invalid_input", "credentials"),
    ]
    for url, status, kind, needle in cases:
        message = _error(client.post("/v1/search", json={"image_url": url}), status, kind)
        assert needle in message, (url, message)
    # An image type whose bytes are no image: the decoder's answer, as for an upload.
    fake = client.post("/v1/search", json={"image_url": f"{web}/fake.png"})
    assert fake.status_code in (400, 415), fake.text
    assert client.post("/v1/search", json={"text": "a red circle"}).status_code == 200


# -- filters -------------------------------------------------------------------------------------


def test_filters_by_kind(client: TestClient, items: dict[str, str]) -> None:
    texts = _search(
        client, {"text": "red circles", "mode": "description", "filter": {"kind": "text"}}
    )
    assert [h["id"] for h in texts["hits"]] == [items["doc-1"], items["doc-2"]]
    both = _search(
        client, {"text": "red circles", "mode": "caption", "filter": {"kind": ["image", "text"]}}
    )
    assert {h["kind"] for h in both["hits"]} == {"image"}  # the document has no caption
    assert len(both["hits"]) == 4


@pytest.mark.parametrize(
    ("filter_", "needle"),
    [
        ({"colour": "red"}, "allowed: ['kind', 'media_id', 'tags', 'video_id']"),
        ({"kind": "video"}, "allowed: ['image', 'text', 'video_segment']"),
        ({"kind": ["image", "photo"]}, "unknown kind ['photo']"),
        ({"kind": 3}, "unknown kind [3]"),
    ],
)
def test_unknown_filter_keys_and_kinds_are_a_400_naming_the_allowed_ones(
    client: TestClient, filter_: dict[str, Any], needle: str
) -> None:
    response = client.post("/v1/search", json={"text": "a red circle", "filter": filter_})
    assert needle in _error(response, 400, "invalid_input")
    assert "allowed" in response.json()["error"]["detail"]


def test_the_filter_schema_is_documented(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    search_filter = schemas["SearchFilter"]
    assert set(search_filter["properties"]) == {"kind", "tags", "media_id", "video_id"}
    assert search_filter["additionalProperties"] is False
    kind = search_filter["properties"]["kind"]["anyOf"]
    assert kind[0] == {"$ref": "#/components/schemas/Kind"}
    assert kind[1]["items"] == {"$ref": "#/components/schemas/Kind"}
    assert sorted(schemas["Kind"]["enum"]) == ["image", "text", "video_segment"]
    request = schemas["SearchRequest"]["properties"]
    assert {"text", "image", "image_url", "item_id"} <= set(request)
