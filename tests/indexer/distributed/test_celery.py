"""Real Celery worker processes, a real private Redis, the real writer on an embedded store.

Tasks are sent by name, as the gateway sends them, with no import of ``indexer``. The kill test
SIGKILLs a worker while it holds a task and restarts it: the collection must still end with
exactly one point per image and the job with done = total, failed = 0. The visibility timeout
is a few seconds here so that the stranded task comes back quickly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from PIL import Image

from indexer.distributed.stream import PointStream
from indexer.distributed.writer import Writer
from service.core.bundle.manifest import load_bundle
from service.core.config import BrokerSettings, Settings
from service.core.domain import point_id
from service.core.tasks import INDEX_BATCH, INDEX_QUEUE
from service.store.edge import QdrantEdgeStore
from tests.indexer.distributed.test_batches import write_images
from tests.indexer.pipeline.test_video import make_video
from tests.redis_server import redis_server

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[3]
N_IMAGES = 200
BATCH = 10
VISIBILITY_TIMEOUT_S = 10  # redelivery within seconds; well above a task's run time
JOB_TIMEOUT_S = 400.0  # a loaded 2-core machine: generous, the loops end as soon as it is done


@dataclass
class Cluster:
    redis_url: str
    env: dict[str, str]
    logs: Path
    images: list[Path]
    store: QdrantEdgeStore
    stream: PointStream
    sender: Celery
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    writer: Writer | None = None

    def start_worker(self, name: str) -> None:
        log = (self.logs / f"{name}-{time.monotonic_ns()}.log").open("wb")
        self.workers[name] = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "clipsearch.celery_app", "worker",
             "--concurrency", "1", "--pool", "solo", "-n", f"{name}@%h", "-Q", INDEX_QUEUE,
             "--without-mingle", "--without-gossip", "--without-heartbeat", "--loglevel", "INFO"],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()

    def stop_workers(self) -> None:
        for proc in self.workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)

    def submit(self, collection: str) -> str:
        job_id = uuid.uuid4().hex
        self.stream.jobs.init_job(job_id, total=len(self.images))
        for start in range(0, len(self.images), BATCH):
            entries = [{"uri": str(p)} for p in self.images[start : start + BATCH]]
            self.sender.send_task(
                INDEX_BATCH, args=[job_id, collection, entries], queue=INDEX_QUEUE
            )
        return job_id

    def progress(self, job_id: str) -> dict[str, Any]:
        return self.stream.jobs.get(job_id) or {"done": 0, "failed": 0}

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float) -> None:
        """Poll a condition other processes bring about; fail with the workers' logs."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                broker = self.stream.redis
                state = (
                    f"unacked={broker.hlen('unacked')} queued={broker.llen(INDEX_QUEUE)} "
                    f"jobs={[broker.hgetall(k) for k in broker.keys('clipsearch:job:*[^a-z]')]} "
                    f"workers={ {n: p.poll() for n, p in self.workers.items()} } "
                    f"writer={self.writer.health() if self.writer else None}"
                )
                tails = [f"--- {p.name}\n{p.read_text()[-3000:]}" for p in self.logs.glob("*.log")]
                raise AssertionError(
                    f"{what} not reached in {timeout:.0f} s; {state}\n" + "\n".join(tails)
                )
            time.sleep(0.1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("celery")
    images = write_images(base / "sources" / "photos", N_IMAGES)
    logs = base / "logs"
    logs.mkdir()
    with redis_server(base / "redis") as url:
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "CLIPSEARCH_BROKER__URL": url,
            "CLIPSEARCH_BROKER__VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S),
            "CLIPSEARCH_BROKER__RESTORE_INTERVAL_S": "1",
            "CLIPSEARCH_BUNDLE": str(tiny_bundle_dir),
            "CLIPSEARCH_DATA_DIR": str(base / "worker-data"),
            "CLIPSEARCH_SOURCES__ALLOWED_ROOTS": str(base / "sources"),
            "CLIPSEARCH_ENCODER__PREPROCESS_THREADS": "1",
        }
        store = QdrantEdgeStore(base / "store")
        stream = PointStream(url, BrokerSettings(url=url))
        sender = Celery("sender", broker=url, set_as_current=False)
        sender.conf.update(task_serializer="json", broker_connection_retry_on_startup=True)
        c = Cluster(url, env, logs, images, store, stream, sender)
        try:
            c.start_worker("w1")
            c.start_worker("w2")
            yield c
        finally:
            c.stop_workers()
            sender.close()
            stream.close()
            store.close()


