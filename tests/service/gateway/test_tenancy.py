"""Keys scoped to collections over REST: a key never reaches a collection it has no scope on (the
404 of a collection that does not exist), per-key rate limits (429 + Retry-After, on an injected
clock) and the audit trail of admin actions."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.admin.session import check_login
from service.core.config import AuthSettings, RateLimit, Settings
from service.core.errors import ClipsearchError, ErrorType
from service.gateway.auth import authorize
from service.gateway.ratelimit import RateLimiter
from tests.service.gateway.conftest import COLOURS, make_settings, png, running_client

KEYS = ",".join(
    [
        "alpha-s3cret:search@alpha+ingest@alpha+admin@alpha:alpha-bot",  # never sees "media"
        "media-s3cret:search@media+ingest@media:media-bot",
        "reader-s3cret:search@media:media-reader",  # sees media, may not write to it
        "ops-s3cret:search+ingest+admin:ops",
    ]
)
SECRETS = ("alpha-s3cret", "media-s3cret", "reader-s3cret", "ops-s3cret")


def key(name: str) -> dict[str, str]:
    return {"authorization": f"Bearer {name}-s3cret"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path) -> Iterator[TestClient]:
    auth = AuthSettings.model_validate({"api_keys": KEYS})
    settings = make_settings(tmp_path_factory.mktemp("tenancy"), tiny_bundle_dir, auth=auth)
    for client in running_client(settings):
        posted = client.post(
            "/v1/items",
            files={"file": ("red.png", png(COLOURS["red"]), "image/png")},
            data={"caption": "a red circle", "id": "item-red"},
            headers=key("ops"),
        )
        assert posted.status_code == 200, posted.text
        yield client


@pytest.fixture()
def item_id(client: TestClient) -> str:
    hits = client.post("/v1/search", json={"text": "red"}, headers=key("ops")).json()["hits"]
    found: str = hits[0]["id"]
    return found


@pytest.fixture()
def clock(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Rate limits on for this test: 1 search a second with a burst of 2, 1 write a second."""
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    fake = Clock()
    auth = runtime.settings.auth.model_copy(
        update={"search_rate": RateLimit(per_s=1, burst=2), "write_rate": RateLimit(per_s=1)}
    )
    monkeypatch.setattr(runtime, "settings", runtime.settings.model_copy(update={"auth": auth}))
    monkeypatch.setattr(runtime, "limiter", RateLimiter(clock=fake))
    return fake


def unknown(client: TestClient, name: str) -> dict[str, Any]:
    """What the ops key (which sees everything) is told about a collection that does not exist."""
    response = client.get(f"/v1/collections/{name}", headers=key("ops"))
    assert response.status_code == 404
    body: dict[str, Any] = response.json()
    return body


def test_a_key_never_reaches_a_collection_it_is_not_scoped_for(
    client: TestClient, item_id: str
) -> None:
    # To alpha-bot, "media" is a collection that does not exist: the very answer ops gets for a
    # name that really does not exist, so the key cannot tell the two apart.
    ghost = unknown(client, "media-ghost")
    expected = json.loads(json.dumps(ghost).replace("media-ghost", "media"))
    assert expected["error"]["message"] == "collection 'media' does not exist"
    tid = item_id
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/v1/search", {"json": {"text": "red"}}),
        ("GET", f"/v1/items/{tid}", {}),
        ("DELETE", f"/v1/items/{tid}", {}),
        ("POST", "/v1/items", {"data": {"caption": "x"}}),
        ("POST", "/v1/ingest", {"json": {"source": "/nowhere"}}),
        ("GET", "/v1/jobs", {"params": {"collection": "media"}}),
        ("DELETE", "/v1/videos/v1", {}),
        ("POST", "/v1/embeddings", {"json": {"input": "red"}}),
        ("GET", "/v1/collections/media", {}),
        ("GET", "/v1/thumbnails/media/x.jpg", {}),
        ("POST", "/v1/admin/reindex", {"json": {}}),
        ("POST", "/v1/admin/rollback", {"json": {"collection": "media"}}),
        ("GET", "/v1/admin/golden", {"params": {"collection": "media"}}),
        ("PUT", "/v1/admin/golden", {"json": {"queries": [{"text": "a", "expected": ["x"]}]}}),
    ]
    for method, path, kwargs in calls:
        response = client.request(method, path, headers=key("alpha"), **kwargs)
        assert (response.status_code, response.json()) == (404, expected), (method, path)
    # It lists no collection it cannot see; its own collection names stay its own business.
    listed = client.get("/v1/collections", headers=key("alpha"))
    assert listed.status_code == 200 and listed.json()["collections"] == []
    # The item is still there: nothing above touched it.
    assert client.get(f"/v1/items/{tid}", headers=key("ops")).status_code == 200


