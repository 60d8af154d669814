"""Tasks the broker lost, on real processes: a gateway (its writer and job settler), a real Redis,
one real ``clipsearch indexer``, and a thief: a Redis client that takes messages off the index
queue and drops them, as a worker killed right after its ``BRPOP`` does (celery/celery#4354,
celery/kombu#305; seen once here, in the worker-kill fault bench). Without the settler's
redelivery (``indexer.jobs.lost_tasks``) the job below waits forever: first for its plan, then
for one batch."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import redis

from service.core.config import BrokerSettings
from service.core.tasks import INDEX_BATCH, INDEX_QUEUE, PLAN_JOB
from tests.indexer.distributed.test_batches import write_images
from tests.redis_server import redis_server
from tests.service.gateway.conftest import make_settings, running_client
from tests.service.gateway.test_ingest_celery import indexer_process

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(300)]
N_IMAGES = 12
BATCH = 4
JOB_TIMEOUT_S = 180.0


class Thief(threading.Thread):
    """Drops the first plan task and the first batch task it takes; puts back anything else."""

    def __init__(self, url: str) -> None:
        super().__init__(name="thief", daemon=True)
        self.redis = redis.Redis.from_url(url)
        self.stolen: list[dict[str, object]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        wanted = {PLAN_JOB, INDEX_BATCH}
        while wanted and not self.stop.is_set():
            popped = self.redis.brpop([INDEX_QUEUE], timeout=1)
            if popped is None:
                continue
            message = json.loads(popped[1])
            task = message["headers"]["task"]
            if task in wanted:
                wanted.discard(task)
                self.stolen.append(message["headers"])
                continue
            # Back at the end a worker takes from: a worker waiting on the queue gets it at
            # once; if none waits, the thief takes it again and again until one does. The
            # thief waits on the queue all the while, so it is first for the next message.
            self.redis.rpush(INDEX_QUEUE, popped[1])


def test_a_lost_plan_task_and_a_lost_batch_are_sent_again(
    tmp_path: Path, tiny_bundle_dir: Path
) -> None:
    broker = BrokerSettings(url="redis://unset", writer_block_ms=200, plan_batch_size=BATCH)
    settings = make_settings(tmp_path, tiny_bundle_dir, broker=broker)
    photos = tmp_path / "src" / "photos"
    write_images(photos, N_IMAGES)
    with redis_server(tmp_path / "redis") as url:
        broker = broker.model_copy(update={"url": url})
        settings = settings.model_copy(update={"broker": broker})
        thief = Thief(url)
        thief.start()
        try:
            for client in running_client(settings):
                response = client.post("/v1/ingest", json={"source": {"directory": str(photos)}})
                assert response.status_code == 202, response.json()
                job_id = response.json()["job_id"]
                # No indexer yet: the thief is the only one taking from the queue.
                deadline = time.monotonic() + 30
                while not thief.stolen:
                    assert time.monotonic() < deadline, "the plan task never reached the queue"
                    time.sleep(0.1)
                assert thief.stolen[0]["task"] == PLAN_JOB
                env = {"CLIPSEARCH_BROKER__PLAN_BATCH_SIZE": str(BATCH)}
                with indexer_process(
                    tmp_path, url, tiny_bundle_dir, str(tmp_path / "src"), **env
                ) as (
                    worker,
                    log,
                ):
                    deadline = time.monotonic() + JOB_TIMEOUT_S
                    while (status := client.get(f"/v1/jobs/{job_id}").json())["state"] not in (
                        "completed",
                        "failed",
                        "interrupted",
                    ):
                        assert time.monotonic() < deadline and worker.poll() is None, (
                            f"{status}\n{log.read_text()[-4000:]}"
                        )
                        time.sleep(0.2)
                comp = client.app.state.runtime.components  # type: ignore[attr-defined]
                stored = comp.store.count(comp.collection)
        finally:
            thief.stop.set()
            thief.join(timeout=10)
            thief.redis.close()
    assert [h["task"] for h in thief.stolen] == [PLAN_JOB, INDEX_BATCH]
    assert (status["state"], status["done"], status["failed"]) == ("completed", N_IMAGES, 0)
    assert status["redelivered"] == 2, status  # the plan, then the one batch
    assert stored == N_IMAGES