def kill_while_holding_a_task(cluster: Cluster, job_id: str, name: str) -> bool:
    """SIGKILL worker ``name`` at a moment it provably holds an unacknowledged task; False if
    the job finished before such a moment came.

    kombu keeps each delivered, unacknowledged task in the ``unacked`` hash; with a prefetch of
    one, two entries mean each worker runs one. The victim is stopped first (SIGSTOP): the tag
    that stays while the other worker's tag leaves is the victim's. If that cannot be told apart
    in time (the other worker is slow, the victim had just finished), let it go on and try again.
    """
    broker = cluster.stream.redis
    victim = cluster.workers[name]
    while True:
        cluster.wait(
            "both workers busy, or the job done",
            lambda: broker.hlen("unacked") == 2 or cluster.progress(job_id)["done"] >= N_IMAGES,
            JOB_TIMEOUT_S,
        )
        if cluster.progress(job_id)["done"] >= N_IMAGES:
            return False
        victim.send_signal(signal.SIGSTOP)
        held = set(broker.hkeys("unacked"))
        # Well inside the visibility timeout, so that nothing was redelivered yet.
        deadline = time.monotonic() + VISIBILITY_TIMEOUT_S / 2
        while time.monotonic() < deadline and len(held & set(broker.hkeys("unacked"))) != 1:
            time.sleep(0.02)
        if len(held) == 2 and len(held & set(broker.hkeys("unacked"))) == 1:
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=30)
            return True
        victim.send_signal(signal.SIGCONT)


def start_writer(
    cluster: Cluster, tiny_bundle_dir: Path, collection: str, data_dir: Path | None = None
) -> Writer:
    spaces = load_bundle(tiny_bundle_dir).manifest.spaces
    cluster.store.ensure_collection(collection, spaces.model_dump(exclude_none=True))  # type: ignore[arg-type]
    settings = Settings(
        collection=collection,
        broker=BrokerSettings(url=cluster.redis_url, writer_block_ms=200),
        data_dir=data_dir or cluster.logs.parent / "writer-data",
    )
    cluster.writer = Writer(
        cluster.redis_url, cluster.store, settings, consumer=f"writer-{collection}"
    )
    return cluster.writer


@pytest.mark.timeout(900)
def test_two_workers_index_every_image_once(cluster: Cluster, tiny_bundle_dir: Path) -> None:
    writer = start_writer(cluster, tiny_bundle_dir, "happy")
    try:
        job_id = cluster.submit("happy")
        cluster.wait(
            "done=200", lambda: cluster.progress(job_id)["done"] >= N_IMAGES, JOB_TIMEOUT_S
        )
        status = cluster.progress(job_id)
        assert (status["done"], status["failed"]) == (N_IMAGES, 0)
        assert cluster.store.count("happy") == N_IMAGES
        assert writer.ready(), writer.health()
    finally:
        writer.close()


@pytest.mark.timeout(900)
def test_a_killed_worker_loses_and_duplicates_nothing(
    cluster: Cluster, tiny_bundle_dir: Path
) -> None:
    writer = start_writer(cluster, tiny_bundle_dir, "killed")
    broker = cluster.stream.redis
    try:
        # Re-submitting the same images is harmless (same point ids): if a job ends before the
        # victim is caught holding a task, the next one gets its turn.
        for _ in range(5):
            job_id = cluster.submit("killed")
            if kill_while_holding_a_task(cluster, job_id, "w1"):
                break
        else:
            raise AssertionError("never caught the worker holding a task")
        cluster.start_worker("w1")

        cluster.wait(
            "done=200 after the kill",
            lambda: cluster.progress(job_id)["done"] >= N_IMAGES,
            JOB_TIMEOUT_S,
        )
        # Redelivered tasks and re-read entries may still be in flight: let them land, then
        # check that they changed nothing.
        cluster.wait(
            "queue drained",
            lambda: broker.hlen("unacked") == 0 and broker.llen(INDEX_QUEUE) == 0,
            JOB_TIMEOUT_S,
        )
        cluster.wait("stream drained", lambda: cluster.stream.length("killed") == 0, JOB_TIMEOUT_S)
        status = cluster.progress(job_id)
        assert (status["done"], status["failed"]) == (N_IMAGES, 0)
        assert cluster.store.count("killed") == N_IMAGES
    finally:
        writer.close()


@pytest.mark.timeout(900)
def test_video_thumbnails_reach_the_writers_data_dir_not_the_workers(
    cluster: Cluster, tiny_bundle_dir: Path, tmp_path: Path
) -> None:
    """The workers have their own data dir (no volume shared with the gateway): a video's
    keyframes travel in the stream entry and the writer stores them where the gateway serves."""
    video = cluster.images[0].parent.parent / "videos" / "clip.mkv"
    video.parent.mkdir(exist_ok=True)
    make_video(video)  # 12 s: segments of 5 + 5 + 2 s
    writer = start_writer(cluster, tiny_bundle_dir, "videos", data_dir=tmp_path / "gateway")
    try:
        job_id = uuid.uuid4().hex
        cluster.stream.jobs.init_job(job_id, total=1)
        entries = [{"uri": str(video), "id": "clip"}]
        cluster.sender.send_task(INDEX_BATCH, args=[job_id, "videos", entries], queue=INDEX_QUEUE)
        cluster.wait("the video done", lambda: cluster.progress(job_id)["done"] == 1, JOB_TIMEOUT_S)
        ids = [point_id("videos", "clip", i) for i in range(3)]
        segments = cluster.store.retrieve("videos", ids)
        assert len(segments) == 3
        for point in segments:
            with Image.open(tmp_path / "gateway" / point.payload["thumbnail"]) as thumb:
                assert thumb.format == "JPEG"
        assert not list((cluster.logs.parent / "worker-data").rglob("*.jpg"))
    finally:
        writer.close()
