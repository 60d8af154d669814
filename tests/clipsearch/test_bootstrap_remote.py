"""With worker endpoints configured, the gateway needs no bundle: it embeds over gRPC."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from clipsearch.bootstrap import build_components
from service.clients.grpc import GrpcEmbeddingClient
from service.core.config import EncoderSettings, Settings
from service.gateway.app import create_app
from tests.service.worker.harness import running_worker


def test_the_gateway_serves_through_a_remote_worker(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    with running_worker(tiny_bundle_dir) as (worker, _):
        settings = Settings(
            data_dir=tmp_path / "data",
            bundle=str(tmp_path / "no-such-bundle"),  # never read: dims come from Info
            encoder=EncoderSettings(endpoints=[f"127.0.0.1:{worker.port}"]),
        )
        app = create_app(settings, build_components)
        with TestClient(app) as client:
            assert app.state.runtime.wait(60), app.state.runtime.readiness()
            components = app.state.runtime.components
            assert isinstance(components.embedder, GrpcEmbeddingClient)
            ready = client.get("/health/ready")
            assert ready.status_code == 200, ready.text
            assert ready.json()["model"] == "tiny-test@0.1.0"
            search = client.post("/v1/search", json={"text": "a red circle"})
            assert search.status_code == 200, search.text
            # The client's per-worker series are on the gateway's /metrics.
            metrics = client.get("/metrics").text
            labels = f'endpoint="127.0.0.1:{worker.port}",state="serving"'
            assert f"clipsearch_encoder_client_worker_state{{{labels}}} 1.0" in metrics, metrics
        assert not components.embedder.ready()  # closed with the app
