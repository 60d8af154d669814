"""POST /v1/ingest with dataset sources: webdataset shards and tables, from local disk, over
http and from S3 (moto's standalone server on the loopback, reached through the standard AWS
variables), in the layout img2dataset writes.

Real everything: the gateway's in-process job runner, ONNX Runtime on the tiny bundle, Qdrant
Edge, a real HTTP server on 127.0.0.1 (through the SSRF guard's allow-list), a real S3 server.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from loadtests.s3server import aws_env, moto_s3, upload
from service.core.config import SourcesSettings
from service.gateway.state import Components
from tests.indexer.sources.datasets_support import caption_of, jpeg, write_shards
from tests.service.gateway.conftest import make_settings, running_client
from tests.support import serve_directory, wait_for_job

SHARDS, PER_SHARD = 20, 50
CORRUPT = (7, 13)  # shard 00007, its 14th sample: a jpg member that is no JPEG
BUCKET = "datasets"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The S3 endpoint, with img2dataset's shards under s3://datasets/shards/ and the
    standard AWS variables pointing at it for the module's tests."""
    tmp = tmp_path_factory.mktemp("s3")
    with moto_s3(tmp) as endpoint, pytest.MonkeyPatch.context() as env:
        for name, value in aws_env(endpoint).items():
            env.setenv(name, value)
        yield endpoint


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory, s3: str) -> tuple[Path, list[str]]:
    folder = tmp_path_factory.mktemp("data") / "src" / "shards"
    keys = write_shards(folder, SHARDS, PER_SHARD, corrupt=CORRUPT)
    upload(s3, folder, BUCKET, "shards")
    return folder, keys


@pytest.fixture
def client(
    tmp_path: Path, tiny_bundle_dir: Path, shards: tuple[Path, list[str]]
) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, tiny_bundle_dir)
    sources = SourcesSettings(
        allowed_roots=[shards[0].parent, tmp_path / "src", f"s3://{BUCKET}/shards"],  # type: ignore[list-item]
        allowed_networks=["127.0.0.1/32"],
    )
    yield from running_client(settings.model_copy(update={"sources": sources}))


def job_of(client: TestClient, source: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/ingest", json={"source": source})
    assert response.status_code == 202, response.text
    fetch = lambda j: client.get(f"/v1/jobs/{j}").json()  # noqa: E731
    return wait_for_job(fetch, response.json()["job_id"], timeout=240)


def points(client: TestClient) -> dict[str, Any]:
    components: Components = client.app.state.runtime.components  # type: ignore[attr-defined]
    out: dict[str, Any] = {}
    offset = None
    while True:
        page, offset = components.store.scroll(
            components.collection, limit=500, offset=offset, with_vectors=True
        )
        for record in page:
            payload = {k: v for k, v in record.payload.items() if k != "created_at"}
            out[record.id] = (payload, record.vectors)
        if offset is None:
            return out


def test_twenty_s3_shards_index_999_images_and_name_the_corrupt_member(
    client: TestClient, shards: tuple[Path, list[str]]
) -> None:
    _, keys = shards
    job = job_of(client, {"webdataset": f"s3://{BUCKET}/shards/{{00000..00019}}.tar"})
    assert job["state"] == "completed", job
    assert (job["total"], job["done"], job["failed"]) == (1000, 999, 1), job["errors"]
    assert (job["shards_total"], job["shards_done"], job["total_known"]) == (20, 20, True)
    [error] = job["errors"]
    bad_key = f"{CORRUPT[0]:05}{CORRUPT[1]:04}"
    assert f"s3://{BUCKET}/shards/00007.tar" in error["reason"], error
    assert bad_key in error["reason"], error
    components: Components = client.app.state.runtime.components  # type: ignore[attr-defined]
    assert components.store.count(components.collection) == 999
    # /metrics counts the shards and the bytes read (each shard's tar, read once).
    metrics = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in client.get("/metrics").text.splitlines()
        if line.startswith("clipsearch_ingest_")
    }
    assert metrics['clipsearch_ingest_units_read_total{kind="shard"}'] == 20
    tar_bytes = sum(p.stat().st_size for p in shards[0].glob("*.tar"))
    assert metrics['clipsearch_ingest_bytes_read_total{scheme="s3"}'] == tar_bytes
    # Each image is found by its caption; the json's fields are its metadata.
    for n in (0, 517, 999):
        key = keys[n]
        hits = client.post(
            "/v1/search", json={"text": caption_of(n), "mode": "caption", "limit": 3}
        ).json()["hits"]
        top = hits[0]
        assert top["metadata"]["key"] == key and top["caption"] == caption_of(n), hits
        assert top["uri"] == f"https://images.example.org/{key}.jpg"
        assert top["metadata"]["license"] == "cc-by" and top["metadata"]["width"] == 32, top


