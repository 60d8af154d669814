"""One gRPC worker serving two real tiny bundles of different dimensions over loopback: each
request embedded by the bundle it names, Info/Health list what is served, bundles loaded and
dropped while the other bundle's requests run."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client import generate_latest

from service.core.bundle.manifest import load_bundle
from service.encoder.engine import EncoderEngine
from service.encoder.registry import BundleRegistry
from service.rpc import codec
from service.rpc.proto import encoder_pb2 as pb
from service.worker.server import WorkerServer
from tests.service.worker.harness import png_images, sample, stub_for, worker_settings
from tests.support import wait_until

TINY = "tiny-test@0.1.0"
NARROW = "tiny-narrow@0.1.0"
TEXTS = ["a red circle", "two blue squares"]


@contextmanager
def two_bundle_worker(*bundle_dirs: Path) -> Iterator[WorkerServer]:
    settings = worker_settings()
    registry = BundleRegistry(settings)
    for folder in bundle_dirs:
        registry.add(EncoderEngine(load_bundle(folder), settings))
    server = WorkerServer(settings, registry=registry)
    server.start()
    try:
        yield server
    finally:
        server.stop(grace=0)


@pytest.fixture
def worker(tiny_bundle_dir: Path, tiny_narrow_bundle_dir: Path) -> Iterator[WorkerServer]:
    with two_bundle_worker(tiny_bundle_dir, tiny_narrow_bundle_dir) as server:
        yield server


def texts_request(bundle: str = "", lane: int = pb.LANE_INTERACTIVE) -> pb.EmbedRequest:
    return pb.EmbedRequest(lane=lane, texts=pb.Texts(items=TEXTS), bundle=bundle)


def images_request(images: list[bytes], bundle: str = "") -> pb.EmbedRequest:
    return pb.EmbedRequest(lane=pb.LANE_BULK, images=pb.Images(items=images), bundle=bundle)


def test_info_and_health_list_the_bundles_served(worker: WorkerServer) -> None:
    with stub_for(worker) as stub:
        info = stub.Info(pb.InfoRequest(), timeout=30)
        assert info.bundle == TINY and info.spaces["image"] == 64
        listed = [(b.name, b.version, dict(b.spaces), b.domain, b.is_default) for b in info.bundles]
        assert listed == [
            ("tiny-test", "0.1.0", {"image": 64, "caption": 64, "description": 128}, "", True),
            (
                "tiny-narrow",
                "0.1.0",
                {"image": 32, "caption": 32, "description": 128},
                "test colour layouts (32-dim tiny bundle)",
                False,
            ),
        ]
        narrow = stub.Info(pb.InfoRequest(bundle=NARROW), timeout=30)
        assert narrow.bundle == NARROW and narrow.spaces["image"] == 32
        assert json.loads(narrow.batching_json)["interactive"]["max_batch_size"] >= 1
        health = stub.Health(pb.HealthRequest(), timeout=30)
        assert health.ready and health.bundle == TINY and list(health.bundles) == [TINY, NARROW]
        assert json.loads(health.detail_json)["bundles"] == {
            TINY: {"ready": True},
            NARROW: {"ready": True},
        }
        decoded = codec.info_from_proto(info)
        assert [b.ref for b in decoded.bundles] == [TINY, NARROW]
        assert decoded.bundles[1].domain == "test colour layouts (32-dim tiny bundle)"


def test_each_request_is_embedded_by_the_bundle_it_names(
    worker: WorkerServer, tiny_bundle_dir: Path, tiny_narrow_bundle_dir: Path
) -> None:
    images = png_images(3)
    images[1] = b"corrupt"
    with stub_for(worker) as stub:
        for ref, folder, dim in ((TINY, tiny_bundle_dir, 64), (NARROW, tiny_narrow_bundle_dir, 32)):
            alone = EncoderEngine(load_bundle(folder), worker.settings)
            want = alone.embed_texts(TEXTS)
            for lane in (pb.LANE_INTERACTIVE, pb.LANE_BULK):
                reply = stub.Embed(texts_request(ref, lane), timeout=30)
                got = codec.texts_from_proto(reply.texts)
                assert got.joint.shape == (2, dim)
                np.testing.assert_allclose(got.joint, want.joint, rtol=1e-5, atol=1e-6)
            reply = stub.Embed(images_request(images, ref), timeout=30)
            got_images = codec.images_from_proto(reply.images)
            for g, w in zip(got_images, alone.embed_images(images), strict=True):
                if isinstance(w, np.ndarray):
                    assert not isinstance(g, Exception) and g.joint.shape == (dim,)
                    np.testing.assert_allclose(g.joint, w, rtol=1e-5, atol=1e-6)
                else:
                    assert isinstance(g, Exception)
            # A stream of requests to this bundle.
            stream = stub.EmbedStream(iter([texts_request(ref), texts_request(ref)]), timeout=30)
            assert [codec.texts_from_proto(r.texts).joint.shape for r in stream.results] == [
                (2, dim),
                (2, dim),
            ]
        # No bundle named: the default.
        reply = stub.Embed(texts_request(), timeout=30)
        assert codec.texts_from_proto(reply.texts).joint.shape == (2, 64)


def test_an_unknown_bundle_is_not_found_naming_the_bundles_served(worker: WorkerServer) -> None:
    with stub_for(worker) as stub:
        with pytest.raises(grpc.RpcError) as err:
            stub.Embed(texts_request("tiny-test@9.9.9"), timeout=30)
        assert err.value.code() is grpc.StatusCode.NOT_FOUND
        assert TINY in (err.value.details() or "") and NARROW in (err.value.details() or "")
        with pytest.raises(grpc.RpcError) as err:
            stub.Info(pb.InfoRequest(bundle="nope@1"), timeout=30)
        assert err.value.code() is grpc.StatusCode.NOT_FOUND
        assert stub.Health(pb.HealthRequest(), timeout=30).ready  # nothing else changed
    assert sample(worker, "clipsearch_worker_errors_total", type="not_found") == 2


def test_metrics_are_labelled_by_bundle(worker: WorkerServer) -> None:
    with stub_for(worker) as stub:
        stub.Embed(texts_request(TINY), timeout=30)
        stub.Embed(texts_request(NARROW), timeout=30)
        stub.Embed(texts_request(NARROW), timeout=30)
    for ref, n in ((TINY, 2), (NARROW, 4)):
        labels = {"bundle": ref, "tower": "text", "lane": "interactive"}
        assert sample(worker, "clipsearch_encoder_items_total", **labels) == n
    body = generate_latest(worker.registry.metrics.registry).decode()
    for ref in (TINY, NARROW):
        assert f'clipsearch_encoder_provider_info{{bundle="{ref}"' in body


def test_a_bundle_loaded_and_dropped_while_the_other_serves(
    tiny_bundle_dir: Path, tiny_narrow_bundle_dir: Path
) -> None:
    with two_bundle_worker(tiny_bundle_dir) as server, stub_for(server) as stub:
        stop = threading.Event()
        errors: list[BaseException] = []
        calls = [0]

        def hammer() -> None:
            images = png_images(2)
            while not stop.is_set():
                try:
                    reply = stub.Embed(texts_request(), timeout=30)
                    assert codec.texts_from_proto(reply.texts).joint.shape == (2, 64)
                    stream = stub.EmbedStream(iter([images_request(images, TINY)] * 2), timeout=30)
                    assert len(stream.results) == 2
                    calls[0] += 1
                except BaseException as exc:  # every failure is the test's finding
                    errors.append(exc)
                    return

        threads = [threading.Thread(target=hammer) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            server.registry.load(load_bundle(tiny_narrow_bundle_dir))
            assert list(stub.Health(pb.HealthRequest(), timeout=30).bundles) == [TINY, NARROW]
            reply = stub.Embed(texts_request(NARROW), timeout=30)
            assert codec.texts_from_proto(reply.texts).joint.shape == (2, 32)
            server.registry.drop(NARROW)
            with pytest.raises(grpc.RpcError) as err:
                stub.Embed(texts_request(NARROW), timeout=30)
            assert err.value.code() is grpc.StatusCode.NOT_FOUND
            before = calls[0]
            wait_until(lambda: calls[0] > before or bool(errors))  # the default answers on
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        assert not errors, errors
        assert list(stub.Health(pb.HealthRequest(), timeout=30).bundles) == [TINY]
