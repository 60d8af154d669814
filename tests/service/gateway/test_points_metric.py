"""``clipsearch_points_upserted_total`` on the gateway's /metrics agrees with the data: it counts
what the store put into the serving version, whether the items API or a job wrote it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.gateway.state import Components
from tests.service.gateway.conftest import make_settings, png, running_client
from tests.support import wait_for_job


@pytest.fixture()
def fresh(tmp_path: Path, tiny_bundle_dir: Path) -> Iterator[TestClient]:
    yield from running_client(make_settings(tmp_path, tiny_bundle_dir))


def _counter(client: TestClient) -> float:
    text = client.get("/metrics").text
    found = re.search(r"^clipsearch_points_upserted_total (\S+)$", text, re.M)
    assert found, "the counter is not on /metrics"
    return float(found.group(1))


def test_the_counter_equals_the_points_written_by_every_path(
    fresh: TestClient, tmp_path: Path
) -> None:
    components: Components = fresh.app.state.runtime.components  # type: ignore[attr-defined]
    assert _counter(fresh) == 0
    for colour in [(200, 0, 0), (0, 200, 0)]:
        response = fresh.post("/v1/items", files={"file": ("a.png", png(colour), "image/png")})
        assert response.status_code == 200, response.text
    folder = tmp_path / "src" / "batch"
    folder.mkdir(parents=True)
    for i, colour in enumerate([(0, 0, 200), (90, 90, 0), (0, 90, 90)]):
        (folder / f"img{i}.png").write_bytes(png(colour))
    job = fresh.post("/v1/ingest", json={"source": {"directory": str(folder)}}).json()
    state = wait_for_job(lambda j: fresh.get(f"/v1/jobs/{j}").json(), job["job_id"])
    assert state["state"] == "completed", state
    stored = components.store.count(components.collection)
    assert stored == 5
    assert _counter(fresh) == stored
