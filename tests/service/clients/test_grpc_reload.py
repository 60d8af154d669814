"""Issue 14's gap on real encoder workers over loopback: a worker that was down during a run-time
``LoadBundle``, or restarts afterwards (a fresh process serves only its configured bundles), is
sent ``LoadBundle`` again by the client's health watch and rejoins that bundle's rotation, while
that bundle's embeds keep succeeding on the other worker; failures back off and are logged once;
a dropped bundle is forgotten. The workers are in-process servers restarted on the same port (a
real process killed with SIGKILL is ``tests/faults/test_workers.py``'s business; what the client
sees is the same: a refused connection, then a worker without the bundle)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from clipsearch.bootstrap import build_registry, rollout_bundle
from service.clients.grpc import GrpcEmbeddingClient, HealthPolicy
from service.core.config import Settings, WorkerSettings
from service.worker.server import WorkerServer
from tests.service.worker.harness import worker_settings
from tests.support import wait_until

TINY = "tiny-test@0.1.0"
NARROW = "tiny-narrow@0.1.0"
# Probes every 50 ms so that the waits below are short; everything else as shipped.
FAST = HealthPolicy(probe_interval_s=0.05, probe_timeout_s=1.0)
WAIT_S = 30.0  # generous: the machine is shared


class Worker:
    """An encoder worker on the tiny bundle at a fixed port; ``restart`` is a fresh server there
    (nothing loaded at run time survives), as a restarted process would be."""

    def __init__(self, tmp: Path, bundle: Path) -> None:
        self.tmp, self.bundle = tmp, bundle
        self.port = 0
        self.server: WorkerServer | None = None

    @property
    def endpoint(self) -> str:
        assert self.port, "start it once first"
        return f"127.0.0.1:{self.port}"

    def start(self, *, loads: bool = True) -> WorkerServer:
        settings: Settings = worker_settings().model_copy(
            update={
                "bundle": str(self.bundle),
                "data_dir": self.tmp,
                "worker": WorkerSettings(host="127.0.0.1", port=self.port, metrics_port=0),
            }
        )
        server = WorkerServer(
            settings,
            registry=build_registry(settings),
            resolve_bundle=partial(rollout_bundle, settings) if loads else None,
        )
        self.port = server.start()
        self.server = server
        return server

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(grace=0)

    def restart(self, *, loads: bool = True) -> WorkerServer:
        self.stop()
        server = self.start(loads=loads)
        assert server.registry.refs() == [TINY]  # fresh: the run-time bundle is gone
        return server

    def refs(self) -> list[str]:
        assert self.server is not None
        return self.server.registry.refs()

    def rpcs(self, method: str, code: str = "OK") -> float:
        assert self.server is not None
        value = self.server.registry.metrics.registry.get_sample_value(
            "clipsearch_worker_rpcs_total", {"method": method, "code": code}
        )
        return value or 0.0


class Load:
    """A thread embedding queries for one bundle until stopped; every failure is kept."""

    def __init__(self, client: GrpcEmbeddingClient, bundle: str) -> None:
        self.client, self.bundle = client, bundle
        self.calls = 0
        self.errors: list[Exception] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                got = self.client.embed_texts(["a red circle"], bundle=self.bundle)
                assert got.joint.shape == (1, 32)
            except Exception as exc:
                self.errors.append(exc)
            self.calls += 1
            self._stop.wait(0.005)  # the machine is shared

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.fixture
def workers(tmp_path: Path, tiny_bundle_dir: Path) -> Iterator[tuple[Worker, Worker]]:
    a, b = Worker(tmp_path / "a", tiny_bundle_dir), Worker(tmp_path / "b", tiny_bundle_dir)
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.stop()
        b.stop()


def _client(stack: ExitStack, *workers: Worker, policy: HealthPolicy = FAST) -> GrpcEmbeddingClient:
    client = GrpcEmbeddingClient(
        [w.endpoint for w in workers], worker_settings().encoder, policy=policy
    )
    stack.callback(client.close)
    client.wait_ready(WAIT_S)
    return client


def _reloads(client: GrpcEmbeddingClient, worker: Worker, result: str) -> float:
    value = client.metrics.registry.get_sample_value(
        "clipsearch_encoder_client_bundle_reloads_total",
        {"endpoint": worker.endpoint, "bundle": NARROW, "result": result},
    )
    return value or 0.0


def _probes_pass(worker: Worker, n: int) -> None:
    """Wait until ``worker`` answered ``n`` more Health probes (ready: the watch acted on them)."""
    seen = worker.rpcs("Health")
    wait_until(lambda: worker.rpcs("Health") >= seen + n, timeout=WAIT_S)


def test_a_restarted_worker_serves_the_bundle_again_and_its_embeds_never_fail(
    workers: tuple[Worker, Worker], tiny_narrow_bundle_dir: Path
) -> None:
    a, b = workers
    with ExitStack() as stack:
        client = _client(stack, a, b)
        served, loaded = client.load_bundle(str(tiny_narrow_bundle_dir))
        assert (served.ref, loaded) == (NARROW, True)
        assert NARROW in a.refs() and NARROW in b.refs()
        with Load(client, NARROW) as load:
            wait_until(lambda: load.calls >= 20, timeout=WAIT_S)
            b.restart()
            # The health watch finds it without the bundle and loads it there, unasked...
            wait_until(lambda: NARROW in b.refs(), timeout=WAIT_S)
            # ...and it takes that bundle's calls again (the load asks for nothing else).
            wait_until(lambda: b.rpcs("Embed") >= 5, timeout=WAIT_S)
            assert load.errors == [], load.errors[:3]  # a served them meanwhile
            assert _reloads(client, b, "loaded") == 1
            # Both restart: for a moment nobody serves it (calls fail), then both do again.
            a.restart()
            b.restart()
            wait_until(lambda: NARROW in a.refs() and NARROW in b.refs(), timeout=WAIT_S)
            wait_until(lambda: _listed(client, a, b), timeout=WAIT_S)
            calls = load.calls
            wait_until(lambda: load.calls >= calls + 2, timeout=WAIT_S)  # the call under way
            failed = len(load.errors)
            wait_until(lambda: load.calls >= calls + 30, timeout=WAIT_S)
        assert load.errors[failed:] == [], load.errors[failed : failed + 3]
        assert a.rpcs("Embed") >= 1 and b.rpcs("Embed") >= 1  # both take its calls
        assert _reloads(client, b, "loaded") == 2 and _reloads(client, a, "loaded") == 1
        assert _reloads(client, a, "failed") == _reloads(client, b, "failed") == 0
        assert [x.ref for x in client.info().bundles] == [TINY, NARROW]


def _endpoint(client: GrpcEmbeddingClient, worker: Worker) -> dict[str, Any]:
    entry: dict[str, Any] = client.health().detail["endpoints"][worker.endpoint]
    return entry


def _listed(client: GrpcEmbeddingClient, *workers: Worker) -> bool:
    """Whether the client's health watch saw every one of ``workers`` serve NARROW."""
    endpoints = client.health().detail["endpoints"]
    return all(NARROW in endpoints[w.endpoint].get("bundles", []) for w in workers)