def test_a_collection_named_in_the_request_is_checked(client: TestClient) -> None:
    # media-bot may ingest into media, not into alpha (named in the body) nor see its golden set.
    refused = client.post(
        "/v1/ingest", json={"source": "/nowhere", "collection": "alpha"}, headers=key("media")
    )
    assert refused.status_code == 404
    assert refused.json()["error"]["message"] == "collection 'alpha' does not exist"
    golden = client.get("/v1/admin/golden", params={"collection": "alpha"}, headers=key("media"))
    assert golden.status_code == 404
    assert client.get("/v1/thumbnails/alpha/x.jpg", headers=key("media")).status_code == 404
    # The alpha key is admitted to alpha: what it meets there is the gateway's own answer.
    admitted = client.get("/v1/admin/golden", params={"collection": "alpha"}, headers=key("alpha"))
    assert (admitted.status_code, admitted.json()) == (200, {"collection": "alpha", "queries": []})


def test_scoped_keys_work_on_their_collection(client: TestClient, item_id: str) -> None:
    assert client.post("/v1/search", json={"text": "red"}, headers=key("media")).status_code == 200
    assert client.get(f"/v1/items/{item_id}", headers=key("reader")).status_code == 200
    listed = client.get("/v1/collections", headers=key("media")).json()["collections"]
    assert [c["alias"] for c in listed] == ["media"]
    # A key that sees the collection but lacks the scope is told so (403): no name leaks.
    forbidden = client.post("/v1/items", data={"caption": "x"}, headers=key("reader"))
    assert forbidden.status_code == 403 and "'ingest' scope" in forbidden.json()["error"]["message"]
    # Unknown and missing keys are 401, as before.
    assert client.post("/v1/search", json={"text": "a"}).status_code == 401
    bad = client.post("/v1/search", json={"text": "a"}, headers={"x-api-key": "nope"})
    assert bad.status_code == 401


def test_per_key_rate_limits(client: TestClient, clock: Clock) -> None:
    search = {"text": "red"}
    for _ in range(2):  # the burst
        assert client.post("/v1/search", json=search, headers=key("media")).status_code == 200
    refused = client.post("/v1/search", json=search, headers=key("media"))
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["type"] == "overloaded"
    assert "key media-bot" in refused.json()["error"]["message"]
    # Another key's searches are untouched, and the key's writes have their own bucket.
    assert client.post("/v1/search", json=search, headers=key("ops")).status_code == 200
    assert client.get("/v1/jobs", headers=key("media")).status_code == 200
    assert client.get("/v1/jobs", headers=key("media")).status_code == 429
    clock.now += 1.0
    assert client.post("/v1/search", json=search, headers=key("media")).status_code == 200
    assert client.post("/v1/search", json=search, headers=key("media")).status_code == 429


def test_anonymous_callers_are_limited_per_address_loopback_never() -> None:
    settings = Settings(
        auth=AuthSettings(search_rate=RateLimit(per_s=1), write_rate=RateLimit(per_s=1))
    )
    limiter = RateLimiter(clock=Clock())
    for _ in range(5):
        authorize(settings, None, "search", limiter=limiter, client="127.0.0.1")
        authorize(settings, None, "search", limiter=limiter, client="::1")
    authorize(settings, None, "search", limiter=limiter, client="10.0.0.7")
    with pytest.raises(ClipsearchError) as caught:
        authorize(settings, None, "search", limiter=limiter, client="10.0.0.7")
    assert caught.value.type is ErrorType.overloaded and caught.value.retry_after_s == 1.0
    authorize(settings, None, "search", limiter=limiter, client="10.0.0.8")  # its own bucket


