"""A collection out and back in: ``POST /v1/admin/export`` writes parquet files (ids, every named
vector, payload, the bundle in the files' metadata); a fresh gateway with the same bundle ingests
them as a table without one encoder call (its /metrics say so) and answers every query with the
same top 10. Into S3 too (moto's server on the loopback), and ``clipsearch export``."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import uvicorn
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from clipsearch.bootstrap import build_components
from clipsearch.cli.main import app as cli
from loadtests.s3server import aws_env, moto_s3
from service.core.config import SourcesSettings
from service.gateway.app import create_app
from service.gateway.state import Components
from tests.indexer.sources.datasets_support import caption_of, jpeg
from tests.service.gateway.conftest import make_settings, running_client
from tests.support import wait_for_job, wait_until

QUERIES = [caption_of(n) for n in (3, 11, 40, 77, 150)] + ["a red circle", "green"]


def _gateway(base: Path, shared: Path, bundle: Path) -> Iterator[TestClient]:
    base.mkdir(parents=True, exist_ok=True)
    sources = SourcesSettings.model_validate(
        {"allowed_roots": [str(shared)], "allowed_prefixes": ["s3://exports"]}
    )
    yield from running_client(make_settings(base, bundle).model_copy(update={"sources": sources}))


def _job(client: TestClient, source: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/ingest", json={"source": source})
    assert response.status_code == 202, response.text
    return wait_for_job(lambda j: client.get(f"/v1/jobs/{j}").json(), response.json()["job_id"])


def _top10(client: TestClient) -> list[list[tuple[str, float]]]:
    found = []
    for text in QUERIES:
        for mode in ("caption", "image", "description"):
            hits = client.post("/v1/search", json={"text": text, "mode": mode, "limit": 10})
            assert hits.status_code == 200, hits.text
            found.append([(h["id"], round(h["score"], 5)) for h in hits.json()["hits"]])
    return found


def _encoded(client: TestClient) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in client.get("/metrics").text.splitlines()
        if line.startswith("clipsearch_encoder_items_total{")
    )


@pytest.fixture
def exported(tmp_path: Path, tiny_bundle_dir: Path) -> Iterator[tuple[Path, list[Any], set[str]]]:
    shared = tmp_path / "shared"
    (shared / "img").mkdir(parents=True)
    lines: list[dict[str, Any]] = []
    for i in range(12):
        (shared / "img" / f"{i}.jpg").write_bytes(jpeg(i))
        lines.append({"uri": str(shared / "img" / f"{i}.jpg"), "caption": caption_of(i * 13)})
    lines += [{"id": f"doc-{i}", "description": caption_of(500 + i)} for i in range(8)]
    for client in _gateway(tmp_path / "a", shared, tiny_bundle_dir):
        job = _job(client, {"manifest_lines": lines})
        assert (job["done"], job["failed"]) == (20, 0), job
        response = client.post(
            "/v1/admin/export", json={"to": str(shared / "export"), "rows_per_file": 7}
        )
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["points"] == 20 and len(result["files"]) == 3
        components: Components = client.app.state.runtime.components  # type: ignore[attr-defined]
        ids = {r.id for r in components.store.scroll(components.collection, limit=100)[0]}
        yield shared, _top10(client), ids


def test_export_then_import_into_a_fresh_gateway_calls_no_encoder(
    exported: tuple[Path, list[Any], set[str]], tmp_path: Path, tiny_bundle_dir: Path
) -> None:
    shared, expected, ids = exported
    files = sorted((shared / "export").glob("part-*.parquet"))
    meta = json.loads(pq.read_schema(files[0]).metadata[b"clipsearch.export"])
    assert meta["bundle"].startswith("tiny-test@") and "caption" in meta["vectors"]
    for client in _gateway(tmp_path / "b", shared, tiny_bundle_dir):
        before = _encoded(client)
        for path in files:
            job = _job(client, {"table": str(path)})
            assert (job["state"], job["failed"]) == ("completed", 0), job
        assert _encoded(client) == before  # not one item through the encoder
        components: Components = client.app.state.runtime.components  # type: ignore[attr-defined]
        got = {r.id for r in components.store.scroll(components.collection, limit=100)[0]}
        assert got == ids
        assert _top10(client) == expected
        assert _encoded(client) > before  # the counter is live: the queries went through it


def test_export_to_s3_and_outside_the_roots(
    exported: tuple[Path, list[Any], set[str]], tmp_path: Path, tiny_bundle_dir: Path
) -> None:
    shared, _, ids = exported
    with moto_s3(tmp_path) as endpoint, pytest.MonkeyPatch.context() as env:
        for name, value in aws_env(endpoint).items():
            env.setenv(name, value)
        import s3fs

        s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True).mkdir("exports")
        for client in _gateway(tmp_path / "c", shared, tiny_bundle_dir):
            _job(client, {"table": str(sorted((shared / "export").glob("*.parquet"))[0])})
            response = client.post("/v1/admin/export", json={"to": "s3://exports/media"})
            assert response.status_code == 200, response.text
            assert response.json()["files"] == ["s3://exports/media/part-00000.parquet"]
            outside = client.post("/v1/admin/export", json={"to": str(tmp_path / "elsewhere")})
            assert outside.status_code == 403 and "--allow-root" in outside.text
            # Back in from S3: the same 7 points.
            job = _job(client, {"table": "s3://exports/media/part-00000.parquet"})
            assert (job["state"], job["done"], job["failed"]) == ("completed", 7, 0), job
            components: Components = client.app.state.runtime.components  # type: ignore[attr-defined]
            back = {r.id for r in components.store.scroll(components.collection, limit=100)[0]}
            assert len(back) == 7 and back <= ids  # the exported points, by their ids


def test_clipsearch_export_prints_the_files(
    exported: tuple[Path, list[Any], set[str]], tmp_path: Path, tiny_bundle_dir: Path
) -> None:
    shared, _, _ = exported
    (tmp_path / "d").mkdir()
    settings = make_settings(tmp_path / "d", tiny_bundle_dir)
    served = create_app(
        settings.model_copy(update={"sources": SourcesSettings(allowed_roots=[shared])}),
        build_components,
    )
    server = uvicorn.Server(uvicorn.Config(served, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=60)
        assert served.state.runtime.wait(120)
        url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        result = CliRunner().invoke(cli, ["export", str(shared / "again"), "--server", url])
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == str(shared / "again" / "part-00000.parquet")
        assert pq.read_metadata(shared / "again" / "part-00000.parquet").num_rows == 0
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_into_another_bundles_collection_only_by_embedding_again(
    exported: tuple[Path, list[Any], set[str]], tmp_path: Path, tiny_narrow_bundle_dir: Path
) -> None:
    shared, _, _ = exported
    files = sorted((shared / "export").glob("part-*.parquet"))
    for client in _gateway(tmp_path / "e", shared, tiny_narrow_bundle_dir):
        before = _encoded(client)
        for path in files:
            job = _job(client, {"table": str(path)})
            assert (job["state"], job["done"], job["failed"]) == (
                "completed",
                len(pq.read_table(path)),
                0,
            ), job
        assert _encoded(client) >= before + 20  # every item through this bundle's encoder
        components: Components = client.app.state.runtime.components  # type: ignore[attr-defined]
        assert components.store.count(components.collection) == 20
        hits = client.post(
            "/v1/search", json={"text": caption_of(13), "mode": "caption", "limit": 1}
        ).json()["hits"]
        assert hits[0]["caption"] == caption_of(13) and hits[0]["uri"].endswith("/img/1.jpg")


def test_an_unwritable_destination_is_a_4xx(
    exported: tuple[Path, list[Any], set[str]], tmp_path: Path, tiny_bundle_dir: Path
) -> None:
    shared, _, _ = exported
    (shared / "a-file").write_text("not a folder")
    for client in _gateway(tmp_path / "f", shared, tiny_bundle_dir):
        _job(client, {"manifest_lines": [{"id": "x", "description": caption_of(9)}]})
        response = client.post("/v1/admin/export", json={"to": str(shared / "a-file")})
        assert response.status_code == 400, response.text
        assert "cannot write" in response.json()["error"]["message"]


@pytest.mark.slow
def test_a_thousand_item_collection_round_trips_with_the_same_top10_and_no_encoder_call(
    tmp_path: Path, tiny_bundle_dir: Path
) -> None:
    """Issue 22's acceptance at its own size: 1,000 items (photos with captions and text-only
    documents) exported, imported into a fresh data dir: the same ids, identical top-10 for 20
    queries in three modes, zero encoder items for the import."""
    shared = tmp_path / "shared"
    (shared / "img").mkdir(parents=True)
    lines: list[dict[str, Any]] = []
    for i in range(600):
        (shared / "img" / f"{i}.jpg").write_bytes(jpeg(i))
        lines.append({"uri": str(shared / "img" / f"{i}.jpg"), "caption": caption_of(i)})
    lines += [{"id": f"doc-{i}", "description": caption_of(600 + i)} for i in range(400)]
    queries = [caption_of(n) for n in range(0, 1000, 50)]
    assert len(queries) == 20

    def top10(client: TestClient) -> list[list[tuple[str, float]]]:
        found = []
        for text in queries:
            for mode in ("caption", "image", "description"):
                body = {"text": text, "mode": mode, "limit": 10}
                hits = client.post("/v1/search", json=body).json()["hits"]
                found.append([(h["id"], round(h["score"], 5)) for h in hits])
        return found

    def ids_of(client: TestClient) -> set[str]:
        components: Components = client.app.state.runtime.components  # type: ignore[attr-defined]
        return {r.id for r in components.store.scroll(components.collection, limit=2000)[0]}

    for client in _gateway(tmp_path / "a", shared, tiny_bundle_dir):
        job = _job(client, {"manifest_lines": lines})
        assert (job["done"], job["failed"]) == (1000, 0), job
        out = client.post("/v1/admin/export", json={"to": str(shared / "x"), "rows_per_file": 400})
        assert out.status_code == 200 and out.json()["points"] == 1000, out.text
        expected, ids = top10(client), ids_of(client)
    assert len(ids) == 1000
    for client in _gateway(tmp_path / "b", shared, tiny_bundle_dir):
        before = _encoded(client)
        for path in sorted((shared / "x").glob("part-*.parquet")):
            job = _job(client, {"table": str(path)})
            assert (job["state"], job["failed"]) == ("completed", 0), job
        assert _encoded(client) == before  # not one item through the encoder
        assert ids_of(client) == ids
        got = top10(client)
    # Identical up to the order of equal scores (the tiny towers tie often: bag-of-words text,
    # flat-colour pictures), which follows the order points were written in.
    assert [[score for _, score in hits] for hits in got] == [
        [score for _, score in hits] for hits in expected
    ]
    for new, old_hits in zip(got, expected, strict=True):
        if new:
            last = new[-1][1]  # a tie at the 10th place may let another equal item in
            assert {i for i, sc in new if sc > last} == {i for i, sc in old_hits if sc > last}