def test_local_http_and_s3_shards_give_the_same_points(
    tmp_path: Path, tiny_bundle_dir: Path, shards: tuple[Path, list[str]]
) -> None:
    folder, _ = shards
    found = []
    with serve_directory(folder) as web:
        for source in (
            str(folder / "{00000..00002}.tar"),
            f"{web}/{{00000..00002}}.tar",
            f"s3://{BUCKET}/shards/{{00000..00002}}.tar",
        ):
            (tmp_path / str(len(found))).mkdir()
            settings = make_settings(tmp_path / str(len(found)), tiny_bundle_dir)
            sources = SourcesSettings(
                allowed_roots=[folder],
                allowed_networks=["127.0.0.1/32"],
                allowed_prefixes=[f"s3://{BUCKET}"],
            )
            for client in running_client(settings.model_copy(update={"sources": sources})):
                job = job_of(client, {"webdataset": [source]})
                assert (job["state"], job["done"], job["failed"]) == ("completed", 150, 0), job[
                    "errors"
                ]
                found.append(points(client))
    assert len(found[0]) == 150
    assert found[0] == found[1] == found[2]


def test_a_missing_shard_is_one_error_naming_it_and_the_rest_goes_on(client: TestClient) -> None:
    job = job_of(
        client,
        {"webdataset": [f"s3://{BUCKET}/shards/00000.tar", f"s3://{BUCKET}/shards/99999.tar"]},
    )
    assert (job["state"], job["done"], job["failed"]) == ("completed", 50, 1), job
    assert (
        "99999.tar" in job["errors"][0]["reason"] and "does not exist" in job["errors"][0]["reason"]
    )


def test_object_store_prefixes_must_be_allowed(client: TestClient) -> None:
    response = client.post("/v1/ingest", json={"source": {"webdataset": "s3://other/x.tar"}})
    assert response.status_code == 403, response.text
    message = response.json()["error"]["message"]
    assert "--allow-root s3://other" in message and "ALLOWED_ROOTS" in message, message
    # A path that climbs out of an allowed prefix is no way around it.
    escape = f"s3://{BUCKET}/shards/../secret/a.tar"
    assert client.post("/v1/ingest", json={"source": {"webdataset": escape}}).status_code == 403


def _rows(tmp: Path, s3: str) -> list[dict[str, Any]]:
    """Images on S3 and text-only rows, as a LAION-style table's url/caption columns."""
    images = tmp / "images"
    images.mkdir()
    rows: list[dict[str, Any]] = []
    for i in range(4):
        (images / f"img{i}.jpg").write_bytes(jpeg(100 + i))
        rows.append(
            {
                "url": f"s3://{BUCKET}/shards/img/img{i}.jpg",
                "caption": caption_of(900 + i),
                "similarity": 0.3 + i / 10,
            }
        )
    upload(s3, images, BUCKET, "shards/img")
    rows += [{"url": "", "caption": f"a text-only row {i}", "similarity": 0.1} for i in range(3)]
    return rows


