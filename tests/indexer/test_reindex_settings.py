"""A reindex is how cluster-wide settings change: ``POST /v1/admin/reindex`` with ``video`` builds
the next version with that segmenting, which the version records; after the promote, a gateway
still running with the old value refuses new jobs (409, naming the setting and both values)
until it is restarted with the new one, and a restart with the old one refuses to start."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient

from clipsearch.bootstrap import build_components
from service.core.config import VideoSettings
from service.core.contract import CollectionSettings
from service.gateway.app import create_app
from service.store.versions import VersionedStore
from tests.indexer.pipeline.test_video import make_video
from tests.indexer.test_reindex import wait_rollout
from tests.service.gateway.conftest import make_settings, png, running_client
from tests.support import wait_for_job

gateway = contextmanager(running_client)  # a gateway for the block's length


def _recorded(store: VersionedStore, role: str = "") -> CollectionSettings:
    found = CollectionSettings.from_metadata(store.metadata_of("media", role=role)[1])
    assert found is not None
    return found


def _segments(store: VersionedStore) -> list[tuple[float, float]]:
    page, _ = store.scroll("media", limit=100)
    return sorted(
        (r.payload["t_start"], r.payload["t_end"])
        for r in page
        if r.payload["kind"] == "video_segment"
    )


def test_a_reindex_with_new_segmenting_records_it_and_old_processes_refuse(
    tmp_path: Path, tiny_bundle_dir: Path
) -> None:
    folder = tmp_path / "src" / "media"
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(png((200, 30, 30)))
    make_video(folder / "clip.mp4")  # 12 s
    settings = make_settings(tmp_path, tiny_bundle_dir)
    with gateway(settings) as client:
        store: VersionedStore = client.app.state.runtime.components.store  # type: ignore[attr-defined]
        job = client.post("/v1/ingest", json={"source": str(folder)}).json()["job_id"]
        done = wait_for_job(lambda j: client.get(f"/v1/jobs/{j}").json(), job)
        assert done["state"] == "completed", done
        assert _recorded(store).video.segment_s == 5.0
        assert [round(e - s) for s, e in _segments(store)] == [5, 5, 2]

        bad = client.post("/v1/admin/reindex", json={"video": {"segment_s": -1}})
        assert bad.status_code == 422, bad.text
        started = client.post(
            "/v1/admin/reindex", json={"video": {"segment_s": 10}, "promote": "auto"}
        )
        assert started.status_code == 202, started.text
        assert started.json()["settings"]["video"]["segment_s"] == 10.0
        rollout = wait_rollout(
            lambda r: client.get(f"/v1/admin/reindex/{r}").json(), started.json()["id"]
        )
        assert rollout["state"] == "completed", rollout
        # The new version was cut with 10 s segments and records them; the old one its 5 s.
        assert [round(e - s) for s, e in _segments(store)] == [10, 2]
        assert _recorded(store).video.segment_s == 10.0
        assert _recorded(store, ".previous").video.segment_s == 5.0

        # This gateway still runs with 5 s: it refuses to segment anything more.
        refused = client.post("/v1/ingest", json={"source": str(folder)})
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["message"] == (
            "CLIPSEARCH_VIDEO__SEGMENT_S=5 in this gateway, but collection 'media' was built "
            "with 10; set it to 10 or reindex"
        )

    # Restarted with the old value: it does not start, and says why.
    app = create_app(settings, build_components)
    with TestClient(app):
        assert not app.state.runtime.wait(120)
        assert app.state.runtime.error == (
            "CLIPSEARCH_VIDEO__SEGMENT_S=5 here, but collection 'media' was built with 10; "
            "set it to 10 or reindex"
        )

    # With the new value it starts and ingests again.
    new = settings.model_copy(update={"video": VideoSettings(segment_s=10)})
    with gateway(new) as client:
        job = client.post("/v1/ingest", json={"source": str(folder)}).json()["job_id"]
        done = wait_for_job(lambda j: client.get(f"/v1/jobs/{j}").json(), job)
        assert done["state"] == "completed", done
