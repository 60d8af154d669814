"""Writers that hand over, as real ``clipsearch writer`` processes on a private Redis.

One writer is started with another data dir than the one holding the collection (the mistake
the issue met): it fails its writes, stops claiming, and its ``/health/ready`` says why while
``/health/live`` stays 200. A healthy writer then takes its entries over once they go idle,
writes every point once, and removes the sick one from the consumer group once it holds
nothing. ``clipsearch_points_upserted_total`` on the writers' ``/metrics`` adds up to the
points in the store."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from indexer.distributed.stream import WRITER_GROUP, PointStream, stream_key
from loadtests.bench.deployment import free_port, wait
from service.core.config import BrokerSettings
from service.store.edge import QdrantEdgeStore
from tests.indexer.distributed.test_stream import items, points
from tests.redis_server import redis_server

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
COLL = "media"
DIMS: dict[str, int] = {"image": 8, "caption": 8, "description": 4}
N_ENTRIES, PER_ENTRY = 4, 10
TIMEOUT_S = 120.0


class WriterProcess:
    def __init__(self, base: Path, name: str, env: dict[str, str], data_dir: Path) -> None:
        self.port = free_port()
        self.log = base / f"writer-{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "clipsearch", "writer", "--probe-port", str(self.port)],
                cwd=REPO_ROOT,
                env={
                    **env,
                    "CLIPSEARCH_BROKER__WRITER_NAME": name,
                    "CLIPSEARCH_DATA_DIR": str(data_dir),
                },
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def get(self, path: str) -> httpx.Response | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"the writer exited: {self.log.read_text()[-3000:]}")
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=5)
        except httpx.TransportError:
            return None  # not listening yet

    def ready(self) -> tuple[int, dict[str, Any]]:
        response = self.get("/health/ready")
        return (0, {}) if response is None else (response.status_code, response.json())

    def metric(self, name: str) -> float:
        response = self.get("/metrics")
        assert response is not None and response.status_code == 200
        found = re.search(rf"^{name} (\S+)$", response.text, re.MULTILINE)
        assert found, f"{name} not in /metrics"
        return float(found.group(1))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def test_a_writer_on_another_data_dir_hands_over_and_leaves_the_group(tmp_path: Path) -> None:
    base = tmp_path
    good_dir, sick_dir = base / "gateway-data", base / "elsewhere"
    store = QdrantEdgeStore(good_dir)  # the gateway created the collection here
    store.ensure_collection(COLL, DIMS)  # type: ignore[arg-type]
    store.close()
    with redis_server(base / "redis") as url:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CLIPSEARCH_")},
            "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(REPO_ROOT),
            "CLIPSEARCH_BROKER__URL": url,
            "CLIPSEARCH_BROKER__WRITER_BLOCK_MS": "200",
            "CLIPSEARCH_BROKER__CLAIM_IDLE_MS": "1000",
            "CLIPSEARCH_BROKER__WRITER_MAX_FAILURES": "3",
            "CLIPSEARCH_BROKER__WRITER_FORGET_IDLE_MS": "3000",
        }
        stream = PointStream(url, BrokerSettings(url=url))
        writers: list[WriterProcess] = []
        try:
            sick = WriterProcess(base, "sick", env, sick_dir)
            writers.append(sick)
            wait("the sick writer up", lambda: sick.ready()[0] == 200, TIMEOUT_S, poll_s=0.2)
            stream.jobs.init_job("job", total=N_ENTRIES * PER_ENTRY)
            for i in range(N_ENTRIES):
                ps = points(PER_ENTRY, start=PER_ENTRY * i)
                stream.append(COLL, "job", items(ps), ps)

            def sick_says_so() -> bool:
                status, body = sick.ready()
                return status == 503 and "stopped claiming" in body.get("reason", "")

            wait("the sick writer stops claiming", sick_says_so, TIMEOUT_S, poll_s=0.2)
            live = sick.get("/health/live")
            assert live is not None and live.status_code == 200
            pending: Any = stream.redis.xpending(stream_key(COLL), WRITER_GROUP)
            # It holds what it read (what arrived before it stopped), and wrote none of it.
            held = int(pending["pending"])
            assert held >= 1 and pending["consumers"] == [{"name": b"sick", "pending": held}]
            assert (stream.jobs.get("job") or {})["done"] == 0

            good = WriterProcess(base, "good", env, good_dir)
            writers.append(good)
            total = N_ENTRIES * PER_ENTRY
            wait(
                "every item written by the healthy writer",
                lambda: (stream.jobs.get("job") or {})["done"] == total,
                TIMEOUT_S,
                poll_s=0.2,
            )
            assert good.ready()[0] == 200
            assert stream.length(COLL) == 0

            def group() -> set[str]:
                reply: Any = stream.redis.xinfo_consumers(stream_key(COLL), WRITER_GROUP)
                return {c["name"].decode() for c in reply}

            wait("the sick writer leaves the group", lambda: group() == {"good"}, TIMEOUT_S)

            def sick_says_why() -> bool:
                status, body = sick.ready()
                return status == 503 and "data dir" in body.get("reason", "")

            # It asks its store after its rest, touching nothing, and stays out.
            wait("the sick writer names its data dir", sick_says_why, TIMEOUT_S, poll_s=0.2)
            assert sick.metric("clipsearch_writer_write_failures_total") >= 3
            assert sick.metric("clipsearch_points_upserted_total") == 0
            assert sick.metric("clipsearch_writer_healthy") == 0
            assert good.metric("clipsearch_writer_claimed_total") == held
            upserted = good.metric("clipsearch_points_upserted_total")
            assert good.metric("clipsearch_writer_healthy") == 1
            assert [w.stop() for w in writers] == [0, 0]
        finally:
            for w in writers:
                w.stop()
            stream.close()
    reopened = QdrantEdgeStore(good_dir)
    try:
        assert reopened.count(COLL) == total == upserted
    finally:
        reopened.close()
    assert not QdrantEdgeStore(sick_dir).list_collections()
