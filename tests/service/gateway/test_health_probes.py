"""What the probes mean (service/gateway/state.py): ``/health/ready`` is the background monitor's
cached answer (no dependency is called on its path), Redis and the writer only degrade it,
``/health/live`` fails once the monitor has stalled, and start-up waits for a dependency that
is not there yet, naming it, for as long as it takes."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from unittest.mock import ANY

import pytest
from fastapi.testclient import TestClient

from clipsearch.bootstrap import until_reachable
from service.core.config import QdrantSettings, Settings, StartupSettings, redact_url
from service.core.embeddings import EncoderHealth, EncoderInfo
from service.core.errors import ClipsearchError, ErrorType
from service.gateway.app import create_app
from service.gateway.state import Components, Runtime
from tests.service.gateway.conftest import make_settings
from tests.support import free_port, wait_until

FAST = StartupSettings(backoff_max_s=0.05, health_interval_s=0.02, stall_s=0.5)


@dataclass
class FakeEmbedder:
    """Ready unless told otherwise; ``health()`` blocks while ``gate`` is clear."""

    ready: bool = True
    gate: threading.Event = field(default_factory=threading.Event)
    calls: int = 0
    inside: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.gate.set()

    def health(self) -> EncoderHealth:
        self.calls += 1
        self.inside.set()
        self.gate.wait()
        return EncoderHealth(self.ready, None if self.ready else "no encoder worker is ready")

    def info(self, *, bundle: str | None = None) -> EncoderInfo:
        return cast(EncoderInfo, type("Info", (), {"bundle": "tiny-test@0.1.0", "bundles": ()}))

    def close(self) -> None:
        self.gate.set()


@dataclass
class FakeStore:
    broken: str | None = None

    def list_collections(self) -> list[str]:
        if self.broken:
            raise ClipsearchError(ErrorType.unavailable, self.broken)
        return ["media"]

    def close(self) -> None:
        pass


@dataclass
class FakeJobs:
    up: bool = True

    def ready(self) -> bool:
        return self.up

    def close(self) -> None:
        pass


class Closer:
    def close(self) -> None:
        pass


def components(embedder: FakeEmbedder, store: FakeStore, jobs: FakeJobs) -> Components:
    return Components(
        embedder=cast(Any, embedder),
        store=cast(Any, store),
        jobs=cast(Any, jobs),
        search=cast(Any, None),
        collection="media",
        reindexer=cast(Any, Closer()),
    )


@dataclass
class Harness:
    client: TestClient
    embedder: FakeEmbedder
    store: FakeStore
    jobs: FakeJobs


@pytest.fixture
def harness() -> Iterator[Harness]:
    embedder, store, jobs = FakeEmbedder(), FakeStore(), FakeJobs()
    settings = Settings(
        broker={"url": "redis://:s3cret@redis.example:6379/0"},  # type: ignore[arg-type]
        startup=FAST,
    )
    app = create_app(settings, lambda s: components(embedder, store, jobs))
    with TestClient(app) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200)
        yield Harness(client, embedder, store, jobs)
        embedder.gate.set()  # let a blocked check end before shutdown


def test_ready_is_the_cached_answer_and_never_calls_the_encoder(harness: Harness) -> None:
    h = harness
    h.embedder.gate.clear()  # the next health() call blocks
    h.embedder.inside.clear()
    assert h.embedder.inside.wait(10)  # the monitor is now stuck inside it
    calls = h.embedder.calls
    for _ in range(20):  # answered while the encoder's health() cannot answer
        response = h.client.get("/health/ready")
        assert response.status_code == 200
    assert h.embedder.calls == calls  # the requests themselves called nothing
    h.embedder.gate.set()


def test_an_encoder_without_a_ready_worker_turns_readiness_off_and_back(harness: Harness) -> None:
    h = harness
    h.embedder.ready = False
    wait_until(lambda: h.client.get("/health/ready").status_code == 503)
    body = h.client.get("/health/ready").json()
    assert body["checks"] == {"encoder": False, "store": True}
    assert body["reason"] == "encoder: no encoder worker is ready"
    h.embedder.ready = True
    wait_until(lambda: h.client.get("/health/ready").status_code == 200)


def test_a_store_that_fails_turns_readiness_off(harness: Harness) -> None:
    h = harness
    h.store.broken = "the Qdrant server at http://q:6333 is unreachable"
    wait_until(lambda: h.client.get("/health/ready").status_code == 503)
    body = h.client.get("/health/ready").json()
    assert body["checks"]["store"] is False
    assert "Qdrant server at http://q:6333 is unreachable" in body["reason"]


def test_redis_away_only_degrades_readiness_and_names_it_without_the_password(
    harness: Harness,
) -> None:
    h = harness
    h.jobs.up = False
    wait_until(lambda: "degraded" in h.client.get("/health/ready").json())
    response = h.client.get("/health/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["ready"] is True
    assert "redis://***@redis.example:6379/0" in body["degraded"]["jobs"]
    assert "s3cret" not in response.text
    h.jobs.up = True
    wait_until(lambda: "degraded" not in h.client.get("/health/ready").json())


def test_live_fails_only_once_the_monitor_has_stalled(harness: Harness) -> None:
    h = harness
    assert h.client.get("/health/live").json() == {"status": "alive"}
    h.embedder.gate.clear()  # a check that never returns: the process is wedged
    wait_until(lambda: h.client.get("/health/live").status_code == 503, timeout=30)
    body = h.client.get("/health/live").json()
    assert body["status"] == "stalled" and "has not completed" in body["reason"]
    h.embedder.gate.set()  # it comes back: live again
    wait_until(lambda: h.client.get("/health/live").status_code == 200)


def _settings() -> Settings:
    return Settings(startup=FAST)


def test_start_up_waits_for_a_dependency_naming_it_with_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    embedder, store, jobs = FakeEmbedder(), FakeStore(), FakeJobs()
    there = threading.Event()
    tries: list[int] = []

    def info() -> str:
        tries.append(1)
        if not there.is_set():
            raise ClipsearchError(ErrorType.unavailable, f"connection refused (try {len(tries)})")
        return "served"

    def factory(settings: Settings) -> Components:
        assert until_reachable(settings, "encoder workers at 127.0.0.1:1", info) == "served"
        return components(embedder, store, jobs)

    runtime = Runtime(_settings(), factory)
    with caplog.at_level(logging.INFO, logger="service.gateway.state"):
        runtime.start()
        wait_until(lambda: len(tries) >= 5)  # it keeps trying: no give-up
        ready, detail = runtime.readiness()
        assert not ready
        assert detail["reason"] == "starting: waiting for encoder workers at 127.0.0.1:1"
        assert "connection refused" in str(detail["waiting_for"])
        with pytest.raises(ClipsearchError, match="starting: waiting for encoder workers at"):
            _ = runtime.components  # what a search meanwhile answers (503 unavailable)
        there.set()
        assert runtime.wait(10)
    assert runtime.readiness()[0] is True
    messages = [r.getMessage() for r in caplog.records]
    waiting = [m for m in messages if m.startswith("waiting for")]
    assert waiting == ["waiting for encoder workers at 127.0.0.1:1: connection refused (try 1)"]
    assert "encoder workers at 127.0.0.1:1: reached" in messages
    runtime.close()


def test_an_error_that_cannot_heal_ends_start_up_at_once() -> None:
    tries: list[int] = []

    def bad() -> None:
        tries.append(1)
        raise ClipsearchError(ErrorType.bundle_invalid, "bundle x: manifest.json is corrupt")

    def factory(settings: Settings) -> Components:
        until_reachable(settings, "encoder workers", bad)
        raise AssertionError("not reached")

    runtime = Runtime(_settings(), factory)
    runtime.start()
    assert runtime.wait(10) is False
    assert tries == [1]
    assert runtime.error == "bundle x: manifest.json is corrupt"
    runtime.close()


def test_closing_while_waiting_stops_start_up_without_an_error() -> None:
    def factory(settings: Settings) -> Components:
        def never() -> None:
            raise ClipsearchError(ErrorType.unavailable, "connection refused")

        until_reachable(settings, "a Qdrant server", never)
        raise AssertionError("not reached")

    runtime = Runtime(_settings(), factory)
    runtime.start()
    wait_until(lambda: runtime.progress.waiting_for == "a Qdrant server")
    runtime.close()  # returns: the wait ends at once
    assert runtime.error is None


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:6379/0", "redis://***@h:6379/0"),
        ("redis://user:pw@h/1", "redis://user:***@h/1"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_broker_urls_are_shown_without_their_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_a_gateway_waits_for_a_qdrant_server_that_is_not_there_yet(
    tmp_path: Path, tiny_bundle_dir: Path
) -> None:
    from clipsearch.bootstrap import build_components

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = make_settings(tmp_path, tiny_bundle_dir).model_copy(
        update={"qdrant": QdrantSettings(url=url, timeout_s=1), "startup": FAST}
    )
    runtime = Runtime(settings, build_components)
    runtime.start()
    try:
        wait_until(lambda: runtime.progress.waiting_for is not None, timeout=120)
        assert runtime.progress.waiting_for == f"the Qdrant server at {url}"
        assert "Qdrant is unreachable" in str(runtime.progress.reason)
        assert runtime.readiness() == (
            False,
            {
                "reason": f"starting: waiting for the Qdrant server at {url}",
                "waiting_for": {"what": f"the Qdrant server at {url}", "last_error": ANY},
            },
        )
        assert runtime.error is None  # still trying, not failed
    finally:
        runtime.close()
    assert runtime.error is None
