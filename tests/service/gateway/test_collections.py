"""Collections as a resource over REST (issue 17): create one with its own bundle, list, read,
delete; every search and item call names its collection (JSON field, form field, query
parameter), and a call that names none acts on the configured one as before.

A real gateway on the tiny bundle; the second collection is made with another bundle
(tiny-narrow), loaded into the in-process encoder when the collection is created and freed when
it is deleted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from clipsearch.bootstrap import build_components
from service.gateway.app import create_app
from tests.service.gateway.conftest import COLOURS, make_settings, png, running_client


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path) -> Iterator[TestClient]:
    yield from running_client(make_settings(tmp_path_factory.mktemp("colls"), tiny_bundle_dir))


def _served(client: TestClient) -> set[str]:
    comp = client.app.state.runtime.components  # type: ignore[attr-defined]
    return {b.ref for b in comp.embedder.info().bundles}


def _post_item(client: TestClient, colour: str, caption: str, **form: str) -> str:
    answer = client.post(
        "/v1/items",
        files={"file": (f"{colour}.png", png(COLOURS[colour]), "image/png")},
        data={"caption": caption, "id": f"{colour}-item", **form},
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


def test_a_collection_with_its_own_bundle_is_created_searched_and_deleted(
    client: TestClient, tiny_narrow_bundle_dir: Path
) -> None:
    before = _served(client)
    made = client.post(
        "/v1/collections", json={"name": "alpha", "bundle": str(tiny_narrow_bundle_dir)}
    )
    assert made.status_code == 201, made.text
    alpha = made.json()
    assert alpha["alias"] == "alpha" and alpha["points"] == 0 and not alpha["default"]
    assert alpha["bundle"].startswith("tiny-narrow@") and alpha["served"]
    assert alpha["bundle"] in _served(client) - before  # loaded for it

    listed = {c["alias"]: c for c in client.get("/v1/collections").json()["collections"]}
    assert set(listed) == {"media", "alpha"}
    assert listed["media"]["default"] and not listed["alpha"]["default"]
    assert client.get("/v1/collections/alpha").json()["bundle"] == alpha["bundle"]

    # The same id in both collections: two items, each found only where it was put.
    in_alpha = _post_item(client, "red", "a red circle in alpha", collection="alpha")
    in_media = _post_item(client, "red", "a red circle in media")
    assert in_alpha != in_media
    assert client.get("/v1/collections/alpha").json()["points"] == 1

    hits = client.post("/v1/search", json={"text": "red circle", "collection": "alpha"}).json()
    assert [h["id"] for h in hits["hits"]] == [in_alpha]
    assert hits["hits"][0]["media_id"] == "red-item"  # the id it was added with
    assert hits["model"] == alpha["bundle"]
    default_hits = client.post("/v1/search", json={"text": "red circle"}).json()["hits"]
    assert in_media in [h["id"] for h in default_hits]
    assert in_alpha not in [h["id"] for h in default_hits]
    image_hits = client.post(
        "/v1/search/image",
        files={"file": ("q.png", png(COLOURS["red"]), "image/png")},
        data={"collection": "alpha", "mode": "image"},
    ).json()["hits"]
    assert [h["id"] for h in image_hits] == [in_alpha]

    got = client.get("/v1/items/red-item", params={"collection": "alpha"})
    assert got.status_code == 200 and got.json()["id"] == in_alpha
    assert client.get("/v1/items/red-item").json()["id"] == in_media
    deleted = client.delete("/v1/items/red-item", params={"collection": "alpha"})
    assert deleted.status_code == 204
    assert client.get("/v1/items/red-item", params={"collection": "alpha"}).status_code == 404
    assert client.get("/v1/items/red-item").status_code == 200  # the other one is untouched

    gone = client.delete("/v1/collections/alpha")
    assert gone.status_code == 200, gone.text
    assert gone.json()["collection"] == "alpha" and gone.json()["deleted_versions"]
    assert client.get("/v1/collections/alpha").status_code == 404
    assert alpha["bundle"] not in _served(client)  # nothing needs it any more: freed
    after = client.post("/v1/search", json={"text": "red", "collection": "alpha"})
    assert after.status_code == 404 and "alpha" in after.json()["error"]["message"]
    assert client.get("/v1/items/red-item").status_code == 200


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"name": "Upper"}, 400),
        ({"name": "a__b"}, 400),
        ({"name": "x.next"}, 400),
        ({"name": "-lead"}, 400),
        ({"name": ""}, 422),
        ({"name": "n" * 64}, 422),
        ({"name": "media"}, 409),  # the configured one exists
        ({"name": "nobundle", "bundle": "no-such-bundle"}, 404),
        ({"bundle": "tiny"}, 422),
    ],
)
def test_bad_collections_are_refused_and_change_nothing(
    client: TestClient, body: dict[str, str], status: int
) -> None:
    before = client.get("/v1/collections").json()
    answer = client.post("/v1/collections", json=body)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["message"]
    assert client.get("/v1/collections").json() == before


def test_unknown_collections_are_404_everywhere(client: TestClient) -> None:
    calls = [
        client.post("/v1/search", json={"text": "red", "collection": "nope"}),
        client.post(
            "/v1/search/image",
            files={"file": ("q.png", png(COLOURS["red"]), "image/png")},
            data={"collection": "nope"},
        ),
        client.post("/v1/items", data={"caption": "x", "collection": "nope"}),
        client.get("/v1/items/red-item", params={"collection": "nope"}),
        client.delete("/v1/items/red-item", params={"collection": "nope"}),
        client.delete("/v1/videos/v1", params={"collection": "nope"}),
        client.get("/v1/collections/nope"),
        client.delete("/v1/collections/nope"),
    ]
    for answer in calls:
        assert answer.status_code == 404, (answer.request.url, answer.text)
        assert "nope" in answer.json()["error"]["message"]


def test_a_rollouts_next_version_is_no_collection(client: TestClient) -> None:
    """``media.next`` (the alias a rollout builds through) is not a collection a call can
    name, whatever the alias cache holds."""
    store = client.app.state.runtime.components.store  # type: ignore[attr-defined]
    current = store.aliases(fresh=True)["media"]
    store.update_aliases({"media.next": current})
    try:
        for name in ("media.next", "media.previous"):
            answer = client.post("/v1/search", json={"text": "red", "collection": name})
            assert answer.status_code == 404, answer.text
            assert name in answer.json()["error"]["message"]
    finally:
        store.update_aliases({}, remove=["media.next"])
    assert "media.next" not in store.aliases(fresh=True)


def test_a_version_shows_its_index_and_a_build_covers_its_points(client: TestClient) -> None:
    """The embedded store's index state per version, through the API: brute force until the
    maintenance thread's out-of-process build (run here directly) covers every point."""
    _post_item(client, "green", "a green square for the index")
    version = client.get("/v1/collections/media").json()["versions"][0]
    assert version["index"]["building"] is False and version["index"]["segments"] >= 1
    assert version["index"]["indexed_points"] == 0  # far below the maintenance threshold
    store = client.app.state.runtime.components.store  # type: ignore[attr-defined]
    assert store.inner.build_index(version["name"])
    built = client.get("/v1/collections/media").json()["versions"][0]
    assert built["points"] == version["points"] >= 1
    assert built["index"]["indexed_points"] == built["points"]
    assert built["index"]["building"] is False


