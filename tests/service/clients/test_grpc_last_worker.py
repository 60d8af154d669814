"""Request failures never eject the last serving worker (Envoy's ``max_ejection_percent``): on a
loaded machine a slow but working worker loses hedge races and times out now and then, and
ejecting it would leave readiness false with nothing better to send calls to. Failed probes still
eject it. One real in-process worker, and an endpoint where nothing listens (a killed worker)."""

from __future__ import annotations

from pathlib import Path

from service.clients.grpc import DOWN, EJECTED, SERVING, GrpcEmbeddingClient, HealthPolicy
from tests.service.clients.test_grpc_reload import Worker
from tests.service.worker.harness import worker_settings
from tests.support import free_port, wait_until

# Probes rarely, so that the test's own failures decide the state between them.
POLICY = HealthPolicy(probe_interval_s=30.0, probe_timeout_s=1.0, eject_after=3)


def test_request_failures_spare_the_last_serving_worker_and_probe_failures_do_not(
    tmp_path: Path, tiny_bundle_dir: Path
) -> None:
    worker = Worker(tmp_path / "w", tiny_bundle_dir)
    worker.start()
    killed = f"127.0.0.1:{free_port()}"  # nothing listens: the other worker is down
    client = GrpcEmbeddingClient(
        [killed, worker.endpoint], worker_settings().encoder, policy=POLICY
    )
    try:
        wait_until(lambda: client._state(0) == DOWN and client.health().ready, 30)
        assert client._state(1) == SERVING

        for _ in range(5):  # more than eject_after timeouts and lost hedges
            client._failed(1, "timed out: slower than a hedged copy elsewhere")
        assert client._state(1) == SERVING
        assert client.health().ready
        assert client.embed_texts(["a red circle"]).joint.shape[0] == 1

        for _ in range(3):  # no Health answer within its deadline, three times
            client._failed(1, "no Health answer within 1 s", probe=True)
        assert client._state(1) == EJECTED
        assert not client.health().ready
    finally:
        client.close()
        worker.stop()


def test_with_another_worker_serving_request_failures_still_eject(
    tmp_path: Path, tiny_bundle_dir: Path
) -> None:
    a, b = Worker(tmp_path / "a", tiny_bundle_dir), Worker(tmp_path / "b", tiny_bundle_dir)
    a.start()
    b.start()
    client = GrpcEmbeddingClient([a.endpoint, b.endpoint], worker_settings().encoder, policy=POLICY)
    try:
        wait_until(lambda: client.health().ready, 30)
        for _ in range(3):
            client._failed(1, "timed out: slower than a hedged copy elsewhere")
        assert client._state(1) == EJECTED
        assert client._state(0) == SERVING and client.health().ready
    finally:
        client.close()
        a.stop()
        b.stop()
