"""POST /v1/ingest with manifests and URLs: images, video segments, text-only documents.

Real everything: the gateway's in-process job runner, ONNX Runtime on the tiny bundle, Qdrant
Edge, PyAV-made video, and a real HTTP server on 127.0.0.1 reached through the SSRF guard's
allow-list.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.core.config import SourcesSettings
from service.gateway.state import Components
from tests.indexer.pipeline.test_video import make_video
from tests.service.gateway.conftest import make_settings, png, running_client
from tests.support import serve_directory, wait_for_job


@pytest.fixture
def web(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "blue.png").write_bytes(png((0, 0, 230)))

    with serve_directory(tmp_path / "www") as url:
        yield url


@pytest.fixture
def client(tmp_path: Path, tiny_bundle_dir: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, tiny_bundle_dir)
    sources = SourcesSettings(allowed_roots=[tmp_path / "src"], allowed_networks=["127.0.0.1/32"])
    yield from running_client(settings.model_copy(update={"sources": sources}))


def job_of(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/ingest", json=body)
    assert response.status_code == 202, response.text
    return wait_for_job(lambda j: client.get(f"/v1/jobs/{j}").json(), response.json()["job_id"])


def test_a_manifest_of_every_kind(client: TestClient, tmp_path: Path, web: str) -> None:
    src = tmp_path / "src"
    (src / "red.png").write_bytes(png((230, 0, 0)))
    make_video(src / "clip.mkv")  # 12 s, four 3 s shots
    lines = [
        {"uri": str(src / "red.png"), "caption": "a red picture", "metadata": {"n": 1}},
        {"uri": f"{web}/blue.png", "id": "blue-from-the-web"},
        {"id": "doc-1", "description": "a text-only scene description"},
        {"uri": str(src / "clip.mkv"), "caption": "a video of four coloured shots"},
        {"uri": f"{web}/missing.png"},
        {"uri": "/etc/passwd"},
        "{not json",
    ]
    job = job_of(client, {"source": {"manifest_lines": lines}})
    assert job["state"] == "completed", job
    assert (job["total"], job["done"], job["failed"]) == (7, 4, 3), job["errors"]
    reasons = " | ".join(e["reason"] for e in job["errors"])
    assert "allowed roots" in reasons, reasons  # /etc/passwd
    assert "404" in reasons or "not found" in reasons.lower(), reasons  # missing.png
    components: Components = client.app.state.runtime.components  # type: ignore[attr-defined]
    # 2 images + 1 text + 3 video segments (5 + 5 + 2 s).
    assert components.store.count(components.collection) == 6
    segments = components.store.count(components.collection, {"kind": "video_segment"})
    assert segments == 3
    hits = client.post(
        "/v1/search",
        json={"text": "a video of four coloured shots", "mode": "caption", "limit": 10},
    ).json()["hits"]
    video = [h for h in hits if h.get("video_id")]
    assert sorted((h["t_start"], h["t_end"]) for h in video) == [(0, 5), (5, 10), (10, 12)]
    for body in (
        {"mode": "caption"},
        {"mode": "hybrid"},
    ):
        grouped = client.post(
            "/v1/search",
            json={
                "text": "a video of four coloured shots",
                "limit": 10,
                "group_by": "video",
                **body,
            },
        ).json()["hits"]
        best = [h for h in grouped if h.get("video_id")]
        assert len(best) == 1, grouped  # one hit per video: its best segment
        assert (best[0]["t_start"], best[0]["t_end"]) in [(0, 5), (5, 10), (10, 12)]
        assert len({h["id"] for h in grouped}) == len(grouped)
    paged = client.post(
        "/v1/search",
        json={"text": "a video", "mode": "caption", "limit": 1, "offset": 1, "group_by": "video"},
    ).json()["hits"]
    assert len(paged) == 1  # the second group (red.png or the video), not a second segment
    bad = client.post("/v1/search", json={"text": "x", "group_by": "album"})
    assert bad.status_code == 422
    thumbs = sorted((tmp_path / "data" / "thumbnails" / components.collection).glob("*.jpg"))
    assert len(thumbs) == 3
    image = client.get(video[0]["thumbnail"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert image.content[:2] == b"\xff\xd8"
    assert client.get("/v1/thumbnails/media/../../etc/passwd").status_code == 404
    assert (
        client.get(f"/v1/thumbnails/media/{'0' * 8}-0000-0000-0000-{'0' * 12}.jpg").status_code
        == 404
    )
    assert client.get("/v1/thumbnails/media/notauuid.jpg").status_code == 422

    again = job_of(client, {"source": {"manifest_lines": lines}})
    assert (again["done"], again["failed"]) == (4, 3)
    assert components.store.count(components.collection) == 6  # same ids: nothing duplicated


def test_urls_to_private_addresses_are_refused_per_item(client: TestClient, web: str) -> None:
    job = job_of(
        client,
        {"source": {"urls": [f"{web}/blue.png", "http://169.254.169.254/latest/meta-data"]}},
    )
    assert (job["done"], job["failed"]) == (1, 1)
    assert "link-local" in job["errors"][0]["reason"] or "metadata" in job["errors"][0]["reason"]


def test_bad_source_specs_get_a_clear_4xx(client: TestClient, tmp_path: Path) -> None:
    for body, status in (
        ({"source": {}}, 422),
        ({"source": {"directory": "/", "urls": ["http://x"]}}, 422),
        ({"source": {"directory": "/etc"}}, 403),
        ({"source": {"manifest": str(tmp_path / "src" / "missing.jsonl")}}, 400),
    ):
        response = client.post("/v1/ingest", json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]["message"]
