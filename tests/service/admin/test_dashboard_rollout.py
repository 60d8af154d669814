"""A rollout driven from the dashboard's forms: start onto ``tiny-narrow`` (other dimensions),
watch it reach ready, read the comparison (table and chart), promote, roll back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.core.config import Settings
from tests.service.admin.conftest import ADMIN_KEY, csrf_of, login, start, wait_jobs_done

API = {"x-api-key": ADMIN_KEY}


@pytest.fixture(scope="module")
def client(keyed_settings: Settings) -> Iterator[TestClient]:
    settings = keyed_settings.model_copy(
        update={"data_dir": keyed_settings.data_dir.parent / "rollout-data"}
    )
    for c in start(settings):
        src = settings.sources.allowed_roots[0]
        assert c.post("/v1/ingest", json={"source": str(src)}, headers=API).status_code == 202
        login(c)
        wait_jobs_done(c)
        yield c


def _served_bundle(client: TestClient) -> str:
    [listed] = client.get("/v1/collections", headers=API).json()["collections"]
    return str(listed["bundle"])


def _wait_state(client: TestClient, states: set[str], timeout: float = 120) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        [rollout] = client.get("/admin/api/rollouts").json()["rollouts"][:1]
        if rollout["state"] in states:
            return dict(rollout)
        assert rollout["state"] not in ("failed", "cancelled"), rollout
        assert time.monotonic() < deadline, rollout
        time.sleep(0.2)


def test_start_compare_promote_and_roll_back_from_the_dashboard(
    client: TestClient, tiny_narrow_bundle_dir: Path
) -> None:
    # Real queries for the comparison to replay, and a golden set through the dashboard's form.
    for text in ("red", "green", "blue"):
        body = {"text": text, "mode": "image"}
        assert client.post("/v1/search", json=body, headers=API).status_code == 200
    red = (Path(client.app.state.runtime.settings.sources.allowed_roots[0]) / "red.png").as_uri()  # type: ignore[attr-defined]
    token = csrf_of(client.get("/admin/rollouts").text)
    golden = client.post(
        "/admin/golden", data={"golden": f'{{"red": ["{red}"]}}', "csrf_token": token}
    )
    assert golden.status_code == 303, golden.text
    assert "1 golden query stored" in client.get("/admin/rollouts").text

    assert _served_bundle(client) == "tiny-test@0.1.0"
    started = client.post(
        "/admin/rollouts",
        data={"bundle_path": str(tiny_narrow_bundle_dir), "promote": "manual", "csrf_token": token},
    )
    assert started.status_code == 303, started.text
    again = client.post(
        "/admin/rollouts", data={"bundle_path": str(tiny_narrow_bundle_dir), "csrf_token": token}
    )
    assert again.status_code == 409, again.text  # one rollout of a collection at a time

    ready = _wait_state(client, {"ready"})
    assert ready["percent"] == 100.0
    page = client.get("/admin/rollouts").text
    assert 'data-state="ready"' in page
    assert "top-10 overlap" in page
    assert "golden recall@1" in page
    assert '<svg class="chart"' in page
    assert "bar-old" in page and "bar-new" in page
    assert f"/admin/rollouts/{ready['id']}/promote" in page
    assert _served_bundle(client) == "tiny-test@0.1.0"  # nothing switched before promote

    promoted = client.post(f"/admin/rollouts/{ready['id']}/promote", data={"csrf_token": token})
    assert promoted.status_code == 303, promoted.text
    _wait_state(client, {"completed"})
    assert _served_bundle(client) == "tiny-narrow@0.1.0"
    hits = client.post("/v1/search", json={"text": "red", "mode": "image"}, headers=API).json()
    assert hits["model"] == "tiny-narrow@0.1.0"

    # Promote again: a clear 409 on the page, nothing changed.
    twice = client.post(f"/admin/rollouts/{ready['id']}/promote", data={"csrf_token": token})
    assert twice.status_code == 409
    back = client.post("/admin/rollback", data={"csrf_token": token})
    assert back.status_code == 303, back.text
    assert _served_bundle(client) == "tiny-test@0.1.0"
    hits = client.post("/v1/search", json={"text": "red", "mode": "image"}, headers=API).json()
    assert hits["model"] == "tiny-test@0.1.0"
