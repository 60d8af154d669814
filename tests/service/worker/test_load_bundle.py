"""``LoadBundle`` / ``UnloadBundle`` on real encoder workers over loopback: a bundle loaded at run
time by spec (folder, name), checksums verified by the same resolver an in-process gateway uses,
bad input a clear gRPC status carrying the same error type; only run-time bundles unload; and the
gRPC client loads on every worker or on none."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path

import grpc
import pytest

from clipsearch.bootstrap import build_registry, rollout_bundle
from service.clients.grpc import GrpcEmbeddingClient
from service.core.config import Settings
from service.core.errors import ClipsearchError, ErrorType
from service.rpc.proto import encoder_pb2 as pb
from service.rpc.status import from_rpc_error
from service.worker.server import WorkerServer
from tests.service.admin.conftest import CARD, carded_bundle
from tests.service.worker.harness import stub_for, worker_settings

TINY = "tiny-test@0.1.0"
NARROW = "tiny-narrow@0.1.0"


@contextmanager
def worker(tmp: Path, bundle: Path, *, loads: bool = True) -> Iterator[WorkerServer]:
    settings: Settings = worker_settings().model_copy(
        update={"bundle": str(bundle), "data_dir": tmp}
    )
    server = WorkerServer(
        settings,
        registry=build_registry(settings),
        resolve_bundle=partial(rollout_bundle, settings) if loads else None,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop(grace=0)


def _refused(call: grpc.RpcError) -> tuple[grpc.StatusCode, ClipsearchError]:
    return call.code(), from_rpc_error(call)


@pytest.fixture
def narrow(tmp_path: Path, tiny_narrow_bundle_dir: Path) -> Path:
    return carded_bundle(tiny_narrow_bundle_dir, tmp_path / "narrow")


def test_load_embed_and_unload_a_bundle_at_run_time(
    tmp_path: Path, tiny_bundle_dir: Path, narrow: Path
) -> None:
    with worker(tmp_path / "w", tiny_bundle_dir) as server, stub_for(server) as stub:
        loaded = stub.LoadBundle(pb.LoadBundleRequest(spec=str(narrow)), timeout=120)
        assert loaded.loaded and (loaded.bundle.name, loaded.bundle.version) == (
            "tiny-narrow",
            "0.1.0",
        )
        assert loaded.bundle.intended_use == CARD["intended_use"]
        assert loaded.bundle.spaces["image"] == 32 and not loaded.bundle.is_default
        info = stub.Info(pb.InfoRequest(), timeout=30)
        listed = {f"{b.name}@{b.version}": b.intended_use for b in info.bundles}
        assert listed == {TINY: "", NARROW: CARD["intended_use"]}
        reply = stub.Embed(
            pb.EmbedRequest(texts=pb.Texts(items=["a red circle"]), bundle=NARROW), timeout=30
        )
        assert (reply.texts.joint.rows, reply.texts.joint.dim) == (1, 32)
        # Served already, by ref or by name: nothing changes.
        for spec in (NARROW, "tiny-narrow", str(narrow)):
            again = stub.LoadBundle(pb.LoadBundleRequest(spec=spec), timeout=60)
            assert not again.loaded and again.bundle.name == "tiny-narrow", spec
        # Configured bundles stay; the run-time one goes, and requests to it are NOT_FOUND.
        with pytest.raises(grpc.RpcError) as configured:
            stub.UnloadBundle(pb.UnloadBundleRequest(bundle=TINY), timeout=30)
        assert _refused(configured.value)[0] is grpc.StatusCode.ALREADY_EXISTS
        stub.UnloadBundle(pb.UnloadBundleRequest(bundle=NARROW, grace_s=1.0), timeout=30)
        assert server.registry.refs() == [TINY]
        with pytest.raises(grpc.RpcError) as gone:
            stub.Embed(pb.EmbedRequest(texts=pb.Texts(items=["x"]), bundle=NARROW), timeout=30)
        assert gone.value.code() is grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as twice:
            stub.UnloadBundle(pb.UnloadBundleRequest(bundle=NARROW), timeout=30)
        assert twice.value.code() is grpc.StatusCode.NOT_FOUND


def test_bad_load_requests_are_clear_statuses_and_change_nothing(
    tmp_path: Path, tiny_bundle_dir: Path, narrow: Path
) -> None:
    corrupt = tmp_path / "corrupt"
    shutil.copytree(narrow, corrupt)
    (corrupt / "text.onnx").write_bytes(b"not the model it was")
    with worker(tmp_path / "w", tiny_bundle_dir) as server, stub_for(server) as stub:
        cases = [
            ("no-such-bundle", grpc.StatusCode.NOT_FOUND, ErrorType.not_found, "no-such-bundle"),
            (str(corrupt), grpc.StatusCode.INVALID_ARGUMENT, ErrorType.invalid_input, "checksum"),
            (" ", grpc.StatusCode.INVALID_ARGUMENT, ErrorType.invalid_input, "spec"),
        ]
        for spec, code, kind, words in cases:
            with pytest.raises(grpc.RpcError) as refused:
                stub.LoadBundle(pb.LoadBundleRequest(spec=spec), timeout=60)
            got_code, error = _refused(refused.value)
            assert (got_code, error.type) == (code, kind), (spec, error)
            assert words in error.message, error.message
        assert server.registry.refs() == [TINY]
    with worker(tmp_path / "fixed", tiny_bundle_dir, loads=False) as fixed, stub_for(fixed) as stub:
        with pytest.raises(grpc.RpcError) as cannot:
            stub.LoadBundle(pb.LoadBundleRequest(spec=str(narrow)), timeout=60)
        code, error = _refused(cannot.value)
        assert code is grpc.StatusCode.INVALID_ARGUMENT and "cannot load bundles" in error.message
        assert fixed.registry.refs() == [TINY]


def test_the_client_loads_on_every_worker_or_on_none(
    tmp_path: Path, tiny_bundle_dir: Path, narrow: Path
) -> None:
    settings = worker_settings()
    with ExitStack() as stack:
        able = stack.enter_context(worker(tmp_path / "a", tiny_bundle_dir))
        unable = stack.enter_context(worker(tmp_path / "b", tiny_bundle_dir, loads=False))
        client = GrpcEmbeddingClient([f"127.0.0.1:{able.port}"], settings.encoder)
        mixed = GrpcEmbeddingClient(
            [f"127.0.0.1:{able.port}", f"127.0.0.1:{unable.port}"], settings.encoder
        )
        stack.callback(client.close)
        stack.callback(mixed.close)
        # One worker refuses: the other loaded it, and unloads it again.
        with pytest.raises(ClipsearchError) as refused:
            mixed.load_bundle(str(narrow))
        assert refused.value.type is ErrorType.invalid_input
        assert able.registry.refs() == [TINY] == unable.registry.refs()
        # One worker that can: loaded, routed to at once, listed with its card; then unloaded.
        served, loaded = client.load_bundle(str(narrow))
        assert (served.ref, loaded, served.intended_use) == (NARROW, True, CARD["intended_use"])
        assert client.embed_texts(["a red circle"], bundle=NARROW).joint.shape == (1, 32)
        assert [b.ref for b in client.info().bundles] == [TINY, NARROW]
        assert client.load_bundle("tiny-narrow")[1] is False
        client.drop_bundle(NARROW, grace_s=1.0)
        assert able.registry.refs() == [TINY]
        assert [b.ref for b in client.info().bundles] == [TINY]
        client.drop_bundle(TINY)  # configured: the worker keeps it
        assert able.registry.refs() == [TINY]