def test_the_configured_collection_cannot_be_deleted(client: TestClient) -> None:
    answer = client.delete("/v1/collections/media")
    assert answer.status_code == 409
    assert "CLIPSEARCH_COLLECTION" in answer.json()["error"]["message"]
    assert client.get("/v1/collections/media").status_code == 200


def test_a_restarted_gateway_serves_a_collection_of_another_bundle(
    tmp_path: Path, tiny_bundle_dir: Path, tiny_narrow_bundle_dir: Path
) -> None:
    """The bundle a collection was created with is loaded again at start-up from the spec its
    version records; its searches answer as before."""
    settings = make_settings(tmp_path, tiny_bundle_dir)
    for client in running_client(settings):
        made = client.post(
            "/v1/collections", json={"name": "beta", "bundle": str(tiny_narrow_bundle_dir)}
        )
        assert made.status_code == 201, made.text
        item = _post_item(client, "green", "a green square", collection="beta")
        before = client.post("/v1/search", json={"text": "green", "collection": "beta"}).json()
    app = create_app(settings, build_components)
    with TestClient(app) as again:
        assert app.state.runtime.wait(120), app.state.runtime.readiness()
        after = again.post("/v1/search", json={"text": "green", "collection": "beta"})
        assert after.status_code == 200, after.text
        assert [h["id"] for h in after.json()["hits"]] == [item]
        assert after.json()["hits"][0]["score"] == pytest.approx(before["hits"][0]["score"])
        assert after.json()["model"] == made.json()["bundle"]


def test_a_collection_is_rolled_onto_another_bundle_and_back_on_its_own(
    tmp_path: Path, tiny_bundle_dir: Path, tiny_narrow_bundle_dir: Path
) -> None:
    """Rollouts take the collection: `gamma` (made with tiny-narrow) is rebuilt with the
    configured bundle and promoted, rolled back; the default collection never changes model."""
    for gateway in running_client(make_settings(tmp_path, tiny_bundle_dir)):
        _roll_gamma(gateway, tiny_narrow_bundle_dir)


def _roll_gamma(client: TestClient, tiny_narrow_bundle_dir: Path) -> None:
    from tests.indexer.test_reindex import wait_rollout
    from tests.indexer.test_rollout_bundles import TINY

    made = client.post(
        "/v1/collections", json={"name": "gamma", "bundle": str(tiny_narrow_bundle_dir)}
    )
    assert made.status_code == 201, made.text
    narrow = made.json()["bundle"]
    for i in range(5):
        added = client.post(
            "/v1/items",
            data={"description": f"a note about harbour {i}", "collection": "gamma"},
        )
        assert added.status_code == 200, added.text
    client.post("/v1/items", data={"description": "a harbour note in media"})

    def model(collection: str | None = None) -> str:
        body = {"text": "harbour", **({"collection": collection} if collection else {})}
        answer = client.post("/v1/search", json=body)
        assert answer.status_code == 200 and answer.json()["hits"], answer.text
        return str(answer.json()["model"])

    assert (model("gamma"), model()) == (narrow, TINY)
    started = client.post("/v1/admin/reindex", json={"collection": "gamma", "bundle": TINY})
    assert started.status_code == 202, started.text
    assert started.json()["collection"] == "gamma"
    rid = started.json()["id"]
    ready = wait_rollout(lambda r: client.get(f"/v1/admin/reindex/{r}").json(), rid)
    assert ready["state"] == "ready" and ready["rebuilt"] == 5, ready
    assert client.post(f"/v1/admin/reindex/{rid}/promote").status_code == 200
    assert (model("gamma"), model()) == (TINY, TINY)
    assert client.get("/v1/collections/gamma").json()["points"] == 5
    back = client.post("/v1/admin/rollback", json={"collection": "gamma"})
    assert back.status_code == 200, back.text
    assert (model("gamma"), model()) == (narrow, TINY)