def test_a_worker_down_during_the_load_gets_the_bundle_when_it_comes_up(
    workers: tuple[Worker, Worker], tiny_narrow_bundle_dir: Path
) -> None:
    a, b = workers
    with ExitStack() as stack:
        client = _client(stack, a, b)
        b.stop()
        wait_until(lambda: not client.health().detail["endpoints"][b.endpoint]["ready"])
        served, loaded = client.load_bundle(str(tiny_narrow_bundle_dir))  # a alone loads it
        assert (served.ref, loaded) == (NARROW, True) and NARROW in a.refs()
        b.start()
        wait_until(lambda: NARROW in b.refs(), timeout=WAIT_S)
        wait_until(lambda: _reloads(client, b, "loaded") == 1, timeout=WAIT_S)
        for _ in range(10):  # both serve it now: round-robin reaches b
            client.embed_texts(["a red circle"], bundle=NARROW)
        assert b.rpcs("Embed") >= 1


def test_failed_loads_back_off_are_logged_once_and_recover(
    workers: tuple[Worker, Worker], tiny_narrow_bundle_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = workers
    policy = HealthPolicy(
        probe_interval_s=0.05, probe_timeout_s=1.0, reload_backoff_s=0.05, reload_backoff_max_s=0.1
    )
    with ExitStack() as stack:
        client = _client(stack, a, b, policy=policy)
        client.load_bundle(str(tiny_narrow_bundle_dir))
        caplog.set_level(logging.DEBUG, logger="service.clients.grpc")
        b.restart(loads=False)  # a worker that cannot load bundles: every LoadBundle fails
        wait_until(lambda: _reloads(client, b, "failed") >= 3, timeout=WAIT_S)
        # Its requests go to a meanwhile.
        for _ in range(10):
            assert client.embed_texts(["x"], bundle=NARROW).joint.shape == (1, 32)
        warned = [
            r
            for r in caplog.records
            if r.levelno == logging.WARNING and "does not serve bundle" in r.getMessage()
        ]
        assert len(warned) == 1, [r.getMessage() for r in warned]
        assert b.endpoint in warned[0].getMessage() and NARROW in warned[0].getMessage()
        assert "cannot load bundles" in warned[0].getMessage()
        # /health/ready says so (readiness itself is the default bundle's business).
        health = client.health()
        assert health.ready and "cannot load bundles" in _endpoint(client, b)["reloading"][NARROW]
        b.restart()  # fixed: the next try loads it
        wait_until(lambda: NARROW in b.refs(), timeout=WAIT_S)
        wait_until(lambda: _reloads(client, b, "loaded") == 1, timeout=WAIT_S)
        assert any("failed tries" in r.getMessage() for r in caplog.records)
        assert "reloading" not in _endpoint(client, b)


def test_after_a_failure_the_next_try_waits_for_its_back_off(
    workers: tuple[Worker, Worker], tiny_narrow_bundle_dir: Path
) -> None:
    a, b = workers
    patient = HealthPolicy(probe_interval_s=0.05, probe_timeout_s=1.0, reload_backoff_s=60.0)
    with ExitStack() as stack:
        client = _client(stack, a, b, policy=patient)
        client.load_bundle(str(tiny_narrow_bundle_dir))
        b.restart(loads=False)
        wait_until(lambda: _reloads(client, b, "failed") == 1, timeout=WAIT_S)
        _probes_pass(b, 20)  # twenty ready probes: without the back-off, twenty more tries
        assert b.rpcs("LoadBundle", "INVALID_ARGUMENT") == 1
        assert _reloads(client, b, "failed") == 1 and NARROW not in b.refs()


def test_a_dropped_bundle_is_not_loaded_again(
    workers: tuple[Worker, Worker], tiny_narrow_bundle_dir: Path
) -> None:
    a, b = workers
    with ExitStack() as stack:
        client = _client(stack, a, b)
        client.load_bundle(str(tiny_narrow_bundle_dir))
        client.drop_bundle(NARROW, grace_s=1.0)
        assert a.refs() == [TINY] == b.refs()
        b.restart()
        _probes_pass(b, 20)
        assert a.refs() == [TINY] == b.refs()
        assert b.rpcs("LoadBundle") == 0 and _reloads(client, b, "loaded") == 0
        # Loaded again later: remembered again, from the new load.
        client.load_bundle(str(tiny_narrow_bundle_dir))
        b.restart()
        wait_until(lambda: NARROW in b.refs(), timeout=WAIT_S)
