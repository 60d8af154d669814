"""The few public endpoints the real-photo evaluation calls, over an ``httpx.Client`` only.

The evaluation must measure what a user meets, so it knows the service only by its HTTP API
(``README.md``, "API"): add items, search by text and by image upload, read an item, readiness.
Hits name points by point id; the ids items were added with are mapped back from the point ids
``POST /v1/items`` answered with.

The client is typed by what is called on it (:class:`HttpClient`): an ``httpx.Client`` with a
base URL, or Starlette's ``TestClient``, which subclasses ``httpx2.Client``, not ``httpx.Client``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Protocol

READY_TIMEOUT_S = 600.0
READY_POLL_S = 0.5


class HttpResponse(Protocol):
    @property
    def status_code(self) -> int: ...
    @property
    def text(self) -> str: ...
    def json(self) -> Any: ...


class HttpClient(Protocol):
    def get(self, url: str) -> HttpResponse: ...
    def post(
        self,
        url: str,
        *,
        data: dict[str, str] | None = None,
        files: dict[str, tuple[str, bytes, str]] | None = None,
        json: dict[str, Any] | None = None,
    ) -> HttpResponse: ...


class ApiError(RuntimeError):
    """The gateway answered a call with an error, or never turned ready."""


@dataclass(frozen=True)
class Hits:
    ids: list[str]  # the ids the items were added with, best first
    hits: list[dict[str, Any]]  # the hits as the API returned them
    channels: list[str]
    model: str


class Api:
    def __init__(self, client: HttpClient) -> None:
        self._client = client
        self._added_as: dict[str, str] = {}  # point id -> the id the item was added with

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> dict[str, Any]:
        """``GET /health/ready`` until it answers 200 (a loading model answers 503)."""
        deadline = time.monotonic() + timeout_s
        while True:
            response = self._client.get("/health/ready")
            if response.status_code == 200:
                body: dict[str, Any] = response.json()
                return body
            if time.monotonic() > deadline:
                raise ApiError(
                    f"the gateway did not turn ready in {timeout_s:.0f} s: {response.text}"
                )
            time.sleep(READY_POLL_S)  # readiness has no push channel: polling is the API

    def add(
        self,
        item_id: str,
        *,
        image: tuple[str, bytes, str] | None = None,
        caption: str | None = None,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """``POST /v1/items``; ``image`` is ``(filename, bytes, content type)``. The point id."""
        data = {"id": item_id}
        if caption is not None:
            data["caption"] = caption
        if description is not None:
            data["description"] = description
        if metadata:
            data["metadata"] = json.dumps(metadata)
        files = {"file": image} if image is not None else None
        body = self._check(self._client.post("/v1/items", data=data, files=files), "add", item_id)
        point = str(body["id"])
        self._added_as[point] = item_id
        return point

    def item(self, item_id: str) -> dict[str, Any]:
        return self._check(self._client.get(f"/v1/items/{item_id}"), "get item", item_id)

    def search_text(self, text: str, *, mode: str | None, limit: int) -> Hits:
        """``POST /v1/search``; ``mode=None`` sends no mode: the default a user gets."""
        body: dict[str, Any] = {"text": text, "limit": limit}
        if mode is not None:
            body["mode"] = mode
        return self._hits(self._check(self._client.post("/v1/search", json=body), "search", text))

    def search_image(self, image: tuple[str, bytes, str], *, limit: int) -> Hits:
        """``POST /v1/search/image``, a multipart upload, in the default mode."""
        response = self._client.post(
            "/v1/search/image", files={"file": image}, data={"limit": str(limit)}
        )
        return self._hits(self._check(response, "image search", image[0]))

    def _hits(self, body: dict[str, Any]) -> Hits:
        hits = list(body.get("hits") or [])
        return Hits(
            ids=[self._added_as.get(h["id"], h["id"]) for h in hits],
            hits=hits,
            channels=list(body.get("channels") or []),
            model=str(body.get("model", "")),
        )

    @staticmethod
    def _check(response: HttpResponse, what: str, subject: str) -> dict[str, Any]:
        if response.status_code >= 400:
            try:
                detail = response.json().get("error", {}).get("message") or response.text
            except ValueError:
                detail = response.text
            raise ApiError(f"{what} {subject!r}: HTTP {response.status_code}: {detail}")
        body: dict[str, Any] = response.json()
        return body