def test_parquet_csv_and_tsv_tables_with_columns(
    client: TestClient, tmp_path: Path, s3: str
) -> None:
    src = tmp_path / "src"
    rows = _rows(tmp_path, s3)
    pq.write_table(pa.Table.from_pylist(rows), src / "meta.parquet")
    for name, delimiter in (("meta.csv", ","), ("meta.tsv", "\t")):
        with (src / name).open("w", newline="") as f:
            writer = csv.DictWriter(
                f, fieldnames=["url", "caption", "similarity"], delimiter=delimiter
            )
            writer.writeheader()
            writer.writerows(rows)
    components: Components = client.app.state.runtime.components  # type: ignore[attr-defined]
    for name in ("meta.parquet", "meta.csv", "meta.tsv"):
        job = job_of(
            client, {"table": str(src / name), "columns": {"uri": "url", "caption": "caption"}}
        )
        assert (job["state"], job["total"], job["done"], job["failed"]) == ("completed", 7, 7, 0), (
            job
        )
    # The three tables hold the same items: ids are the uris and the texts' hashes.
    assert components.store.count(components.collection) == 7
    assert components.store.count(components.collection, {"kind": "text"}) == 3
    hits = client.post(
        "/v1/search", json={"text": caption_of(902), "mode": "caption", "limit": 1}
    ).json()["hits"]
    assert hits[0]["uri"] == f"s3://{BUCKET}/shards/img/img2.jpg", hits
    assert hits[0]["metadata"]["similarity"] == pytest.approx(0.5), hits


def test_a_missing_column_is_a_4xx_naming_it(client: TestClient, tmp_path: Path) -> None:
    src = tmp_path / "src"
    pq.write_table(pa.Table.from_pylist([{"url": "a.jpg", "text": "x"}]), src / "meta.parquet")
    response = client.post(
        "/v1/ingest",
        json={"source": {"table": str(src / "meta.parquet"), "columns": {"caption": "caption"}}},
    )
    assert response.status_code == 400, response.text
    assert "'caption' (columns.caption)" in response.json()["error"]["message"]
    bad_role = {"table": str(src / "meta.parquet"), "columns": {"picture": "url"}}
    assert client.post("/v1/ingest", json={"source": bad_role}).status_code in (400, 422)


def test_bad_rows_cost_one_item_each(client: TestClient, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "ok.jpg").write_bytes(jpeg(3))
    (src / "broken.jpg").write_bytes(b"not an image at all")
    rows = [
        {"url": "ok.jpg", "caption": "fine", "id": "1"},
        {"url": "broken.jpg", "caption": "undecodable", "id": "2"},
        {"url": "nowhere.jpg", "caption": "missing file", "id": "3"},
        {"url": "/etc/passwd", "caption": "outside the roots", "id": "4"},
        {"url": "", "caption": "", "id": "5"},
        {"url": "", "caption": "text only", "id": "1"},
    ]
    (src / "meta.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    job = job_of(client, {"table": str(src / "meta.jsonl")})
    assert (job["state"], job["total"], job["done"], job["failed"]) == ("completed", 6, 1, 5), job
    reasons = {e["item"]: e["reason"] for e in job["errors"]}
    table = str(src / "meta.jsonl")
    for row in (2, 3, 4, 5, 6):
        assert any(f"table {table} row {row}" in r for r in reasons.values()), (row, reasons)
    assert any("repeats row 1" in r for r in reasons.values()), reasons


def test_repeated_ids_complete_with_the_repeat_reported(client: TestClient) -> None:
    lines = [
        {"id": "a", "caption": caption_of(1)},
        {"id": "b", "caption": caption_of(2)},
        {"id": "a", "caption": caption_of(3)},
    ]
    job = job_of(client, {"manifest_lines": lines})
    assert (job["state"], job["total"], job["done"], job["failed"]) == ("completed", 3, 2, 1), job
    [error] = job["errors"]
    assert error["item"] == "line 3" and "repeats line 1" in error["reason"], error
    # The first line is the one indexed.
    hits = client.post(
        "/v1/search", json={"text": caption_of(1), "mode": "caption", "limit": 1}
    ).json()["hits"]
    assert hits[0]["caption"] == caption_of(1), hits
