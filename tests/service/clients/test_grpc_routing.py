"""Hedging and retrying elsewhere against real workers on loopback (issue 19): one worker's image
tower is held at a gate, so its calls hang deterministically while the other answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.clients.grpc import GrpcEmbeddingClient, HealthPolicy
from service.core.config import EncoderSettings
from tests.service.clients.test_grpc import RPCS, address
from tests.service.worker.harness import png_images, running_worker, sample
from tests.support import wait_until


def counter(client: GrpcEmbeddingClient, name: str, **labels: str) -> float:
    return client.metrics.registry.get_sample_value(name, labels) or 0.0


def test_a_slow_interactive_call_is_hedged_to_the_other_worker_and_the_first_answer_wins(
    tiny_bundle_dir: Path,
) -> None:
    policy = HealthPolicy(hedge_initial_s=0.2, hedge_floor_s=0.2)
    with (
        running_worker(tiny_bundle_dir) as (stuck, stuck_engine),
        running_worker(tiny_bundle_dir) as (good, _),
    ):
        # The stuck worker first: a fresh client's first call goes to it.
        client = GrpcEmbeddingClient(
            [address(stuck), address(good)], EncoderSettings(), policy=policy
        )
        client.wait_ready(30)
        stuck_engine.hold()
        try:
            got = client.embed_images(png_images(1), lane="interactive")
            assert isinstance(got[0], np.ndarray) and got[0].shape == (64,)
            assert stuck_engine.entered.is_set()  # the first copy did reach the stuck worker
            assert (
                counter(client, "clipsearch_encoder_client_hedges_total", endpoint=address(good))
                == 1
            )
            assert sample(good, RPCS, method="Embed", code="OK") == 1
            delay = counter(client, "clipsearch_encoder_client_hedge_delay_seconds", kind="images")
            assert delay == 0.2  # the initial delay: no latencies learned yet
            # The loser is cancelled, not left to run out its 30 s: its worker sees the call end.
            wait_until(
                lambda: sample(stuck, "clipsearch_worker_abandoned_total", method="Embed") == 1
            )
        finally:
            stuck_engine.gate.set()
            client.close()


def test_a_deadline_exceeded_with_time_left_is_retried_on_another_worker(
    tiny_bundle_dir: Path,
) -> None:
    no_hedges = HealthPolicy(hedge_budget=0.0, hedge_burst=0.0)
    settings = EncoderSettings(request_timeout_s=6.0, retries=1)  # each try gets 3 s
    with (
        running_worker(tiny_bundle_dir) as (stuck, stuck_engine),
        running_worker(tiny_bundle_dir) as (good, _),
    ):
        client = GrpcEmbeddingClient([address(stuck), address(good)], settings, policy=no_hedges)
        client.wait_ready(30)
        stuck_engine.hold()
        try:
            got = client.embed_images(png_images(1), lane="interactive")
            assert isinstance(got[0], np.ndarray)
            assert (
                counter(client, "clipsearch_encoder_client_hedges_total", endpoint=address(good))
                == 0
            )
            retried = counter(
                client,
                "clipsearch_encoder_client_retries_total",
                endpoint=address(stuck),
                reason="DEADLINE_EXCEEDED",
            )
            assert retried == 1
            assert sample(good, RPCS, method="Embed", code="OK") == 1
            # One timeout is a strike, not yet an ejection.
            assert client.health().detail["endpoints"][address(stuck)]["state"] == "serving"
        finally:
            stuck_engine.gate.set()
            client.close()
