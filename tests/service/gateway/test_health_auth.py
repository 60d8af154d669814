"""Health truthfulness, metrics, and API-key scopes."""

from __future__ import annotations

import threading
from pathlib import Path

from fastapi.testclient import TestClient

from service.core.config import AuthSettings, Settings
from service.gateway.app import create_app
from service.gateway.state import Components
from tests.service.gateway.conftest import make_settings, running_client


def test_live_ready_and_metrics(client: TestClient) -> None:
    assert client.get("/health/live").json() == {"status": "alive"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True
    assert ready.json()["model"] == "tiny-test@0.1.0"
    searched = client.post("/v1/search", json={"text": "hello"})
    assert searched.status_code == 200, searched.text
    text = client.get("/metrics").text
    assert 'clipsearch_http_requests_total{method="POST",route="/v1/search",status="200"}' in text
    assert "clipsearch_search_seconds_bucket" in text
    assert "clipsearch_ready 1.0" in text


def test_not_ready_until_components_are_built(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    release = threading.Event()

    def slow_factory(settings: Settings) -> Components:
        release.wait(30)
        raise RuntimeError("model file vanished")

    app = create_app(make_settings(tmp_path, tiny_bundle_dir), slow_factory)
    with TestClient(app) as client:
        assert client.get("/health/live").status_code == 200
        starting = client.get("/health/ready")
        assert starting.status_code == 503
        assert starting.json()["reason"] == "starting"
        search = client.post("/v1/search", json={"text": "a"})
        assert search.status_code == 503
        assert search.headers["retry-after"] == "5"
        release.set()
        app.state.runtime.wait(30)
        failed = client.get("/health/ready")
        assert failed.status_code == 503
        assert "model file vanished" in failed.json()["reason"]


def test_api_key_scopes(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    settings = make_settings(tmp_path, tiny_bundle_dir)
    settings = settings.model_copy(
        update={
            "auth": AuthSettings.model_validate(
                {"api_keys": "reader:search,writer:ingest,ops:admin+search"}
            )
        }
    )
    for client in running_client(settings):
        assert client.get("/health/ready").status_code == 200  # probes need no key
        body = {"text": "a red circle"}
        assert client.post("/v1/search", json=body).status_code == 401
        wrong = client.post("/v1/search", json=body, headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = client.post("/v1/search", json=body, headers={"x-api-key": "reader"})
        assert ok.status_code == 200
        forbidden = client.post(
            "/v1/items", data={"caption": "x"}, headers={"authorization": "Bearer reader"}
        )
        assert forbidden.status_code == 403
        assert forbidden.json()["error"]["type"] == "forbidden"
        allowed = client.post(
            "/v1/items", data={"caption": "x"}, headers={"authorization": "Bearer writer"}
        )
        assert allowed.status_code == 200
        # Reindex and rollback need the admin scope; listing collections the search scope.
        for key in ("reader", "writer"):
            denied = client.post("/v1/admin/rollback", json={}, headers={"x-api-key": key})
            assert denied.status_code == 403
        admin = client.post("/v1/admin/rollback", json={}, headers={"x-api-key": "ops"})
        assert admin.status_code == 409  # admitted: there is just nothing to roll back to
        assert client.get("/v1/collections", headers={"x-api-key": "reader"}).status_code == 200
        assert client.get("/v1/collections", headers={"x-api-key": "writer"}).status_code == 403
