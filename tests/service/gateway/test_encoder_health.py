"""The gateway tells the truth about its in-process encoder: metrics, readiness, 429."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.clients.inprocess import InProcessEmbeddingClient
from service.core.config import EncoderSettings, LaneSettings
from service.core.domain import Lane
from service.gateway.state import Components
from tests.service.gateway.conftest import make_settings, running_client
from tests.support import wait_until


@pytest.fixture
def small(tmp_path: Path, tiny_bundle_dir: Path) -> Iterator[TestClient]:
    encoder = EncoderSettings(
        provider="cpu", interactive=LaneSettings(max_queue=1), probe_interval_s=0.05
    )
    yield from running_client(make_settings(tmp_path, tiny_bundle_dir, encoder=encoder))


def engine_of(client: TestClient) -> Any:
    comp: Components = client.app.state.runtime.components  # type: ignore[attr-defined]
    assert isinstance(comp.embedder, InProcessEmbeddingClient)
    return comp.embedder.engine


def test_metrics_include_the_encoder(small: TestClient) -> None:
    assert small.post("/v1/search", json={"text": "a red circle"}).status_code == 200
    text = small.get("/metrics").text
    labels = 'bundle="tiny-test@0.1.0",lane="interactive",tower="text"'
    assert f"clipsearch_encoder_batch_size_count{{{labels}}}" in text
    assert "clipsearch_encoder_provider_info" in text
    assert "clipsearch_http_requests_total" in text


def test_a_full_interactive_lane_answers_429_with_retry_after(small: TestClient) -> None:
    engine = engine_of(small)
    gate, entered = threading.Event(), threading.Event()
    original = engine.forward_texts

    def held(items: Any, lane: Lane = "interactive") -> Any:
        entered.set()
        gate.wait(30)
        return original(items, lane)

    engine.forward_texts = held
    try:
        first: dict[str, Any] = {}
        thread = threading.Thread(
            target=lambda: first.update(r=small.post("/v1/search", json={"text": "one"}))
        )
        thread.start()
        assert entered.wait(10)
        refused = small.post("/v1/search", json={"text": "two"})
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["error"]["type"] == "overloaded"
    finally:
        gate.set()
        thread.join(30)
        engine.forward_texts = original
    assert first["r"].status_code == 200
    assert small.post("/v1/search", json={"text": "two"}).status_code == 200


def test_readiness_reports_a_broken_encoder_and_its_recovery(small: TestClient) -> None:
    engine = engine_of(small)
    original = engine.forward_texts

    def broken(items: Any, lane: Lane = "interactive") -> Any:
        raise RuntimeError("CUDA error: device lost")

    engine.forward_texts = broken
    try:
        assert small.post("/v1/search", json={"text": "x", "mode": "caption"}).status_code == 500
        # Readiness is the monitor's cached answer: it turns within one health interval.
        wait_until(lambda: small.get("/health/ready").status_code == 503)
        ready = small.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["encoder"] is False
        assert "device lost" in ready.json()["reason"]
        healthy = 'clipsearch_encoder_healthy{bundle="tiny-test@0.1.0",tower="text"} 0.0'
        assert healthy in small.get("/metrics").text
    finally:
        engine.forward_texts = original
    tick = threading.Event()
    for _ in range(400):  # the watchdog's probe brings it back
        if small.get("/health/ready").status_code == 200:
            break
        tick.wait(0.025)
    assert small.get("/health/ready").status_code == 200
