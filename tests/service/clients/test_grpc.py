"""The gRPC client against real workers: congruent with the in-process client, round-robin, and
retries on UNAVAILABLE only."""

from __future__ import annotations

import json
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from service.clients.base import EmbeddingClient
from service.clients.grpc import GrpcEmbeddingClient
from service.clients.inprocess import InProcessEmbeddingClient
from service.core.bundle.manifest import load_bundle
from service.core.config import BulkLaneSettings, EncoderSettings, LaneSettings
from service.core.domain import Lane
from service.core.errors import ClipsearchError, ErrorType
from service.encoder.engine import EncoderEngine
from service.worker.server import WorkerServer
from tests.service.worker.harness import (
    png_images,
    running_worker,
    sample,
    worker_settings,
)
from tests.support import wait_until

RPCS = "clipsearch_worker_rpcs_total"
TINY_REF = "tiny-test@0.1.0"
OTHER_REF = "tiny-test@0.2.0"


def dead_endpoint() -> str:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def address(server: WorkerServer) -> str:
    return f"127.0.0.1:{server.port}"


@pytest.fixture
def worker(tiny_bundle_dir: Path) -> Iterator[WorkerServer]:
    with running_worker(tiny_bundle_dir) as (server, _):
        yield server


@pytest.fixture
def local(tiny_bundle_dir: Path) -> Iterator[InProcessEmbeddingClient]:
    settings = worker_settings()
    client = InProcessEmbeddingClient(EncoderEngine(load_bundle(tiny_bundle_dir), settings))
    client.warmup()
    yield client
    client.close()


@pytest.fixture
def remote(worker: WorkerServer) -> Iterator[GrpcEmbeddingClient]:
    client = GrpcEmbeddingClient([address(worker)], worker.settings.encoder)
    yield client
    client.close()


def raised(call: object, *args: object, **kwargs: object) -> ClipsearchError:
    with pytest.raises(ClipsearchError) as err:
        call(*args, **kwargs)  # type: ignore[operator]
    return err.value


def test_congruent_with_the_in_process_client(
    local: InProcessEmbeddingClient, remote: GrpcEmbeddingClient
) -> None:
    assert isinstance(remote, EmbeddingClient)
    assert remote.info() == local.info()
    texts = ["a red circle", "a small blue square left of a green triangle", "two stars"]
    # One request each, on an idle batcher: the same batch on both sides, so bit-exact.
    want, got = local.embed_texts(texts), remote.embed_texts(texts)
    np.testing.assert_array_equal(got.joint, want.joint)
    np.testing.assert_array_equal(got.sentence, want.sentence)
    assert want.tokens is not None and got.tokens is not None
    np.testing.assert_array_equal(got.tokens, want.tokens)
    # Bulk batches are sliced by the learned cost rate, so their composition (and the padding
    # of a text batch) depends on timing: equal to float precision, not bit-exact.
    bulk_want, bulk_got = (
        local.embed_texts(texts, lane="bulk"),
        remote.embed_texts(texts, lane="bulk"),
    )
    np.testing.assert_allclose(bulk_got.joint, bulk_want.joint, atol=1e-6)
    np.testing.assert_allclose(bulk_got.sentence, bulk_want.sentence, atol=1e-6)

    good = png_images(3)
    batch = [good[0], b"corrupt", good[1], good[0][:100], good[2]]
    for lane in ("interactive", "bulk"):
        want_i = local.embed_images(batch, lane=lane)  # type: ignore[arg-type]
        got_i = remote.embed_images(batch, lane=lane)  # type: ignore[arg-type]
        assert len(got_i) == len(want_i) == 5
        for g, w in zip(got_i, want_i, strict=True):
            if isinstance(w, ClipsearchError):
                assert isinstance(g, ClipsearchError)
                assert (g.type, g.message, g.detail) == (w.type, w.message, w.detail)
            else:
                # The tiny image tower is row-independent, so any batching gives these bits.
                assert isinstance(g, np.ndarray) and g.dtype == np.float32
                np.testing.assert_array_equal(g, w)
    assert remote.embed_images([]) == local.embed_images([]) == []
    assert remote.embed_texts([]).joint.shape == local.embed_texts([]).joint.shape


