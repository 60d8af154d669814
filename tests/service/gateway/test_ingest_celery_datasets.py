"""Dataset sources and repeated ids on the distributed path, end to end: a gateway with a broker
(and its writer), one real ``clipsearch indexer`` process, a real private Redis and moto's S3
server on the loopback (the indexer reads S3 through the standard AWS variables)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
from fastapi.testclient import TestClient

from loadtests.s3server import aws_env, moto_s3, upload
from service.core.config import BrokerSettings, SourcesSettings
from tests.indexer.sources.datasets_support import caption_of, write_shards
from tests.redis_server import redis_server
from tests.service.gateway.conftest import make_settings, running_client
from tests.service.gateway.test_ingest_celery import indexer_process, wait_done

pytestmark = pytest.mark.slow

BUCKET = "lake"


@dataclass
class Setup:
    client: TestClient
    src: Path
    worker: subprocess.Popen[bytes]
    log: Path
    redis: redis.Redis
    s3: str  # the S3 endpoint


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("celery-datasets")
    settings = make_settings(
        base,
        tiny_bundle_dir,
        broker=BrokerSettings(url="redis://unset", writer_block_ms=200, plan_batch_size=8),
    )
    write_shards(base / "src" / "shards", 4, 10, corrupt=(2, 3))
    with (
        moto_s3(base) as endpoint,
        redis_server(base / "redis") as url,
        pytest.MonkeyPatch.context() as mp,
    ):
        for name, value in aws_env(endpoint).items():
            mp.setenv(name, value)
        upload(endpoint, base / "src" / "shards", BUCKET, "shards")
        roots = f"{base / 'src'},s3://{BUCKET}/shards"
        settings = settings.model_copy(
            update={
                "broker": settings.broker.model_copy(update={"url": url}),
                "sources": SourcesSettings.model_validate({"allowed_roots": roots}),
            }
        )
        with indexer_process(
            base, url, tiny_bundle_dir, roots, CLIPSEARCH_BROKER__PLAN_BATCH_SIZE="8"
        ) as (worker, log_path):
            for client in running_client(settings):
                yield Setup(
                    client, base / "src", worker, log_path, redis.Redis.from_url(url), endpoint
                )


def run_job(setup: Setup, source: dict[str, Any]) -> dict[str, Any]:
    response = setup.client.post("/v1/ingest", json={"source": source})
    assert response.status_code == 202, response.text
    return wait_job(setup, response.json()["job_id"])


def wait_job(setup: Setup, job_id: str) -> dict[str, Any]:
    return wait_done(setup, job_id)  # type: ignore[arg-type]  # the same client/worker/log


@pytest.mark.timeout(900)
def test_s3_shards_one_task_each_with_a_corrupt_member_and_a_missing_shard(setup: Setup) -> None:
    source = {
        "webdataset": [
            f"s3://{BUCKET}/shards/{{00000..00003}}.tar",
            f"s3://{BUCKET}/shards/00009.tar",
        ]
    }
    job = run_job(setup, source)
    assert job["state"] == "completed", job
    assert (job["total"], job["done"], job["failed"]) == (41, 39, 2), job["errors"]
    assert (job["shards_total"], job["shards_done"], job["total_known"]) == (5, 5, True), job
    reasons = " | ".join(e["reason"] for e in job["errors"])
    assert f"s3://{BUCKET}/shards/00002.tar" in reasons and "000020003" in reasons, reasons
    assert "00009.tar" in reasons and "does not exist" in reasons, reasons
    hits = setup.client.post(
        "/v1/search", json={"text": caption_of(25), "mode": "caption", "limit": 1}
    ).json()["hits"]
    assert hits[0]["metadata"]["key"] == "000020005", hits


@pytest.mark.timeout(900)
def test_a_parquet_table_one_task_per_row_group(setup: Setup) -> None:
    rows = [{"id": f"doc-{i}", "caption": caption_of(500 + i), "n": i} for i in range(30)]
    rows.append({"id": "doc-3", "caption": caption_of(700), "n": 99})  # repeats row 4's id
    pq.write_table(pa.Table.from_pylist(rows), setup.src / "docs.parquet", row_group_size=10)
    job = run_job(setup, {"table": str(setup.src / "docs.parquet")})
    assert job["state"] == "completed", job
    # The repeat is in another row group: the same point, written again (the later wins).
    assert (job["total"], job["done"], job["failed"]) == (31, 31, 0), job["errors"]
    assert (job["shards_total"], job["shards_done"]) == (4, 4), job


@pytest.mark.timeout(900)
def test_repeated_ids_complete_with_the_repeat_reported(setup: Setup) -> None:
    lines = [
        {"id": "a", "caption": caption_of(1)},
        {"id": "b", "caption": caption_of(2)},
        {"id": "a", "caption": caption_of(3)},
    ]
    job = run_job(setup, {"manifest_lines": lines})
    assert job["state"] == "completed", job
    assert (job["total"], job["done"], job["failed"]) == (3, 2, 1), job
    [error] = job["errors"]
    assert error["item"] == "line 3" and "repeats line 1" in error["reason"], error


@pytest.mark.timeout(900)
def test_a_resumed_job_reads_only_the_shards_it_had_not_finished(setup: Setup) -> None:
    import s3fs

    write_shards(setup.src / "resume", 4, 6)
    upload(setup.s3, setup.src / "resume", BUCKET, "shards/resume")
    job = run_job(setup, {"webdataset": f"s3://{BUCKET}/shards/resume/{{00000..00003}}.tar"})
    assert (job["state"], job["done"], job["shards_done"]) == ("completed", 24, 4), job
    key = f"clipsearch:job:{job['id']}"
    assert job["shards_read"] == 4
    # As if the job had stopped with shard 00002 unfinished, and Redis lost its progress: the
    # job reads interrupted; the units finished stay recorded (shard 00002's record is dropped).
    setup.redis.hdel(f"{key}:finished-units", f"s3://{BUCKET}/shards/resume/00002.tar")
    setup.redis.delete(key, f"{key}:done", f"{key}:failed")
    settings = setup.client.app.state.runtime.settings  # type: ignore[attr-defined]
    record_path = settings.data_dir / "jobs" / f"{job['id']}.json"
    record = json.loads(record_path.read_text())
    record.pop("final", None)  # the gateway had not seen it end before Redis lost it
    record_path.write_text(json.dumps(record))
    status = setup.client.get(f"/v1/jobs/{job['id']}").json()
    assert status["state"] == "interrupted", status
    # A finished shard that is gone no longer matters: it is not read again.
    fs = s3fs.S3FileSystem(endpoint_url=setup.s3, skip_instance_cache=True)
    fs.rm_file(f"{BUCKET}/shards/resume/00000.tar")
    response = setup.client.post(f"/v1/jobs/{job['id']}/retry")
    assert response.status_code == 202, response.text
    again = wait_job(setup, job["id"])
    assert (again["state"], again["total"], again["done"], again["failed"]) == (
        "completed",
        24,
        24,
        0,
    ), again["errors"]
    assert (again["shards_total"], again["shards_done"]) == (4, 4)
    assert again["shards_read"] == 1  # shard 00002 alone
    assert again["skipped"] == 24  # 18 from finished shards, 6 found indexed with their content
