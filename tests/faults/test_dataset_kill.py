"""kill -9 of an indexer during a 20-shard webdataset job (issue 22), every part a real process: a
private Redis, ``clipsearch indexer`` processes (pool solo: one unit task at a time) with their
probe ports set, and ``clipsearch serve`` with the writer inside.

The indexer is killed once a few shards are finished; another starts. The job needs no
``retry``: its unit tasks are acknowledged late (``task_acks_late``), so the one the killed
indexer held comes back after the visibility timeout and the new indexer reads it again from its
start. What the new indexer reads is counted on its ``/metrics``
(``clipsearch_ingest_units_read_total``): exactly the shards not finished when the first one
died, so a finished shard is never read again; and the store holds every item exactly once."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from loadtests.bench.deployment import Deployment, deployment, free_port, wait
from service.store.edge import QdrantEdgeStore
from tests.indexer.sources.datasets_support import write_shards
from tests.redis_server import redis_binary
from tests.support import CELERY_SMALL_STEPS

pytestmark = pytest.mark.slow

SHARDS = 20
PER_SHARD = 24  # 6 index batches of 4: a shard takes long enough to be killed inside
ITEMS = SHARDS * PER_SHARD
KILL_AFTER = 3  # shards finished


@pytest.fixture(name="d")
def deployment_fixture(tmp_path: Path, tiny_bundle_dir: Path) -> Iterator[Deployment]:
    redis_binary()  # skips without redis-server
    shards = tmp_path / "src" / "shards"
    write_shards(shards, SHARDS, PER_SHARD)
    env = {
        **CELERY_SMALL_STEPS,
        "CLIPSEARCH_BROKER__PROBE_PORT": str(free_port()),
        "CLIPSEARCH_GRPC_PORT": "0",
    }
    with deployment(tmp_path, tiny_bundle_dir, shards, [], env=env, workers=("w1",)) as d:
        yield d


def _units_read(port: int) -> tuple[float, float]:
    """(shards read to their end, bytes read from local files) on the indexer's ``/metrics``."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    units = re.search(r'^clipsearch_ingest_units_read_total\{kind="shard"\} (\S+)$', text, re.M)
    read = re.search(r'^clipsearch_ingest_bytes_read_total\{scheme="file"\} (\S+)$', text, re.M)
    assert units and read, text
    return float(units.group(1)), float(read.group(1))


@pytest.mark.timeout(600)
def test_an_indexer_killed_mid_job_costs_one_shard_read_again_and_no_item_twice(
    d: Deployment,
) -> None:
    response = httpx.post(
        f"{d.url}/v1/ingest",
        json={"source": {"webdataset": str(d.photos / "{00000..00019}.tar")}},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    client = redis.Redis.from_url(d.redis.url)
    finished = f"clipsearch:job:{job_id}:finished-units"

    def inside_a_shard() -> bool:
        """A few shards finished, and items of an unfinished one written: the indexer is
        reading a shard (it holds its task, unacknowledged)."""
        done = int(client.hget(f"clipsearch:job:{job_id}", "done") or 0)
        units = int(client.hlen(finished))
        return units >= KILL_AFTER and done > units * PER_SHARD and client.hlen("unacked") > 0

    try:
        wait("inside a shard", inside_a_shard, poll_s=0.005)
        first = d.workers.pop("w1")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
        finished_at_kill = int(client.hlen(finished))
        held_at_kill = int(client.hlen("unacked"))  # Celery's tasks delivered, not acknowledged
    finally:
        client.close()
    assert held_at_kill == 1, held_at_kill
    assert finished_at_kill < SHARDS, "the job ended before the kill: make the shards bigger"
    job = d.job(job_id)
    assert job["state"] == "running" and job["done"] < ITEMS, job

    port = free_port()
    d.env["CLIPSEARCH_BROKER__PROBE_PORT"] = str(port)
    d.start_worker("w2")
    # No retry: the task the killed indexer held is delivered again (acks_late).
    job = d.wait_state(job_id, "completed", "failed", "cancelled")
    assert job["state"] == "completed", job
    assert (job["total"], job["done"], job["failed"]) == (ITEMS, ITEMS, 0), job["errors"]
    assert (job["shards_total"], job["shards_done"], job["shards_read"]) == (20, 20, 20), job
    units, read = _units_read(port)
    assert units == SHARDS - finished_at_kill, (units, finished_at_kill)
    shard_bytes = sum(p.stat().st_size for p in d.photos.glob("*.tar"))
    assert 0 < read <= shard_bytes, (read, shard_bytes)

    d.stop_gateway()
    store = QdrantEdgeStore(d.data_dir)
    try:
        keys: list[str] = []
        offset: str | None = None
        while True:
            records, offset = store.scroll("media", limit=100, offset=offset)
            keys += [r.payload["metadata"]["key"] for r in records]
            if offset is None:
                break
    finally:
        store.close()
    expected = [f"{s:05}{i:04}" for s in range(SHARDS) for i in range(PER_SHARD)]
    assert sorted(keys) == expected  # each item once, none missing