def test_errors_come_back_as_the_same_clipsearch_errors(
    local: InProcessEmbeddingClient, remote: GrpcEmbeddingClient
) -> None:
    for texts in (["ok", " "], ["x" * 5000], ["ok", 3]):
        want = raised(local.embed_texts, texts)
        got = raised(remote.embed_texts, texts)
        assert (got.type, got.message, got.detail) == (want.type, want.message, want.detail)
    want = raised(local.embed_texts, ["ok"], lane="nope")
    got = raised(remote.embed_texts, ["ok"], lane="nope")
    assert got.type is want.type is ErrorType.invalid_input
    [want_item] = local.embed_images(["not bytes"])  # type: ignore[list-item]
    [got_item] = remote.embed_images(["not bytes"])  # type: ignore[list-item]
    assert isinstance(got_item, ClipsearchError) and isinstance(want_item, ClipsearchError)
    assert (got_item.type, got_item.message) == (want_item.type, want_item.message)


def test_health_and_close(remote: GrpcEmbeddingClient) -> None:
    health = remote.health()
    assert health.ready and health.reason is None and remote.ready()
    remote.close()
    assert not remote.ready()
    assert raised(remote.embed_texts, ["a"]).type is ErrorType.unavailable


def test_round_robin_spreads_calls_over_workers(tiny_bundle_dir: Path) -> None:
    with running_worker(tiny_bundle_dir) as (a, _), running_worker(tiny_bundle_dir) as (b, _):
        client = GrpcEmbeddingClient([address(a), address(b)], a.settings.encoder)
        for _ in range(4):
            client.embed_texts(["a red circle"])
        client.close()
        assert sample(a, RPCS, method="Embed", code="OK") == 2
        assert sample(b, RPCS, method="Embed", code="OK") == 2


def test_unavailable_moves_on_to_the_next_worker(worker: WorkerServer) -> None:
    dead = dead_endpoint()
    client = GrpcEmbeddingClient([dead, address(worker)], EncoderSettings(retries=1))
    for _ in range(4):  # both orders: the dead port first, and the live one first
        assert client.embed_texts(["a red circle"]).joint.shape == (1, 64)
    assert client.info().bundle == "tiny-test@0.1.0"
    health = client.health()
    assert health.ready and health.reason is not None and dead in health.reason
    assert sample(worker, RPCS, method="Embed", code="OK") == 4
    client.close()

    alone = GrpcEmbeddingClient([dead], EncoderSettings(retries=2))
    assert raised(alone.embed_texts, ["a"]).type is ErrorType.unavailable
    assert not alone.health().ready
    assert "no encoder worker is ready" in (alone.health().reason or "")
    assert raised(alone.info).type is ErrorType.unavailable
    with pytest.raises(ClipsearchError, match="within"):
        alone.wait_ready(0.3, interval_s=0.05)
    alone.close()


def test_overloaded_is_never_retried(tiny_bundle_dir: Path) -> None:
    settings = worker_settings(
        EncoderSettings(retries=3, interactive=LaneSettings(max_batch_size=4, max_queue=1))
    )
    with running_worker(tiny_bundle_dir, settings) as (server, engine):
        client = GrpcEmbeddingClient([address(server)], settings.encoder)
        engine.hold()
        backlog = GrpcEmbeddingClient([address(server)], settings.encoder)
        done = threading.Event()

        def fill() -> None:
            backlog.embed_images(png_images(1))
            done.set()

        threading.Thread(target=fill).start()
        assert engine.entered.wait(30)
        err = raised(client.embed_images, png_images(1, seed=1))
        assert err.type is ErrorType.overloaded and err.retry_after_s == 1.0
        assert sample(server, RPCS, method="Embed", code="RESOURCE_EXHAUSTED") == 1
        engine.gate.set()
        assert done.wait(30)
        client.close()
        backlog.close()


def test_bulk_images_stream_in_batch_sized_requests(tiny_bundle_dir: Path) -> None:
    settings = worker_settings(EncoderSettings(bulk=BulkLaneSettings(max_batch_size=3)))
    images = png_images(8)
    images[4] = b"corrupt"
    with running_worker(tiny_bundle_dir, settings) as (server, engine):
        client = GrpcEmbeddingClient([address(server)], settings.encoder)
        results = client.embed_images(images, lane="bulk")
        client.close()
        assert sample(server, RPCS, method="EmbedStream", code="OK") == 1
        direct = engine.embed_images(images)
    for got, want in zip(results, direct, strict=True):
        if isinstance(want, ClipsearchError):
            assert isinstance(got, ClipsearchError) and got.type is want.type
        else:
            np.testing.assert_array_equal(got, want)


