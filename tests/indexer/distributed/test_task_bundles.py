"""The bundles of a Celery indexing task during a model rollout, on real parts: the in-process
encoder on the tiny bundle (ONNX Runtime), tiny-narrow loaded from the spec the task carries, a
private Redis, the real writer and Qdrant Edge behind the versioned store."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clipsearch.bootstrap import build_embedder
from indexer.distributed import batches
from indexer.distributed.bundles import SPEC_KEY, TaskBundles, parse_task_bundles, task_bundles
from indexer.distributed.stream import PointStream
from indexer.distributed.writer import Writer
from service.clients.base import EmbeddingClient
from service.core.bundle.manifest import load_bundle
from service.core.config import BrokerSettings, Settings, SourcesSettings
from service.core.domain import collection_dims, point_id
from service.core.errors import ClipsearchError, ErrorType
from service.store.edge import QdrantEdgeStore
from service.store.versions import VersionedStore
from tests.indexer.distributed.test_batches import write_images
from tests.redis_server import fresh_stream
from tests.support import wait_until

COLL = "media"


@pytest.fixture()
def settings(tmp_path: Path, tiny_bundle_dir: Path, redis_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        collection=COLL,
        bundle=str(tiny_bundle_dir),
        broker=BrokerSettings(url=redis_url, writer_block_ms=100, claim_idle_ms=60_000),
        sources=SourcesSettings(allowed_roots=[tmp_path / "src"]),
    )


@pytest.fixture()
def embedder(settings: Settings) -> Iterator[EmbeddingClient]:
    client = build_embedder(settings, wait_for_workers=False)
    yield client
    client.close()


def _served(embedder: EmbeddingClient) -> list[str]:
    return [b.ref for b in embedder.info().bundles]


def _resolve(spec: str) -> Any:
    return load_bundle(Path(spec))


def test_a_task_of_a_rollout_reaches_both_versions_once_even_delivered_twice(
    settings: Settings,
    embedder: EmbeddingClient,
    tiny_bundle_dir: Path,
    tiny_narrow_bundle_dir: Path,
    tmp_path: Path,
) -> None:
    tiny, narrow = (load_bundle(d).manifest for d in (tiny_bundle_dir, tiny_narrow_bundle_dir))
    store = VersionedStore(QdrantEdgeStore(tmp_path / "store"))
    writer = None
    try:
        current = store.ensure(COLL, collection_dims(tiny.spaces.model_dump()), tiny.ref)
        spec = str(tiny_narrow_bundle_dir)
        dims = collection_dims(narrow.spaces.model_dump())
        building = store.begin(COLL, dims, narrow.ref, {SPEC_KEY: spec})
        # What the gateway sends with a job now: both bundles, the new one with its spec.
        sent = task_bundles(store, COLL)
        assert sent == [{"ref": tiny.ref, "spec": None}, {"ref": narrow.ref, "spec": spec}]

        bundles = TaskBundles(lambda: embedder, _resolve)
        assert narrow.ref not in _served(embedder)
        refs = bundles.ensure(parse_task_bundles(sent))
        assert refs == [tiny.ref, narrow.ref] and narrow.ref in _served(embedder)

        images = write_images(tmp_path / "src", 3)
        entries = [{"uri": str(p)} for p in images]
        with fresh_stream(settings) as stream:
            for _ in range(2):  # Celery delivers a task at least once: here twice
                outcome = batches.index_batch(
                    "job",
                    COLL,
                    entries,
                    embedder=embedder,
                    stream=stream,
                    settings=settings,
                    bundles=refs,
                )
                assert outcome.sent == [str(p) for p in images] and outcome.failed == []
            assert settings.broker.url
            writer = Writer(settings.broker.url, store, settings, consumer="w")
            wait_until(lambda: _stream_empty(stream), 60)
        ids = [point_id(COLL, p.as_uri()) for p in images]
        for version, bundle in ((current, tiny), (building, narrow)):
            assert store.count(version) == len(images), version
            records = store.retrieve(version, ids, with_vectors=True)
            assert {r.id for r in records} == set(ids)
            assert {r.payload["model"] for r in records} == {bundle.ref}
            width = {len(np.asarray(r.vectors["image"])) for r in records}
            assert width == {collection_dims(bundle.spaces.model_dump())["image"]}
    finally:
        if writer is not None:
            writer.close()
        store.close()


def _ensured(bundles: TaskBundles, task: Sequence[tuple[str, str | None]]) -> list[str | None]:
    try:
        return bundles.ensure(task)
    except ClipsearchError as exc:
        assert exc.type == ErrorType.unavailable, exc
        return []


def _stream_empty(stream: PointStream) -> bool:
    return not stream.redis.xlen(f"clipsearch:points:{COLL}")


def test_an_indexer_refuses_a_bundle_it_cannot_serve_and_frees_the_ones_no_task_names(
    embedder: EmbeddingClient, tiny_bundle_dir: Path, tiny_narrow_bundle_dir: Path
) -> None:
    tiny, narrow = (load_bundle(d).manifest for d in (tiny_bundle_dir, tiny_narrow_bundle_dir))
    for bad in ("x", [{"ref": 3}], [{"ref": "no-version"}], [{"ref": "a@1", "spec": 5}], [1]):
        with pytest.raises(ClipsearchError) as refused:
            parse_task_bundles(bad)
        assert refused.value.type == ErrorType.invalid_input
    bundles = TaskBundles(lambda: embedder, _resolve)
    with pytest.raises(ClipsearchError) as no_spec:
        bundles.ensure([(narrow.ref, None)])
    assert no_spec.value.type == ErrorType.conflict and "no spec recorded" in no_spec.value.message
    with pytest.raises(ClipsearchError) as other:  # the spec names another bundle here
        bundles.ensure([("tiny-narrow@9.9", str(tiny_narrow_bundle_dir))])
    assert other.value.type == ErrorType.conflict and narrow.ref in other.value.message
    assert narrow.ref not in _served(embedder)  # nothing loaded by a refusal
    without = TaskBundles(lambda: embedder)  # no resolver: its own bundles only
    with pytest.raises(ClipsearchError):
        without.ensure([(narrow.ref, str(tiny_narrow_bundle_dir))])
    assert without.ensure([]) == [None]

    now = [0.0]
    bundles._clock = lambda: now[0]
    bundles.ensure([(tiny.ref, None), (narrow.ref, str(tiny_narrow_bundle_dir))])
    assert narrow.ref in _served(embedder)
    now[0] = 100.0
    bundles.ensure([(tiny.ref, None), (narrow.ref, str(tiny_narrow_bundle_dir))])  # named again
    now[0] = 100.0 + bundles._idle_s - 1
    bundles.ensure([(tiny.ref, None)])
    assert narrow.ref in _served(embedder)  # named within idle_s
    now[0] = 100.0 + bundles._idle_s + 1
    bundles.ensure([(tiny.ref, None)])
    wait_until(lambda: narrow.ref not in _served(embedder), 30)
    assert tiny.ref in _served(embedder)  # the configured bundle stays


def test_with_encoder_workers_an_indexer_uses_the_bundle_the_gateway_loaded_on_them(
    tiny_bundle_dir: Path, tiny_narrow_bundle_dir: Path
) -> None:
    """A real ``clipsearch worker``: the gateway's client loads tiny-narrow on it (a rollout's
    ``LoadBundle``); the indexer's own client embeds with it without loading anything, and
    waits (a retryable ``unavailable``) while no worker serves it, then goes on without it."""
    from loadtests.bench.faults import WorkerProcess
    from service.clients.grpc import GrpcEmbeddingClient
    from service.core.config import EncoderSettings

    narrow = load_bundle(tiny_narrow_bundle_dir).manifest
    worker = WorkerProcess(tiny_bundle_dir)
    try:
        worker.start()
        gateway = GrpcEmbeddingClient([worker.endpoint], EncoderSettings())
        indexer = GrpcEmbeddingClient([worker.endpoint], EncoderSettings())
        try:
            gateway.wait_ready(60)
            bundles = TaskBundles(lambda: indexer, _resolve)
            task = [(narrow.ref, str(tiny_narrow_bundle_dir))]
            with pytest.raises(ClipsearchError) as waiting:
                bundles.ensure(task)
            assert waiting.value.type == ErrorType.unavailable  # the task retries
            # ... until it has waited enough: then it embeds with the current bundle alone.
            tiny = load_bundle(tiny_bundle_dir).manifest.ref
            assert bundles.ensure([(tiny, None), *task], wait=False) == [tiny]
            assert narrow.ref not in _served(gateway)  # the indexer loaded nothing itself
            gateway.load_bundle(str(tiny_narrow_bundle_dir))
            # A retry of the task, as Celery's backoff brings it (routes refresh every second).
            wait_until(lambda: _ensured(bundles, task) == [narrow.ref], 30)
            rows = indexer.embed_texts(["a red circle"], lane="bulk", bundle=narrow.ref)
            assert rows.joint.shape == (1, narrow.spaces.caption)  # tiny-narrow's own width
            gateway.drop_bundle(narrow.ref)  # the rollout ended: the gateway unloads it
            wait_until(lambda: narrow.ref not in _served(gateway), 30)
        finally:
            gateway.close()
            indexer.close()
    finally:
        worker.stop()
