"""Every bad input gets a clear 4xx in the one error shape, and the server keeps serving."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.service.gateway.conftest import png


def _bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming a huge image: rejected from the header, never decoded."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\0" + b"\0" * ((width + 7) // 8)
    idat = zlib.compress(row * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _truncated_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 10)).save(buf, format="JPEG")
    return buf.getvalue()[:200]


def _error(response: Any, status: int, type_: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["type"] == type_
    assert body["error"]["message"]
    message: str = body["error"]["message"]
    return message


UPLOADS = [
    ("empty", b"", 400, "invalid_input", "empty"),
    ("text", b"hello, I am not an image", 415, "unsupported_media", ""),
    ("truncated", _truncated_jpeg(), 400, "invalid_input", ""),
    ("bomb", _bomb_png(5000, 5000), 413, "payload_too_large", "pixel"),
    ("oversize", b"\x89PNG" + b"\0" * (300 * 1024), 413, "payload_too_large", "limit"),
]


@pytest.mark.parametrize(("name", "data", "status", "type_", "needle"), UPLOADS)
def test_bad_uploads_to_items(
    client: TestClient, name: str, data: bytes, status: int, type_: str, needle: str
) -> None:
    response = client.post("/v1/items", files={"file": (f"{name}.png", data, "image/png")})
    assert needle in _error(response, status, type_).lower()


@pytest.mark.parametrize(("name", "data", "status", "type_", "needle"), UPLOADS)
def test_bad_uploads_to_image_search(
    client: TestClient, name: str, data: bytes, status: int, type_: str, needle: str
) -> None:
    response = client.post("/v1/search/image", files={"file": (f"{name}.png", data, "image/png")})
    _error(response, status, type_)


def test_oversize_body_refused_from_content_length(client: TestClient) -> None:
    big = b"x" * (2 * 1024 * 1024)
    response = client.post("/v1/items", files={"file": ("big.png", big, "image/png")})
    _error(response, 413, "payload_too_large")


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({}, 400, "exactly one"),
        ({"text": "a", "image": base64.b64encode(png((1, 1, 1))).decode()}, 400, "exactly one"),
        ({"text": "a red circle", "limit": 0}, 422, "limit"),
        ({"text": "a red circle", "limit": 101}, 422, "limit"),
        ({"text": "a red circle", "offset": -1}, 422, "offset"),
        ({"text": "a red circle", "mode": "telepathy"}, 422, "mode"),
        ({"text": "a red circle", "filter": {"secret": 1}}, 400, "cannot filter on ['secret']"),
        ({"text": "a red circle", "filter": {"kind": "photo"}}, 400, "unknown kind"),
        ({"text": "a", "item_id": "x"}, 400, "exactly one"),
        ({"text": "a red circle", "unknown": 1}, 422, "unknown"),
        ({"image": "not base64 !!"}, 400, "base64"),
        (
            {"image": base64.b64encode(png((1, 1, 1))).decode(), "mode": "description"},
            400,
            "text query",
        ),
        ({"text": "   "}, 400, "empty"),
        ({"text": "x" * 5000}, 400, "limit"),
    ],
)
def test_bad_search_requests(
    client: TestClient, body: dict[str, Any], status: int, needle: str
) -> None:
    message = _error(client.post("/v1/search", json=body), status, "invalid_input")
    assert needle in message.lower()


def test_search_with_a_corrupt_base64_image(client: TestClient) -> None:
    data = base64.b64encode(b"GIF89a-garbage").decode()
    response = client.post("/v1/search", json={"image": data})
    assert response.status_code in (400, 415)


def test_invalid_json_body(client: TestClient) -> None:
    response = client.post(
        "/v1/search", content=b"{not json", headers={"content-type": "application/json"}
    )
    _error(response, 422, "invalid_input")


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"metadata": "{broken"}, "metadata"),
        ({"metadata": "[1, 2]"}, "object"),
        ({"caption": "x" * 10_001}, "limit"),
        ({}, "needs an image"),
        ({"caption": "   "}, "needs an image"),
    ],
)
def test_bad_item_fields(client: TestClient, data: dict[str, str], needle: str) -> None:
    assert needle in _error(client.post("/v1/items", data=data), 400, "invalid_input").lower()


def test_unknown_routes_and_ids(client: TestClient) -> None:
    _error(client.get("/v1/nothing-here"), 404, "not_found")
    _error(client.get("/v1/jobs/does-not-exist"), 404, "not_found")
    _error(client.get("/v1/items/never-posted"), 404, "not_found")
    _error(client.delete("/v1/items/never-posted"), 404, "not_found")


def test_server_keeps_serving_after_bad_input(client: TestClient) -> None:
    for name, data, *_ in UPLOADS:
        client.post("/v1/items", files={"file": (name, data, "image/png")})
    assert client.get("/health/ready").status_code == 200
    response = client.post("/v1/search", json={"text": "a red circle"})
    assert response.status_code == 200
    metrics = client.get("/metrics").text
    assert 'clipsearch_errors_total{transport="http",type="unsupported_media"}' in metrics
