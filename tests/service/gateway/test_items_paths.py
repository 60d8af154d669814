"""Items named by file URIs (a directory ingest's ids, slashes and all) read and deleted through
the REST API; a whole video deleted in one call; a deleted segment's thumbnail is gone. On a real
gateway served by uvicorn (tiny bundle, Qdrant Edge, the in-process job runner) and a PyAV-made
video. Not Starlette's TestClient: it decodes a path twice, and file URIs hold '%' (a space is
%20), so only a real server shows what a client gets."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import uvicorn

from clipsearch.bootstrap import build_components
from service.gateway.app import create_app
from service.gateway.state import Components
from tests.indexer.pipeline.test_video import make_video
from tests.service.gateway.conftest import make_settings, png
from tests.support import wait_for_job, wait_until

Client = httpx.Client


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("paths")


@pytest.fixture(scope="module")
def served(folder: Path, tiny_bundle_dir: Path) -> Iterator[tuple[Client, Components]]:
    app = create_app(make_settings(folder, tiny_bundle_dir), build_components)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=60)
        assert app.state.runtime.wait(120), app.state.runtime.readiness()
        port = server.servers[0].sockets[0].getsockname()[1]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            yield http, app.state.runtime.components
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def client(served: tuple[Client, Components]) -> Client:
    return served[0]


@pytest.fixture(scope="module")
def ingested(client: Client, folder: Path) -> Path:
    src = folder / "src" / "photos"
    (src / "day1").mkdir(parents=True)
    (src / "day1" / "red.png").write_bytes(png((220, 30, 30)))
    (src / "day1" / "red.txt").write_text("a red picture")
    (src / "green day.png").write_bytes(png((30, 180, 60)))
    make_video(src / "clip.mkv")  # 12 s: three 5 s segments (5 + 5 + 2)
    (src / "clip.txt").write_text("a video of four coloured shots")
    job = client.post("/v1/ingest", json={"source": str(src)}).json()
    done = wait_for_job(lambda j: client.get(f"/v1/jobs/{j}").json(), job["job_id"])
    assert (done["state"], done["done"], done["failed"]) == ("completed", 3, 0), done
    return src


def _segments(client: Client, video_id: str) -> list[dict[str, Any]]:
    response = client.post(
        "/v1/search",
        json={"text": "coloured shots", "mode": "caption", "filter": {"video_id": video_id}},
    )
    assert response.status_code == 200, response.text
    hits: list[dict[str, Any]] = response.json()["hits"]
    return hits


def test_an_item_named_by_a_file_uri_is_read_and_deleted(client: Client, ingested: Path) -> None:
    uri = (ingested / "day1" / "red.png").as_uri()
    raw = client.get(f"/v1/items/{uri}")  # slashes as they are
    assert raw.status_code == 200, raw.text
    assert raw.json()["uri"] == uri
    assert raw.json()["caption"] == "a red picture"
    encoded = client.get(f"/v1/items/{quote(uri, safe='')}")
    assert encoded.status_code == 200, encoded.text
    assert encoded.json()["id"] == raw.json()["id"]

    assert client.delete(f"/v1/items/{quote(uri, safe='')}").status_code == 204
    assert client.get(f"/v1/items/{uri}").status_code == 404
    assert client.delete(f"/v1/items/{uri}").status_code == 404
    # The other picture of the folder is untouched.
    assert client.get(f"/v1/items/{quote(_green(ingested), safe='')}").status_code == 200


def _green(ingested: Path) -> str:
    return (ingested / "green day.png").as_uri()


def test_an_id_holding_percent_escapes_is_named_percent_encoded(
    client: Client, ingested: Path
) -> None:
    uri = _green(ingested)
    assert "%20" in uri  # the file URI spells the space so
    item = client.get(f"/v1/items/{quote(uri, safe='')}")
    assert item.status_code == 200, item.text
    assert item.json()["uri"] == uri
    # As it is, %20 is read as a space: another name, which no item has.
    unquoted = client.get(f"/v1/items/{uri}")
    assert unquoted.status_code == 404
    assert "green day.png" in unquoted.json()["error"]["message"]


def test_deleting_a_segment_removes_its_thumbnail(
    client: Client, ingested: Path, folder: Path
) -> None:
    video_id = (ingested / "clip.mkv").as_uri()
    segments = _segments(client, video_id)
    assert len(segments) == 3
    first, *others = sorted(segments, key=lambda h: h["t_start"])
    assert client.get(first["thumbnail"]).status_code == 200
    assert (folder / "data" / first["thumbnail"].removeprefix("/v1/")).is_file()

    assert client.delete(f"/v1/items/{first['id']}").status_code == 204
    gone = client.get(first["thumbnail"])
    assert gone.status_code == 404
    assert gone.json()["error"]["type"] == "not_found"
    assert not (folder / "data" / first["thumbnail"].removeprefix("/v1/")).exists()
    for hit in others:
        assert client.get(hit["thumbnail"]).status_code == 200
    # A segment's media id holds '#': percent-encoded, it names the segment too.
    second = f"{video_id}#1"
    assert client.get(f"/v1/items/{quote(second, safe='')}").json()["id"] == others[0]["id"]


def test_a_whole_video_is_deleted_in_one_call(
    served: tuple[Client, Components], ingested: Path
) -> None:
    client, components = served
    video_id = (ingested / "clip.mkv").as_uri()
    segments = _segments(client, video_id)
    assert segments, "the previous test leaves two segments"
    before = components.store.count(components.collection)

    response = client.delete(f"/v1/videos/{quote(video_id, safe='')}")
    assert response.status_code == 200, response.text
    assert response.json() == {"video_id": video_id, "deleted": len(segments)}
    assert components.store.count(components.collection, {"video_id": video_id}) == 0
    assert components.store.count(components.collection) == before - len(segments)
    for hit in segments:
        assert client.get(hit["thumbnail"]).status_code == 404
        assert client.get(f"/v1/items/{hit['id']}").status_code == 404
    assert client.get(f"/v1/items/{quote(_green(ingested), safe='')}").status_code == 200

    again = client.delete(f"/v1/videos/{video_id}")
    assert again.status_code == 404
    assert video_id in again.json()["error"]["message"]


def test_a_video_with_all_its_segments_is_deleted_by_its_unquoted_uri(
    client: Client, ingested: Path
) -> None:
    # Ingest the folder again: the video's three segments come back under the same ids.
    job = client.post("/v1/ingest", json={"source": str(ingested)}).json()
    wait_for_job(lambda j: client.get(f"/v1/jobs/{j}").json(), job["job_id"])
    video_id = (ingested / "clip.mkv").as_uri()
    assert len(_segments(client, video_id)) == 3
    response = client.delete(f"/v1/videos/{video_id}")
    assert response.json() == {"video_id": video_id, "deleted": 3}
    assert _segments(client, video_id) == []


def test_bad_item_and_video_ids(client: Client, ingested: Path) -> None:
    for path in ("/v1/videos/never-ingested", "/v1/videos/file:///nowhere/clip.mkv"):
        response = client.delete(path)
        assert response.status_code == 404, response.text
        assert response.json()["error"]["type"] == "not_found"
    # A picture is no video: nothing to delete as one, and the picture stays.
    picture = quote(_green(ingested), safe="")
    assert client.delete(f"/v1/videos/{picture}").status_code == 404
    assert client.get(f"/v1/items/{picture}").status_code == 200
    assert client.get("/v1/items/file:///etc/passwd").status_code == 404
