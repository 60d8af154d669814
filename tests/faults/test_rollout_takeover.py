"""Gateway replicas with a broker (issue 17, item 1): real `clipsearch serve` processes (tiny
bundle, ONNX Runtime, Qdrant Edge) and a real Redis holding job and rollout records and rollout
leases (``indexer.jobs.records.MirroredRecords``, ``indexer.jobs.rollout_records``).

Two live gateways answer job, rollout and thumbnail calls alike, and either cancels what the
other started (``test_two_live_gateways_...``). kill -9 of the one running a rollout:

A rollout is caught mid-build (its rebuild's fetches of URL items are held by the test's own HTTP
server), the gateway running it gets SIGKILL, and another gateway process starts on the same
store and Redis: it reads the same record, takes the lease over once the dead one's runs out,
builds the version again and promotes it; every item is still there and search answers.

What this cannot prove here: two gateways serving one store *at the same time*. The embedded
store allows one process per data dir and this machine has no Qdrant server, so in the kill -9
test the second gateway is the dead one's replacement on its store (as a Kubernetes replica on a
shared Qdrant would be), and the two live gateways each have a store of their own (their job and
rollout calls read Redis; their thumbnails one shared folder). Two live replicas on one store
and one Redis are in
``tests/indexer/jobs/test_rollout_records.py`` (two reindexers in one process: status, list,
start, promote and cancel answer alike on both; a closing one hands its build over).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from service.core.domain import point_id

# The `held` fixture (a source server that holds a rebuild mid-run) is the reindex-kill test's.
from tests.faults.test_reindex_kill import N_URLS, HeldImages, held_fixture  # noqa: F401
from tests.indexer.distributed.test_batches import write_images
from tests.indexer.pipeline.test_video import make_video
from tests.redis_server import redis_server
from tests.support import free_port, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(240)]

N_FILES = 40
READY_S = 120.0
LEASE_S = "2"


class Serve:
    """One `clipsearch serve` process on ``data``; ``broker``: the Redis URL, or None."""

    def __init__(
        self, tmp: Path, bundle: Path, name: str, broker: str | None, data: str = "data"
    ) -> None:
        self.port = free_port()
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CLIPSEARCH_")},
            "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(Path.cwd()),
            "CLIPSEARCH_GRPC_PORT": "0",
            "CLIPSEARCH_SOURCES__ALLOWED_NETWORKS": "127.0.0.1/32",
            "CLIPSEARCH_SOURCES__FETCH_TIMEOUT_S": "120",
            "CLIPSEARCH_ADMIN__ROLLOUT_LEASE_S": LEASE_S,
            **({"CLIPSEARCH_BROKER__URL": broker} if broker else {}),
        }
        self.log = tmp / f"{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "clipsearch", "serve", "--port", str(self.port),
                 "--data-dir", str(tmp / data), "--bundle", str(bundle),
                 "--allow-root", str(tmp / "src")],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_until(self._ready, READY_S)

    def _ready(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        try:
            return self.http.get("/health/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def rollout(self, rollout_id: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/admin/reindex/{rollout_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


@pytest.fixture(name="started")
def started_fixture() -> Iterator[list[Serve]]:
    gateways: list[Serve] = []
    yield gateways
    for g in gateways:
        g.stop(signal.SIGKILL)


def _ingest(g: Serve, source: dict[str, Any]) -> None:
    job_id = g.http.post("/v1/ingest", json={"source": source}).json()["job_id"]
    job: dict[str, Any] = {}

    def ended() -> bool:
        job.update(g.http.get(f"/v1/jobs/{job_id}").json())
        return job["state"] not in ("queued", "running")

    wait_until(ended, 120)
    assert (job["state"], job["failed"]) == ("completed", 0), job


def test_another_gateway_finishes_the_rollout_of_a_killed_one(
    tmp_path: Path,
    tiny_bundle_dir: Path,
    held: HeldImages,
    started: list[Serve],
) -> None:
    files = write_images(tmp_path / "src" / "photos", N_FILES)
    ids = {point_id("media", p.as_uri()) for p in files} | {point_id("media", u) for u in held.urls}
    # The collection, ingested by the in-process runner (no indexer processes needed).
    seed = Serve(tmp_path, tiny_bundle_dir, "seed", None)
    started.append(seed)
    _ingest(seed, {"directory": str(files[0].parent)})
    _ingest(seed, {"urls": held.urls})
    serving = seed.http.get("/v1/collections/media").json()["current"]
    seed.stop()

    with redis_server(tmp_path / "redis") as redis_url:
        first = Serve(tmp_path, tiny_bundle_dir, "first", redis_url)
        started.append(first)
        held.open.clear()  # the rebuild's fetches of the URL items now wait
        response = first.http.post("/v1/admin/reindex", json={"promote": "auto"})
        assert response.status_code == 202, response.text
        rollout_id = response.json()["id"]
        assert held.asked.wait(60), first.rollout(rollout_id)
        mid = first.rollout(rollout_id)
        assert mid["state"] == "building" and mid["target"] != serving, mid

        first.stop(signal.SIGKILL)  # the build thread dies holding a fetch and its lease
        held.open.set()
        second = Serve(tmp_path, tiny_bundle_dir, "second", redis_url)
        started.append(second)
        # The same record, read from Redis by a process that never saw the rollout start.
        seen = second.rollout(rollout_id)
        assert {k: seen[k] for k in ("id", "collection", "source", "target", "created_at")} == {
            k: mid[k] for k in ("id", "collection", "source", "target", "created_at")
        }
        done: dict[str, Any] = {}

        def settled() -> bool:
            done.update(second.rollout(rollout_id))
            return done["state"] in ("completed", "failed", "cancelled")

        wait_until(settled, 150)
        assert done["state"] == "completed", done
        assert done["rebuilt"] == N_FILES + N_URLS, done
        assert "takes it over" in second.log.read_text()
        info = second.http.get("/v1/collections/media").json()
        assert (info["current"], info["building"]) == (mid["target"], None), info
        assert info["points"] == len(ids), info
        missing = [
            i for i in sorted(ids) if second.http.get(f"/v1/items/{quote(i)}").status_code != 200
        ]
        assert missing == []
        hits = second.http.post(
            "/v1/search", json={"text": "a picture", "mode": "image", "limit": 10}
        )
        assert hits.status_code == 200 and len(hits.json()["hits"]) == 10, hits.text


def test_two_live_gateways_answer_job_and_rollout_calls_alike(
    tmp_path: Path,
    tiny_bundle_dir: Path,
    held: HeldImages,
    started: list[Serve],
) -> None:
    """Two gateway processes on one Redis, both serving: a job and a rollout started on one read
    the same on the other, and the other cancels them; both serve a video's thumbnails, and a
    delete on one removes them from both. (Each has its own embedded store here: job and
    rollout calls read Redis only, and the rollout's build runs where it was started. The
    thumbnails folder of the second is a link to the first's, standing in for the shared
    ReadWriteMany volume that the chart mounts as every gateway's data dir.)"""
    files = write_images(tmp_path / "src" / "photos", 12)
    video = tmp_path / "src" / "videos" / "clip.mp4"
    video.parent.mkdir(parents=True)
    make_video(video)
    seed = Serve(tmp_path, tiny_bundle_dir, "seed", None)
    started.append(seed)
    _ingest(seed, {"urls": held.urls})
    _ingest(seed, {"directory": str(video.parent)})
    serving = seed.http.get("/v1/collections/media").json()["current"]
    seed.stop()
    (tmp_path / "data-b").mkdir()
    (tmp_path / "data-b" / "thumbnails").symlink_to(tmp_path / "data" / "thumbnails")
    with redis_server(tmp_path / "redis") as redis_url:
        a = Serve(tmp_path, tiny_bundle_dir, "a", redis_url)
        b = Serve(tmp_path, tiny_bundle_dir, "b", redis_url, data="data-b")
        started += [a, b]

        # Thumbnails: written once, served by both; deleted through one, gone from both.
        segment = a.http.get(f"/v1/items/{point_id('media', video.as_uri(), 0)}").json()
        url = segment["thumbnail"]
        on_a, on_b = a.http.get(url), b.http.get(url)
        assert on_a.status_code == on_b.status_code == 200, (on_a.text, on_b.text)
        assert on_a.content == on_b.content and on_a.content[:2] == b"\xff\xd8"  # a JPEG
        gone = a.http.delete(f"/v1/videos/{quote(video.as_uri(), safe='')}")
        assert gone.status_code == 200 and gone.json()["deleted"] >= 1, gone.text
        assert a.http.get(url).status_code == b.http.get(url).status_code == 404

        # A job (Celery; no indexer runs here, so it stays queued until cancelled).
        submitted = a.http.post("/v1/ingest", json={"source": {"directory": str(files[0].parent)}})
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["job_id"]
        on_a, on_b = a.http.get(f"/v1/jobs/{job_id}"), b.http.get(f"/v1/jobs/{job_id}")
        assert on_b.status_code == 200 and on_b.json() == on_a.json(), (on_a.text, on_b.text)
        assert job_id in [j["id"] for j in b.http.get("/v1/jobs").json()["jobs"]]
        cancelled = b.http.delete(f"/v1/jobs/{job_id}")
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        assert a.http.get(f"/v1/jobs/{job_id}").json()["state"] == "cancelled"

        # A rollout, held mid-build on a.
        held.open.clear()
        response = a.http.post("/v1/admin/reindex", json={})
        assert response.status_code == 202, response.text
        rollout_id = response.json()["id"]
        assert held.asked.wait(60), a.rollout(rollout_id)
        mid_a, mid_b = a.rollout(rollout_id), b.rollout(rollout_id)
        assert mid_a["state"] == mid_b["state"] == "building"
        assert mid_b == mid_a
        assert b.http.get("/v1/admin/reindex").json() == a.http.get("/v1/admin/reindex").json()
        again = b.http.post("/v1/admin/reindex", json={})
        assert again.status_code == 409, again.text  # one rollout of the collection at a time
        held.open.set()  # a's held fetches go on; a reads the cancel between pages
        stopped = b.http.delete(f"/v1/admin/reindex/{rollout_id}")
        assert stopped.status_code == 200, stopped.text
        assert stopped.json()["state"] == "cancelled", stopped.json()
        assert a.rollout(rollout_id) == b.rollout(rollout_id)
        info = a.http.get("/v1/collections/media").json()
        assert (info["current"], info["building"]) == (serving, None), info
        missing = a.http.get("/v1/admin/reindex/no-such-rollout")
        assert missing.status_code == b.http.get("/v1/admin/reindex/no-such-rollout").status_code
        assert missing.status_code == 404
