"""The encoder worker over real gRPC on loopback, on the tiny bundle's real ONNX towers."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from service.core.bundle.manifest import load_bundle
from service.core.config import BulkLaneSettings, EncoderSettings, LaneSettings
from service.core.errors import ErrorType
from service.encoder.engine import EncoderEngine
from service.rpc import codec
from service.rpc.proto import encoder_pb2 as pb
from service.rpc.status import RETRY_AFTER_KEY, TYPE_KEY, from_rpc_error
from service.worker.server import WorkerServer, thread_budget
from tests.service.worker.harness import (
    png_images,
    running_worker,
    sample,
    stub_for,
    worker_settings,
)
from tests.support import wait_until

RPCS = "clipsearch_worker_rpcs_total"
REJECTED = "clipsearch_encoder_rejected_total"


def images_request(images: list[bytes], lane: int = pb.LANE_INTERACTIVE) -> pb.EmbedRequest:
    return pb.EmbedRequest(lane=lane, images=pb.Images(items=images))


def texts_request(texts: list[str], lane: int = pb.LANE_INTERACTIVE) -> pb.EmbedRequest:
    return pb.EmbedRequest(lane=lane, texts=pb.Texts(items=texts))


def small_lane(max_queue: int) -> EncoderSettings:
    return EncoderSettings(interactive=LaneSettings(max_batch_size=4, max_queue=max_queue))


def test_info_and_health(tiny_bundle_dir: Path) -> None:
    with running_worker(tiny_bundle_dir) as (server, engine), stub_for(server) as stub:
        info = codec.info_from_proto(stub.Info(pb.InfoRequest(), timeout=10))
        assert info.bundle == "tiny-test@0.1.0" == engine.bundle.manifest.ref
        assert info.spaces == engine.info().spaces
        assert info.provider == engine.provider and info.max_text_tokens > 0
        assert info.batching == server.batcher.batching_info()
        health = stub.Health(pb.HealthRequest(), timeout=10)
        assert health.ready and health.bundle == info.bundle and not health.reason
        assert sample(server, RPCS, method="Info", code="OK") == 1
        assert sample(server, "clipsearch_worker_ready") == 1


def test_texts_and_images_with_a_corrupt_item(tiny_bundle_dir: Path) -> None:
    good = png_images(2)
    truncated = good[0][: len(good[0]) // 2]
    with running_worker(tiny_bundle_dir) as (server, engine), stub_for(server) as stub:
        texts = stub.Embed(texts_request(["a red circle", "two blue squares"]), timeout=30)
        result = codec.texts_from_proto(texts.texts)
        assert result.joint.shape == (2, 64) and result.sentence.shape[0] == 2
        assert result.tokens is not None and result.tokens.tolist()[0] > 0

        reply = stub.Embed(images_request([good[0], b"corrupt", truncated, good[1]]), timeout=30)
        items = reply.images.items
        assert [item.WhichOneof("result") for item in items] == ["row", "error", "error", "row"]
        assert items[1].error.type == ErrorType.unsupported_media.value
        assert reply.images.vectors.rows == 2
        values = codec.images_from_proto(reply.images)
        direct = engine.embed_images(good)
        np.testing.assert_array_equal(values[0].joint, direct[0])  # type: ignore[union-attr]
        np.testing.assert_array_equal(values[3].joint, direct[1])  # type: ignore[union-attr]
        assert sample(server, "clipsearch_worker_errors_total", type="unsupported_media") >= 1


def test_invalid_text_is_invalid_argument_with_its_exact_error(tiny_bundle_dir: Path) -> None:
    with running_worker(tiny_bundle_dir) as (server, _), stub_for(server) as stub:
        with pytest.raises(grpc.RpcError) as err:
            stub.Embed(texts_request(["fine", "   "]), timeout=30)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        exc = from_rpc_error(err.value)
        assert exc.type is ErrorType.invalid_input and exc.detail == {"index": 1}
        assert sample(server, RPCS, method="Embed", code="INVALID_ARGUMENT") == 1


def test_a_full_lane_answers_resource_exhausted_with_retry_after(tiny_bundle_dir: Path) -> None:
    settings = worker_settings(small_lane(max_queue=2))
    with running_worker(tiny_bundle_dir, settings) as (server, engine), stub_for(server) as stub:
        engine.hold()
        backlog = stub.Embed.future(images_request(png_images(2)), timeout=60)
        assert engine.entered.wait(30)
        with pytest.raises(grpc.RpcError) as err:
            stub.Embed(images_request(png_images(1, seed=1)), timeout=30)
        assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        meta = dict(err.value.trailing_metadata())
        assert meta[TYPE_KEY] == "overloaded" and meta[RETRY_AFTER_KEY] == "1"
        exc = from_rpc_error(err.value)
        assert exc.type is ErrorType.overloaded and exc.retry_after_s == 1.0
        assert exc.detail["lane"] == "interactive" and exc.detail["max_queue"] == 2
        engine.gate.set()
        assert len(backlog.result().images.items) == 2


def test_a_cancelled_call_drops_its_items_before_inference(tiny_bundle_dir: Path) -> None:
    with running_worker(tiny_bundle_dir) as (server, engine), stub_for(server) as stub:
        rows_before = engine.image_rows
        engine.hold()
        first = stub.Embed.future(images_request(png_images(1)), timeout=60)
        assert engine.entered.wait(30)
        queued = stub.Embed.future(images_request(png_images(3, seed=1)), timeout=60)
        wait_until(lambda: server.batcher.queue_depth("interactive") == 4)
        assert queued.cancel()
        wait_until(lambda: sample(server, "clipsearch_worker_abandoned_total", method="Embed") == 1)
        engine.gate.set()
        assert len(first.result().images.items) == 1
        labels = {"tower": "image", "lane": "interactive", "reason": "cancelled"}
        wait_until(lambda: sample(server, REJECTED, **labels) == 3)
        assert engine.image_rows - rows_before == 1  # the cancelled images never ran
        wait_until(lambda: server.batcher.queue_depth("interactive") == 0)
        assert stub.Health(pb.HealthRequest(), timeout=10).ready
        assert stub.Embed(images_request(png_images(1)), timeout=30).images.vectors.rows == 1


def test_the_client_deadline_is_the_request_deadline(tiny_bundle_dir: Path) -> None:
    with running_worker(tiny_bundle_dir) as (server, engine), stub_for(server) as stub:
        rows_before = engine.image_rows
        engine.hold()
        first = stub.Embed.future(images_request(png_images(1)), timeout=60)
        assert engine.entered.wait(30)
        late = stub.Embed.future(images_request(png_images(1, seed=1)), timeout=2.0)
        wait_until(lambda: server.batcher.queue_depth("interactive") == 2)  # queued, gate shut
        with pytest.raises(grpc.RpcError) as err:
            late.result()
        assert err.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert from_rpc_error(err.value).type is ErrorType.timeout

        # The worker saw the call end (its deadline, or the client's cancel racing it): the late
        # request is finished and its item dead, though still queued behind the gate.
        def ended() -> float:
            codes = ("DEADLINE_EXCEEDED", "CANCELLED")
            return sum(sample(server, RPCS, method="Embed", code=code) for code in codes)

        wait_until(lambda: ended() == 1)
        engine.gate.set()
        first.result()
        wait_until(lambda: server.batcher.queue_depth("interactive") == 0)
        assert engine.image_rows - rows_before == 1


def test_the_worker_deadline_maps_to_deadline_exceeded(tiny_bundle_dir: Path) -> None:
    # No client deadline: the worker's own request_timeout_s applies and is reported as timeout.
    settings = worker_settings(EncoderSettings(request_timeout_s=0.2))
    with running_worker(tiny_bundle_dir, settings) as (server, engine), stub_for(server) as stub:
        engine.hold()
        with pytest.raises(grpc.RpcError) as err:
            stub.Embed(images_request(png_images(1)))
        engine.gate.set()
        assert err.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert dict(err.value.trailing_metadata())[TYPE_KEY] == "timeout"
        assert from_rpc_error(err.value).type is ErrorType.timeout


def test_embed_stream_answers_every_request_in_order(tiny_bundle_dir: Path) -> None:
    good = png_images(3)
    requests = [
        texts_request(["a red circle"], pb.LANE_BULK),
        images_request([good[0], b"corrupt"], pb.LANE_BULK),
        texts_request(["   "], pb.LANE_BULK),  # its own error; the others still succeed
        images_request(good[1:], pb.LANE_BULK),
    ]
    with running_worker(tiny_bundle_dir) as (server, engine), stub_for(server) as stub:
        reply = stub.EmbedStream(iter(requests), timeout=60)
        kinds = [r.WhichOneof("output") for r in reply.results]
        assert kinds == ["texts", "images", "error", "images"]
        assert reply.results[2].error.type == "invalid_input"
        first = codec.images_from_proto(reply.results[1].images)
        assert first[1].type is ErrorType.unsupported_media  # type: ignore[union-attr]
        rest = codec.images_from_proto(reply.results[3].images)
        direct = engine.embed_images(good)
        for got, want in zip([first[0], *rest], direct, strict=True):
            np.testing.assert_array_equal(got.joint, want)  # type: ignore[union-attr]
        assert sample(server, RPCS, method="EmbedStream", code="OK") == 1


def test_a_stream_larger_than_its_lane_waits_for_its_own_requests(tiny_bundle_dir: Path) -> None:
    settings = worker_settings(
        EncoderSettings(bulk=BulkLaneSettings(max_batch_size=2, max_wait_ms=0, max_queue=2))
    )
    images = png_images(6)
    requests = [images_request(images[i : i + 2], pb.LANE_BULK) for i in range(0, 6, 2)]
    with running_worker(tiny_bundle_dir, settings) as (server, _), stub_for(server) as stub:
        reply = stub.EmbedStream(iter(requests), timeout=60)
        assert [r.images.vectors.rows for r in reply.results] == [2, 2, 2]


def test_stop_lets_calls_in_flight_finish(tiny_bundle_dir: Path) -> None:
    with running_worker(tiny_bundle_dir) as (server, engine), stub_for(server) as stub:
        engine.hold()
        in_flight = stub.Embed.future(images_request(png_images(1)), timeout=60)
        assert engine.entered.wait(30)
        stopper = threading.Thread(target=server.stop, kwargs={"grace": 30})
        stopper.start()
        wait_until(lambda: server.servicer.stopping)
        assert not server.servicer.health().ready
        engine.gate.set()
        assert in_flight.result().images.vectors.rows == 1
        stopper.join(30)
        assert not stopper.is_alive() and server.wait(0)


def test_metrics_are_served_on_the_metrics_port(tiny_bundle_dir: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = worker_settings()
    settings.worker.metrics_port = port
    with running_worker(tiny_bundle_dir, settings) as (server, _), stub_for(server) as stub:
        stub.Health(pb.HealthRequest(), timeout=10)
        body = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).text
    assert 'clipsearch_worker_rpcs_total{code="OK",method="Health"} 1.0' in body
    assert "clipsearch_encoder_queue_depth" in body


def test_thread_budget_covers_many_concurrent_callers() -> None:
    assert thread_budget(worker_settings(small_lane(2))) == 64
    assert thread_budget(worker_settings()) == 512
    assert thread_budget(worker_settings(small_lane(100_000))) == 1024


def test_a_taken_port_is_an_error_not_a_shared_port(tiny_bundle_dir: Path) -> None:
    with running_worker(tiny_bundle_dir) as (first, _):
        settings = worker_settings()
        settings.worker.port = first.port or 0
        with pytest.raises(OSError, match="cannot bind"), running_worker(tiny_bundle_dir, settings):
            pass


def test_64_concurrent_callers_all_reach_the_batcher(tiny_bundle_dir: Path) -> None:
    # Each waiting call holds a handler thread; with too few, calls would queue inside grpc
    # where no deadline, cancellation or batching applies. Held at the gate, all 64 must be
    # admitted by the batcher at the same time.
    image = png_images(1)
    with running_worker(tiny_bundle_dir) as (server, engine), stub_for(server) as stub:
        engine.hold()
        first = stub.Embed.future(images_request(image), timeout=120)
        assert engine.entered.wait(30)
        calls = [stub.Embed.future(images_request(image), timeout=120) for _ in range(64)]
        wait_until(lambda: server.batcher.queue_depth("interactive") == 65)
        engine.gate.set()
        assert all(c.result().images.vectors.rows == 1 for c in [first, *calls])


def test_until_warmed_up_health_says_why_and_embeds_are_unavailable(
    tiny_bundle_dir: Path,
) -> None:
    settings = worker_settings()
    server = WorkerServer(settings, EncoderEngine(load_bundle(tiny_bundle_dir), settings))
    server.start(warmup=False)
    try:
        with stub_for(server) as stub:
            health = stub.Health(pb.HealthRequest(), timeout=10)
            assert not health.ready and "warmed up" in health.reason
            with pytest.raises(grpc.RpcError) as err:
                stub.Embed(texts_request(["a red circle"]), timeout=10)
            assert err.value.code() is grpc.StatusCode.UNAVAILABLE  # clients try another worker
            assert stub.Info(pb.InfoRequest(), timeout=10).bundle == "tiny-test@0.1.0"
            server.engine.warmup()
            assert stub.Health(pb.HealthRequest(), timeout=10).ready
            assert stub.Embed(texts_request(["a red circle"]), timeout=30).texts.joint.rows == 1
    finally:
        server.stop(grace=0)