def test_the_dashboard_takes_admin_keys_for_every_collection() -> None:
    settings = Settings(auth=AuthSettings.model_validate({"api_keys": KEYS}))
    assert check_login(settings, "ops-s3cret")  # an unscoped admin key logs in as before
    with pytest.raises(ClipsearchError) as caught:
        check_login(settings, "alpha-s3cret")  # admin@alpha only: the API, not the dashboard
    assert caught.value.type is ErrorType.forbidden


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "clipsearch.audit"]


def test_admin_actions_leave_an_audit_line(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clipsearch.audit")
    posted = client.post(
        "/v1/items",
        files={"file": ("blue.png", png(COLOURS["blue"]), "image/png")},
        data={"caption": "a blue square", "id": "to-delete"},
        headers=key("ops"),
    )
    point = posted.json()["id"]
    assert client.delete(f"/v1/items/{point}", headers=key("ops")).status_code == 204
    assert client.delete("/v1/items/no-such-item", headers=key("ops")).status_code == 404
    assert client.post("/v1/admin/rollback", json={}, headers=key("alpha")).status_code == 404
    assert client.post("/v1/admin/rollback", json={}, headers=key("nobody")).status_code == 401
    assert client.get("/v1/admin/reindex", headers=key("ops")).status_code == 200  # a read
    lines = audit_lines(caplog)
    summary = [(x["who"], x["action"], x["result"]) for x in lines]
    assert summary == [
        ("ops", "delete_item", "ok"),
        ("ops", "delete_item", "not_found"),
        ("alpha-bot", "rollback", "not_found"),
        ("unknown-key", "rollback", "unauthorized"),
    ]
    first = lines[0]
    assert first["target"] == {"collection": "media", "item_id": point}
    assert first["via"] == "http" and first["client"] == "testclient"
    assert first["at"].endswith("+00:00")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert not any(secret in text for secret in SECRETS)


def test_rollouts_of_a_collection_a_key_cannot_see_do_not_exist(client: TestClient) -> None:
    started = client.post("/v1/admin/reindex", json={}, headers=key("ops"))
    assert started.status_code == 202, started.text
    rid = started.json()["id"]
    try:
        for method, suffix in (("GET", ""), ("DELETE", ""), ("POST", "/promote")):
            ghost = client.request(method, f"/v1/admin/reindex/nope{suffix}", headers=key("alpha"))
            hidden = client.request(
                method, f"/v1/admin/reindex/{rid}{suffix}", headers=key("alpha")
            )
            assert ghost.status_code == hidden.status_code == 404, (method, suffix)
            assert hidden.json() == json.loads(json.dumps(ghost.json()).replace("nope", rid))
        assert client.get("/v1/admin/reindex", headers=key("alpha")).json() == []
        listed = client.get("/v1/admin/reindex", headers=key("ops")).json()
        assert rid in [r["id"] for r in listed]
        # media-bot sees the collection but holds no admin scope: 403, as before.
        assert client.get(f"/v1/admin/reindex/{rid}", headers=key("media")).status_code == 403
        assert client.get(f"/v1/admin/reindex/{rid}", headers=key("ops")).status_code == 200
    finally:
        client.delete(f"/v1/admin/reindex/{rid}", headers=key("ops"))


def test_a_body_that_is_not_json_names_no_collection(client: TestClient) -> None:
    # The scope check reads a JSON body's collection; a route without a body has not checked it.
    headers = {"content-type": "application/json", **key("ops")}
    for junk in (b"[" * 100_000, b"\xff\xfe{", b'{"collection": 7}'):
        response = client.request("DELETE", "/v1/jobs/no-such-job", content=junk, headers=headers)
        assert response.status_code == 404, response.text
        assert "no-such-job" in response.json()["error"]["message"]
