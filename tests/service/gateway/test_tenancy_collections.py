"""Tenancy over REST with two real collections (issue 17): a key scoped to `alpha` cannot search,
read, write, delete, ingest into or see `beta` — each call gets, word for word, the 404 of a
collection that does not exist — while the same calls on `alpha` are served; and beta's data is
untouched afterwards. Collections are created through the API, each with its own items."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.core.config import AuthSettings
from tests.service.gateway.conftest import COLOURS, make_settings, png, running_client

KEYS = ",".join(
    [
        "alpha-s3cret:search@alpha+ingest@alpha+admin@alpha:alpha-bot",
        "beta-s3cret:search@beta+ingest@beta:beta-bot",
        "ops-s3cret:search+ingest+admin:ops",
    ]
)


def key(name: str) -> dict[str, str]:
    return {"authorization": f"Bearer {name}-s3cret"}


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path, tiny_narrow_bundle_dir: Path
) -> Iterator[TestClient]:
    auth = AuthSettings.model_validate({"api_keys": KEYS})
    tmp = tmp_path_factory.mktemp("tenants")
    settings = make_settings(tmp, tiny_bundle_dir, auth=auth)
    for client in running_client(settings):
        # Only an admin key for a collection may create it; ops has admin everywhere.
        denied = client.post("/v1/collections", json={"name": "beta"}, headers=key("beta"))
        assert denied.status_code == 403, denied.text
        for name, bundle in (("alpha", None), ("beta", str(tiny_narrow_bundle_dir))):
            made = client.post(
                "/v1/collections", json={"name": name, "bundle": bundle}, headers=key("ops")
            )
            assert made.status_code == 201, made.text
        for name in ("alpha", "beta"):
            posted = client.post(
                "/v1/items",
                files={"file": ("red.png", png(COLOURS["red"]), "image/png")},
                data={"caption": f"a red circle of {name}", "id": "red", "collection": name},
                headers=key(name),
            )
            assert posted.status_code == 200, posted.text
        (tmp / "src" / "one.png").write_bytes(png(COLOURS["blue"]))
        yield client


def _calls(collection: str, src: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every call that acts on one collection, naming ``collection`` the way that call does."""
    image = {"file": ("q.png", png(COLOURS["red"]), "image/png")}
    return [
        ("POST", "/v1/search", {"json": {"text": "red", "collection": collection}}),
        ("POST", "/v1/search/image", {"files": image, "data": {"collection": collection}}),
        ("GET", "/v1/items/red", {"params": {"collection": collection}}),
        ("POST", "/v1/items", {"data": {"caption": "x", "collection": collection}}),
        ("DELETE", "/v1/videos/v1", {"params": {"collection": collection}}),
        ("POST", "/v1/ingest", {"json": {"source": src, "collection": collection}}),
        ("GET", f"/v1/collections/{collection}", {}),
        (
            "GET",
            f"/v1/thumbnails/{collection}/{'0' * 8}-{'0' * 4}-{'0' * 4}-{'0' * 4}-{'0' * 12}.jpg",
            {},
        ),
        ("POST", "/v1/admin/rollback", {"json": {"collection": collection}}),
        ("GET", "/v1/admin/golden", {"params": {"collection": collection}}),
        ("DELETE", "/v1/items/red", {"params": {"collection": collection}}),
        ("DELETE", f"/v1/collections/{collection}", {}),
    ]


def test_a_key_scoped_to_alpha_never_reaches_beta(client: TestClient) -> None:
    src = str(Path(client.app.state.runtime.settings.sources.allowed_roots[0]))  # type: ignore[attr-defined]
    ghost = client.get("/v1/collections/ghost", headers=key("ops"))
    assert ghost.status_code == 404
    expected = json.loads(ghost.text.replace("ghost", "beta"))
    for method, path, kwargs in _calls("beta", src):
        response = client.request(method, path, headers=key("alpha"), **kwargs)
        assert (response.status_code, response.json()) == (404, expected), (method, path)
    # It lists alpha only.
    listed = client.get("/v1/collections", headers=key("alpha")).json()["collections"]
    assert [c["alias"] for c in listed] == ["alpha"]
    # beta is as it was: its item is there, found by its own key.
    hits = client.post(
        "/v1/search", json={"text": "red", "collection": "beta"}, headers=key("beta")
    ).json()["hits"]
    assert [h["caption"] for h in hits] == ["a red circle of beta"]
    assert client.get("/v1/collections/beta", headers=key("ops")).json()["points"] == 1


def test_the_same_calls_on_its_own_collection_are_served(client: TestClient) -> None:
    """The other half of the proof: what alpha-bot was refused on beta is not refused on alpha
    for any other reason (each answer is the route's own: 200, 202, or its own 404/409)."""
    src = str(Path(client.app.state.runtime.settings.sources.allowed_roots[0]))  # type: ignore[attr-defined]
    answers = {}
    for method, path, kwargs in _calls("alpha", src):
        response = client.request(method, path, headers=key("alpha"), **kwargs)
        answers[(method, path.split("/")[2])] = response.status_code
        assert "does not exist" not in response.text or path.startswith("/v1/thumbnails"), (
            method,
            path,
            response.text,
        )
    assert answers[("POST", "search")] == 200
    assert answers[("GET", "items")] == 200
    assert answers[("POST", "ingest")] == 202
    assert answers[("GET", "collections")] == 200
    assert answers[("DELETE", "items")] == 204
    assert answers[("DELETE", "collections")] == 200  # its admin key may delete it
    # beta-bot has no admin scope: it may not delete its own collection (403, it sees it).
    assert client.delete("/v1/collections/beta", headers=key("beta")).status_code == 403