def other_version(bundle: Path, tmp_path: Path) -> Path:
    """A copy of ``bundle`` that says it is another version."""
    other = tmp_path / "other"
    shutil.copytree(bundle, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["version"] = "0.2.0"
    (other / "manifest.json").write_text(json.dumps(manifest))
    return other


def test_workers_with_different_bundles_each_get_their_own_bundles_requests(
    tiny_bundle_dir: Path, tmp_path: Path
) -> None:
    other = other_version(tiny_bundle_dir, tmp_path)
    with running_worker(tiny_bundle_dir) as (a, _), running_worker(other) as (b, _):
        client = GrpcEmbeddingClient([address(a), address(b)], EncoderSettings())
        # The default is the first worker's default; every bundle served is listed.
        assert client.info().bundle == "tiny-test@0.1.0"
        assert [(x.ref, x.default) for x in client.info().bundles] == [
            ("tiny-test@0.1.0", True),
            ("tiny-test@0.2.0", False),
        ]
        assert client.info(bundle="tiny-test@0.2.0").bundle == "tiny-test@0.2.0"
        for _ in range(3):
            client.embed_texts(["a red circle"])  # the default: worker a only
        client.embed_texts(["a red circle"], bundle="tiny-test@0.2.0")
        client.embed_images(png_images(1), bundle="tiny-test@0.2.0")
        assert sample(a, RPCS, method="Embed", code="OK") == 3
        assert sample(b, RPCS, method="Embed", code="OK") == 2
        err = raised(client.embed_texts, ["a"], bundle="tiny-test@9.9.9")
        assert err.type is ErrorType.not_found
        assert "tiny-test@0.1.0" in err.message and "tiny-test@0.2.0" in err.message
        assert err.detail["served"] == ["tiny-test@0.1.0", "tiny-test@0.2.0"]
        assert sample(a, RPCS, method="Embed", code="OK") == 3  # refused before any call
        client.close()


def test_a_worker_that_comes_up_later_with_another_bundle_joins_for_that_bundle(
    tiny_bundle_dir: Path, tmp_path: Path
) -> None:
    other = other_version(tiny_bundle_dir, tmp_path)
    late = dead_endpoint()
    settings = worker_settings()
    settings.worker.port = int(late.rsplit(":", 1)[1])
    with running_worker(tiny_bundle_dir) as (a, _):
        client = GrpcEmbeddingClient([address(a), late], EncoderSettings())
        assert client.info().bundle == "tiny-test@0.1.0"  # only a answers yet
        assert raised(client.embed_texts, ["a"], bundle="tiny-test@0.2.0").type is (
            ErrorType.not_found
        )
        with running_worker(other, settings) as (b, _):
            # The channel reconnects after its backoff; until then the worker looks down.
            wait_until(
                lambda: (
                    client.health().detail["endpoints"][late].get("bundles") == ["tiny-test@0.2.0"]
                )
            )
            health = client.health()
            # It serves another bundle only: not counted against readiness, not "down".
            assert health.ready and health.reason is None
            assert health.detail["endpoints"][late]["serves_default"] is False
            # Its bundle's details come from its Info, asked in the background.
            wait_until(lambda: [b.ref for b in client.bundles()] == [TINY_REF, OTHER_REF])
            got = client.embed_texts(["a red circle"], bundle="tiny-test@0.2.0")
            assert got.joint.shape == (1, 64)
            assert sample(b, RPCS, method="Embed", code="OK") == 1
        client.close()


@pytest.mark.parametrize("lane", ["interactive", "bulk"])
def test_visual_features_and_labels_cross_the_wire(
    tiny_labelled_bundle_dir: Path, lane: Lane
) -> None:
    """A bundle that names classes: the worker's answer is the engine's, field for field."""
    images = png_images(5)
    images[2] = b"corrupt"
    with running_worker(tiny_labelled_bundle_dir) as (server, engine):
        client = GrpcEmbeddingClient([address(server)], worker_settings().encoder)
        try:
            assert client.info().spaces["visual"] == engine.bundle.manifest.spaces.visual
            results = client.encode_images(images, lane=lane)
        finally:
            client.close()
        direct = engine.encode_images(images)
    for got, want in zip(results, direct, strict=True):
        if isinstance(want, ClipsearchError):
            assert isinstance(got, ClipsearchError) and got.type is want.type
            continue
        assert not isinstance(got, ClipsearchError)
        assert got.visual is not None and want.visual is not None and want.labels
        np.testing.assert_array_equal(got.joint, want.joint)
        np.testing.assert_array_equal(got.visual, want.visual)
        assert [(lb.name, lb.broader) for lb in got.labels] == [
            (lb.name, lb.broader) for lb in want.labels
        ]
        np.testing.assert_allclose(
            [lb.score for lb in got.labels], [lb.score for lb in want.labels], rtol=1e-6
        )


def test_the_client_routes_each_bundle_to_the_workers_that_serve_it(
    tiny_bundle_dir: Path, tiny_narrow_bundle_dir: Path
) -> None:
    from tests.service.worker.test_bundles import NARROW, TINY, two_bundle_worker

    texts = ["a red circle", "two blue squares"]
    images = png_images(2)
    with (
        two_bundle_worker(tiny_bundle_dir) as a,
        two_bundle_worker(tiny_narrow_bundle_dir, tiny_bundle_dir) as b,
    ):
        client = GrpcEmbeddingClient([address(a), address(b)], EncoderSettings())
        assert [x.ref for x in client.bundles()] == []  # nothing asked yet
        assert client.info().bundle == TINY  # the first worker's default
        assert [(x.ref, x.default) for x in client.info().bundles] == [
            (TINY, True),
            (NARROW, False),
        ]
        assert client.info(bundle=NARROW).spaces["image"] == 32
        for ref, folder, dim in ((TINY, tiny_bundle_dir, 64), (NARROW, tiny_narrow_bundle_dir, 32)):
            alone = EncoderEngine(load_bundle(folder), worker_settings())
            got = client.embed_texts(texts, bundle=ref)
            np.testing.assert_allclose(got.joint, alone.embed_texts(texts).joint, atol=1e-6)
            for lane in ("interactive", "bulk"):
                vectors = client.embed_images(images, lane=lane, bundle=ref)  # type: ignore[arg-type]
                for g, w in zip(vectors, alone.embed_images(images), strict=True):
                    assert isinstance(g, np.ndarray) and g.shape == (dim,)
                    np.testing.assert_allclose(g, w, atol=1e-6)  # type: ignore[arg-type]
        a_calls = sample(a, RPCS, method="Embed", code="OK")
        b_calls = sample(b, RPCS, method="Embed", code="OK")
        for _ in range(4):  # only b serves the narrow bundle
            assert client.embed_texts(texts, bundle=NARROW).joint.shape == (2, 32)
        assert sample(a, RPCS, method="Embed", code="OK") == a_calls
        assert sample(b, RPCS, method="Embed", code="OK") == b_calls + 4
        for _ in range(4):  # both serve the default: round-robin, b told which bundle
            assert client.embed_texts(texts).joint.shape == (2, 64)
        assert sample(a, RPCS, method="Embed", code="OK") == a_calls + 2
        assert sample(b, RPCS, method="Embed", code="OK") == b_calls + 6
        err = raised(client.embed_texts, texts, bundle="tiny-test@9.9.9")
        assert err.type is ErrorType.not_found
        assert err.detail == {"bundle": "tiny-test@9.9.9", "served": [NARROW, TINY]}
        # b drops the narrow bundle: no worker serves it any more, and the client says so.
        b.registry.set_default(TINY)
        b.registry.drop(NARROW)
        assert raised(client.embed_texts, texts, bundle=NARROW).type is ErrorType.not_found
        # health() answers from the background watch's cache: the next probe sees the drop.
        wait_until(lambda: client.health().detail["endpoints"][address(b)]["bundles"] == [TINY])
        assert client.health().ready
        assert raised(client.embed_texts, texts, bundle=NARROW).type is ErrorType.not_found
        client.close()


def test_a_worker_that_dropped_a_bundle_hands_its_requests_to_one_that_serves_it(
    tiny_bundle_dir: Path, tiny_narrow_bundle_dir: Path
) -> None:
    from tests.service.worker.test_bundles import NARROW, two_bundle_worker

    with (
        two_bundle_worker(tiny_bundle_dir, tiny_narrow_bundle_dir) as a,
        two_bundle_worker(tiny_bundle_dir, tiny_narrow_bundle_dir) as b,
    ):
        client = GrpcEmbeddingClient([address(a), address(b)], EncoderSettings(retries=0))
        assert client.embed_texts(["a"], bundle=NARROW).joint.shape == (1, 32)  # routes learned
        b.registry.drop(NARROW)
        for _ in range(4):  # retries=0: moving on after NOT_FOUND is not a retry of a failure
            assert client.embed_texts(["a"], bundle=NARROW).joint.shape == (1, 32)
        assert sample(b, RPCS, method="Embed", code="NOT_FOUND") == 1  # then forgotten there
        client.close()
