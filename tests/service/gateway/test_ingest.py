"""Directory ingestion on the in-process job runner: good items land, bad ones are reported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from service.gateway.state import Components
from tests.service.gateway.conftest import png
from tests.support import wait_for_job


def _wait(client: TestClient, job_id: str) -> dict[str, Any]:
    return wait_for_job(lambda j: client.get(f"/v1/jobs/{j}").json(), job_id)


def _folder(root: Path) -> Path:
    folder = root / "src" / "batch"
    (folder / "nested").mkdir(parents=True, exist_ok=True)
    for i, colour in enumerate([(200, 0, 0), (0, 200, 0), (0, 0, 200)]):
        (folder / f"img{i}.png").write_bytes(png(colour))
        (folder / f"img{i}.txt").write_text(f"caption number {i}\n")
    (folder / "img0.desc.txt").write_text("a red square filling the frame")
    (folder / "nested" / "deep.png").write_bytes(png((9, 9, 9)))
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    (folder / "notes.md").write_text("ignored: not an image")
    return folder


def test_ingest_indexes_good_items_and_reports_the_bad_one(
    client: TestClient, components: Components, gateway_dir: Path
) -> None:
    folder = _folder(gateway_dir)
    before = components.store.count(components.collection)
    response = client.post("/v1/ingest", json={"source": str(folder)})
    assert response.status_code == 202, response.text
    job = _wait(client, response.json()["job_id"])
    assert job["state"] == "completed"
    assert (job["total"], job["done"], job["failed"]) == (5, 4, 1)
    assert [e["item"] for e in job["errors"]] == [(folder / "corrupt.png").as_uri()]
    assert job["errors"][0]["reason"]
    assert components.store.count(components.collection) == before + 4

    hits = client.post(
        "/v1/search", json={"text": "red square", "mode": "description", "limit": 1}
    ).json()["hits"]
    assert hits[0]["uri"] == (folder / "img0.png").as_uri()
    assert hits[0]["caption"] == "caption number 0"

    # The same folder again: same ids, so the point count does not move.
    again = _wait(client, client.post("/v1/ingest", json={"source": str(folder)}).json()["job_id"])
    assert (again["done"], again["failed"]) == (4, 1)
    assert components.store.count(components.collection) == before + 4


def test_ingest_refuses_paths_outside_the_allowed_roots(
    client: TestClient, gateway_dir: Path, tmp_path: Path
) -> None:
    outside = client.post("/v1/ingest", json={"source": str(tmp_path)})
    assert outside.status_code == 403
    assert outside.json()["error"]["type"] == "forbidden"
    sneaky = client.post("/v1/ingest", json={"source": str(gateway_dir / "src" / ".." / "data")})
    assert sneaky.status_code == 403
    missing = client.post("/v1/ingest", json={"source": str(gateway_dir / "src" / "nope")})
    assert missing.status_code == 400
    assert "does not exist" in missing.json()["error"]["message"]
    a_file = gateway_dir / "src" / "file.txt"
    a_file.write_text("x")
    assert client.post("/v1/ingest", json={"source": str(a_file)}).status_code == 400
    assert client.post("/v1/ingest", json={"source": ""}).status_code == 422


def test_retry_failed_submits_the_failed_entries_again(
    client: TestClient, components: Components, gateway_dir: Path
) -> None:
    folder = gateway_dir / "src" / "retry"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "good.png").write_bytes(png((10, 200, 10)))
    (folder / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    first = _wait(client, client.post("/v1/ingest", json={"source": str(folder)}).json()["job_id"])
    assert (first["done"], first["failed"], first["eta_s"]) == (1, 1, 0)
    assert client.delete(f"/v1/jobs/{first['id']}").status_code == 409  # it has ended

    (folder / "bad.png").write_bytes(png((200, 200, 10)))  # the operator fixes the file
    retried = client.post(f"/v1/jobs/{first['id']}/retry-failed")
    assert retried.status_code == 202, retried.text
    second = _wait(client, retried.json()["job_id"])
    assert (second["total"], second["done"], second["failed"]) == (1, 1, 0)
    nothing = client.post(f"/v1/jobs/{second['id']}/retry-failed")
    assert nothing.status_code == 400 and "no failed entries" in nothing.text
    assert client.delete("/v1/jobs/nope").status_code == 404
    assert client.post("/v1/jobs/nope/retry-failed").status_code == 404


def test_jobs_are_listed_newest_first_a_page_at_a_time(client: TestClient) -> None:
    before = client.get("/v1/jobs").json()["total"]
    ids = []
    for n in range(3):
        lines = [{"id": f"listed-{n}", "description": f"a listed document number {n}"}]
        response = client.post("/v1/ingest", json={"source": {"manifest_lines": lines}})
        ids.append(response.json()["job_id"])
        _wait(client, ids[-1])
    first = client.get("/v1/jobs", params={"limit": 2}).json()
    assert (first["total"], first["limit"], first["offset"]) == (before + 3, 2, 0)
    assert [j["id"] for j in first["jobs"]] == [ids[2], ids[1]]
    assert all(j["state"] == "completed" and j["done"] == 1 for j in first["jobs"])
    second = client.get("/v1/jobs", params={"limit": 2, "offset": 2}).json()
    assert second["jobs"][0]["id"] == ids[0]
    assert client.get("/v1/jobs", params={"offset": before + 3}).json()["jobs"] == []
    default = client.get("/v1/jobs").json()
    assert default["limit"] == 20
    assert [j["created_at"] for j in default["jobs"]] == sorted(
        (j["created_at"] for j in default["jobs"]), reverse=True
    )


def test_bad_job_paging(client: TestClient) -> None:
    cases: list[tuple[dict[str, int | str], str]] = [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"offset": -1}, "offset"),
        ({"limit": "ten"}, "limit"),
    ]
    for params, needle in cases:
        response = client.get("/v1/jobs", params=params)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["type"] == "invalid_input"
        assert needle in error["message"]


def test_a_lone_text_file_in_a_folder_is_a_searchable_document(
    client: TestClient, components: Components, gateway_dir: Path
) -> None:
    """Mixed data in one folder: a captioned picture, an uncaptioned one, and a note with no
    picture of its name, which is indexed as a text-only document (its text the description),
    found by a text→description search and named by its file."""
    folder = gateway_dir / "src" / "mixed"
    folder.mkdir(parents=True)
    (folder / "red.png").write_bytes(png((200, 0, 0)))
    (folder / "red.txt").write_text("a red square")
    (folder / "blue.png").write_bytes(png((0, 0, 200)))
    (folder / "recipe.txt").write_text("lemon cake with flour, sugar and three lemons")
    (folder / "empty.txt").write_text("\n")
    before = components.store.count(components.collection)
    job = _wait(client, client.post("/v1/ingest", json={"source": str(folder)}).json()["job_id"])
    assert (job["total"], job["done"], job["failed"]) == (4, 3, 1)
    assert [e["item"] for e in job["errors"]] == [(folder / "empty.txt").as_uri()]
    assert "empty" in job["errors"][0]["reason"]
    assert components.store.count(components.collection) == before + 3
    hits = client.post(
        "/v1/search", json={"text": "lemon cake recipe", "mode": "description", "limit": 1}
    ).json()["hits"]
    assert hits[0]["media_id"] == (folder / "recipe.txt").as_uri()
    assert hits[0]["kind"] == "text" and hits[0]["uri"] is None
    assert hits[0]["description"] == "lemon cake with flour, sugar and three lemons"
