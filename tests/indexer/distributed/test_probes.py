"""The indexer's probe server on a real private Redis: ready only while Celery consumes and
Redis answers, with the reason when not; /metrics serves the process's registry."""

from __future__ import annotations

from pathlib import Path

import httpx

from indexer.distributed.app import IndexerProbes
from indexer.distributed.resources import IndexerResources
from loadtests.bench.deployment import RedisProcess
from service.clients.base import EmbeddingClient
from service.core.config import BrokerSettings, Settings
from tests.support import wait_until


def no_embedder() -> EmbeddingClient:
    raise AssertionError("the probes must not build the embedder")


def test_ready_follows_the_consumer_and_redis(tmp_path: Path) -> None:
    redis_proc = RedisProcess(tmp_path / "redis")
    redis_proc.start()
    resources = IndexerResources(Settings(broker=BrokerSettings(url=redis_proc.url)), no_embedder)
    probes = IndexerProbes(resources, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{probes.server.port}"

    def ready() -> tuple[int, str]:
        response = httpx.get(f"{base}/health/ready", timeout=5)
        return response.status_code, response.json().get("reason", "")

    try:
        assert ready() == (503, "the Celery worker is not consuming tasks")
        probes.consuming(True)
        wait_until(lambda: ready()[0] == 200, 30)
        resources.metrics.items.labels("sent").inc(3)
        metrics = httpx.get(f"{base}/metrics", timeout=5).text
        assert 'clipsearch_indexer_items_total{outcome="sent"} 3.0' in metrics
        assert "clipsearch_indexer_ready 1.0" in metrics
        redis_proc.kill()
        wait_until(lambda: ready()[0] == 503, 30)
        assert "Redis does not answer" in ready()[1]
        live = httpx.get(f"{base}/health/live", timeout=5)
        assert live.status_code == 200  # Redis away is no reason to restart the indexer
        assert httpx.get(f"{base}/nowhere", timeout=5).status_code == 404
        redis_proc.start()  # the same port: ready again without a restart
        wait_until(lambda: ready()[0] == 200, 30)
    finally:
        probes.close()
        resources.close()
        redis_proc.kill()
