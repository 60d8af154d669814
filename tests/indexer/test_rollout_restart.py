"""A gateway restarted after a rollout onto a bundle loaded at run time (issue 14) loads it again
from the spec the version records, so its queries are embedded by its own bundle: real gateways
(the app built twice over one data dir) on the shipped default bundle, rolled out onto ``tiny``
(the tiny test bundle built for the data dir), ONNX Runtime, Qdrant Edge."""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from indexer.distributed.bundles import SPEC_KEY
from service.store.versions import VersionedStore
from tests.indexer.distributed.test_batches import write_images
from tests.indexer.test_reindex import wait_rollout
from tests.service.gateway.conftest import make_settings, running_client
from tests.support import wait_for_job

pytestmark = pytest.mark.slow

DEFAULT = Path(__file__).resolve().parents[2] / "models" / "zoo" / "photo"
N_IMAGES = 6
gateway = contextmanager(running_client)


def _search(client: TestClient) -> dict[str, Any]:
    r = client.post("/v1/search", json={"text": "a photo", "mode": "image", "limit": 20})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _served(client: TestClient) -> list[str]:
    embedder = client.app.state.runtime.components.embedder  # type: ignore[attr-defined]
    return [b.ref for b in embedder.info().bundles]


def test_a_restarted_gateway_searches_a_version_built_by_a_run_time_bundle_with_it(
    tmp_path: Path, tiny_bundle_dir: Path
) -> None:
    settings = make_settings(tmp_path, DEFAULT)
    shutil.copytree(tiny_bundle_dir, settings.data_dir / "bundles" / "tiny-test")
    write_images(tmp_path / "src" / "photos", N_IMAGES)
    with gateway(settings) as client:
        job = client.post("/v1/ingest", json={"source": str(tmp_path / "src" / "photos")})
        done = wait_for_job(lambda j: client.get(f"/v1/jobs/{j}").json(), job.json()["job_id"])
        assert done["state"] == "completed", done
        old = _search(client)
        assert old["model"].startswith("photo@")
        started = client.post("/v1/admin/reindex", json={"bundle": "tiny", "promote": "auto"})
        assert started.status_code in (200, 202), started.text
        record = wait_rollout(
            lambda r: client.get(f"/v1/admin/reindex/{r}").json(), started.json()["id"]
        )
        assert record["state"] == "completed", record
        new = _search(client)
        assert new["model"] == record["bundle"] and new["model"].startswith("tiny-test@")
        ids = [h["id"] for h in new["hits"]]
        assert len(ids) == N_IMAGES
        store: VersionedStore = client.app.state.runtime.components.store  # type: ignore[attr-defined]
        version = store.aliases(fresh=True)["media"]
        assert store.collection_metadata(version)[SPEC_KEY] == "tiny"

    # Restarted: the records of the rollout say how to load it again; without them (another
    # gateway's records, gone), the version's own metadata does.
    for forget in (False, True):
        if forget:
            shutil.rmtree(settings.data_dir / "reindex")
        with gateway(settings) as client:
            assert record["bundle"] in _served(client)
            again = _search(client)
            assert again["model"] == record["bundle"]
            assert [h["id"] for h in again["hits"]] == ids
            info = client.get("/v1/collections/media").json()
            assert info["bundle"] == record["bundle"] and info["points"] == N_IMAGES
            back = client.post("/v1/admin/rollback", json={})  # the default bundle again
            assert back.status_code == 200, back.text
            assert _search(client)["model"] == old["model"]
            forward = client.post("/v1/admin/rollback", json={})  # and tiny once more
            assert forward.status_code == 200, forward.text
            assert _search(client)["model"] == record["bundle"]


def test_a_rollout_in_progress_dual_writes_after_a_restart_that_lost_its_records(
    tmp_path: Path, tiny_bundle_dir: Path, tiny_narrow_bundle_dir: Path
) -> None:
    """Ready, not promoted: a gateway restarted without the rollout's records (another
    replica's, or gone) loads its bundle again from the version's metadata, so writes still
    reach both versions."""
    settings = make_settings(tmp_path, tiny_bundle_dir)
    write_images(tmp_path / "src" / "photos", N_IMAGES)
    with gateway(settings) as client:
        job = client.post("/v1/ingest", json={"source": str(tmp_path / "src" / "photos")})
        done = wait_for_job(lambda j: client.get(f"/v1/jobs/{j}").json(), job.json()["job_id"])
        assert done["state"] == "completed", done
        started = client.post("/v1/admin/reindex", json={"bundle": str(tiny_narrow_bundle_dir)})
        assert started.status_code in (200, 202), started.text
        record = wait_rollout(
            lambda r: client.get(f"/v1/admin/reindex/{r}").json(), started.json()["id"]
        )
        assert record["state"] == "ready", record
    shutil.rmtree(settings.data_dir / "reindex")
    write_images(tmp_path / "src" / "late", 2, seed=4)
    with gateway(settings) as client:
        assert record["bundle"] in _served(client)
        job = client.post("/v1/ingest", json={"source": str(tmp_path / "src" / "late")})
        late = wait_for_job(lambda j: client.get(f"/v1/jobs/{j}").json(), job.json()["job_id"])
        assert (late["state"], late["done"], late["failed"]) == ("completed", 2, 0), late
        versions = {v["role"]: v for v in client.get("/v1/collections/media").json()["versions"]}
        assert versions["current"]["points"] == versions["next"]["points"] == N_IMAGES + 2
        assert versions["next"]["bundle"] == record["bundle"]
