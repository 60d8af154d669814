"""clipsearch-probe (the images' health checks, exec probes and helm test) against real processes:
an encoder worker, a gateway, and a `clipsearch indexer` Celery worker."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import uvicorn

from clipsearch.bootstrap import build_components
from service.core.bundle.manifest import load_bundle
from service.core.config import AuthSettings, BrokerSettings, Settings, WorkerSettings
from service.encoder.engine import EncoderEngine
from service.gateway.app import create_app
from service.worker.server import WorkerServer
from tests.deploy.kube import load_probe_module
from tests.redis_server import redis_server
from tests.support import wait_until


@pytest.fixture(scope="module")
def probe() -> ModuleType:
    return load_probe_module()


def _worker(bundle: Path) -> tuple[Settings, WorkerServer]:
    settings = Settings(worker=WorkerSettings(host="127.0.0.1", port=0, metrics_port=0))
    return settings, WorkerServer(settings, EncoderEngine(load_bundle(bundle), settings))


def test_the_worker_probe_passes_only_once_warmed_up(
    probe: ModuleType, tiny_bundle_dir: Path
) -> None:
    settings, server = _worker(tiny_bundle_dir)
    port = server.start(warmup=False)
    at_port = settings.model_copy(update={"worker": WorkerSettings(port=port)})
    try:
        with pytest.raises(probe.ProbeFailed, match="not ready"):
            probe.probe_worker(at_port, timeout=3)
        server.engine.warmup()
        assert probe.probe_worker(at_port, timeout=3).startswith("encoder worker ready")
    finally:
        server.stop(grace=0)
    with pytest.raises(probe.ProbeFailed, match="UNAVAILABLE"):
        probe.probe_worker(at_port, timeout=1)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path) -> Iterator[Settings]:
    """A real gateway (embedded, with API keys) on a free port; yields its settings."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("gateway"),
        bundle=str(tiny_bundle_dir),
        auth=AuthSettings.model_validate({"api_keys": "admin-key:admin,search-key:search"}),
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, build_components), host="127.0.0.1", port=0, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=60)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield settings.model_copy(update={"port": port})
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_the_search_round_trip_of_helm_test(probe: ModuleType, gateway: Settings) -> None:
    url = f"http://127.0.0.1:{gateway.port}"
    key = probe.search_key("admin-key:admin,search-key:search")
    assert key == "search-key"
    assert probe.search_round_trip(url, key, timeout=10, wait_s=60).startswith(
        "search round trip ok"
    )
    with pytest.raises(probe.ProbeFailed, match="answered 401"):
        probe.search_round_trip(url, None, timeout=10, wait_s=0)
    with pytest.raises(probe.ProbeFailed, match="no API key with the search scope"):
        probe.search_key("admin-key:admin")


def test_the_gateway_probe_follows_readiness(probe: ModuleType, gateway: Settings) -> None:
    url = f"http://127.0.0.1:{gateway.port}"
    probe.search_round_trip(url, "search-key", timeout=10, wait_s=60)  # started, hence ready
    assert probe.probe_gateway(gateway, timeout=5) == "gateway ready"
    with pytest.raises(probe.ProbeFailed, match="Connection refused"):
        probe.probe_gateway(gateway.model_copy(update={"port": 1}), timeout=2)


def test_the_probe_command_line_exits_non_zero_when_unhealthy() -> None:
    script = Path(load_probe_module().__file__ or "")
    env = {**os.environ, "CLIPSEARCH_PORT": "1"}
    result = subprocess.run(
        [sys.executable, str(script), "gateway", "--timeout", "2"],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 1 and result.stderr.startswith("unhealthy:")


@pytest.mark.slow
def test_the_indexer_probe_pings_the_node_the_indexer_command_names(
    probe: ModuleType, tiny_bundle_dir: Path, tmp_path: Path
) -> None:
    with redis_server(tmp_path / "redis") as url:
        settings = Settings(broker=BrokerSettings(url=url))
        with pytest.raises(probe.ProbeFailed, match="did not answer"):
            probe.probe_indexer(settings, timeout=1)
        env = {
            **os.environ,
            "CLIPSEARCH_BROKER__URL": url,
            "CLIPSEARCH_BUNDLE": str(tiny_bundle_dir),
            "CLIPSEARCH_DATA_DIR": str(tmp_path / "data"),
        }
        # The very arguments of the chart and of the image (--name indexer@%h).
        indexer = subprocess.Popen(
            [sys.executable, "-m", "clipsearch", "indexer", "--name", "indexer@%h"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            answers: list[str] = []

            def pinged() -> bool:
                try:
                    answers.append(probe.probe_indexer(settings, timeout=1))
                except probe.ProbeFailed:
                    return False
                return True

            wait_until(pinged, timeout=90)
            assert answers[-1].startswith("indexer indexer@")
        finally:
            indexer.terminate()
            indexer.wait(timeout=30)
