"""Settings in, wired components out: the one place that chooses implementations (in-process or
remote encoder, embedded or server store, in-process or Celery jobs) for the gateway and for the
indexer workers. Nothing imports this package; it imports ``service`` and ``indexer``.
"""

from __future__ import annotations

import logging
from functools import partial

from clipsearch.bundles import load_configured_bundle
from indexer.distributed.resources import IndexerResources
from indexer.distributed.writer import Writer
from service.clients.base import EmbeddingClient, JobQueue
from service.core.config import Settings
from service.core.domain import collection_dims
from service.core.errors import ClipsearchError
from service.gateway.state import Components
from service.search.planner import SearchService
from service.store.versions import VersionedStore

log = logging.getLogger(__name__)

# How long start-up waits for a remote encoder worker to turn ready.
ENCODER_WAIT_S = 120.0


def build_embedder(settings: Settings, *, wait_for_workers: bool = True) -> EmbeddingClient:
    """The in-process engine (warmed up), or a client of the configured encoder workers.

    ``wait_for_workers``: the gateway waits (up to ``ENCODER_WAIT_S``) and asks the workers what
    they serve; an indexer takes the client as it is and lets its tasks retry while workers start.
    """
    if settings.in_process_encoder:
        from service.clients.inprocess import InProcessEmbeddingClient
        from service.encoder.engine import EncoderEngine

        engine = EncoderEngine(load_configured_bundle(settings), settings)
        engine.warmup()
        log.info("embedding with %s in-process (%s)", engine.bundle.manifest.ref, engine.provider)
        return InProcessEmbeddingClient(engine)
    from service.clients.grpc import GrpcEmbeddingClient

    client = GrpcEmbeddingClient(
        settings.encoder.endpoints, settings.encoder, max_message_mb=settings.worker.max_message_mb
    )
    if not wait_for_workers:
        return client
    try:
        client.wait_ready(ENCODER_WAIT_S)
    except ClipsearchError as exc:
        # Workers may still be warming up (a TensorRT build takes minutes): go on if one answers
        # Info at all; readiness then follows the client's health.
        log.warning("%s", exc.message)
    try:
        info = client.info()
    except BaseException:
        client.close()
        raise
    log.info("encoder workers %s serve %s", ", ".join(settings.encoder.endpoints), info.bundle)
    return client


def build_components(settings: Settings) -> Components:
    from indexer.jobs.local import InProcessJobQueue
    from indexer.reindex import InProcessReindexer
    from service.clients.inprocess import InProcessEmbeddingClient
    from service.store.factory import open_store

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    embedder = build_embedder(settings)
    store = open_store(settings)
    try:
        info = embedder.info()  # from the workers when remote: no bundle needed here
        store.ensure(settings.collection, collection_dims(info.spaces), info.bundle)
        reindexer = InProcessReindexer(settings=settings, embedder=embedder, store=store)
        if settings.in_process_jobs:
            jobs: JobQueue = InProcessJobQueue(settings=settings, embedder=embedder, store=store)
            writer = None
        else:
            jobs, writer = _celery_jobs(settings, store)
    except BaseException:
        store.close()
        raise
    return Components(
        embedder=embedder,
        store=store,
        jobs=jobs,
        search=SearchService(embedder, store, settings.collection),
        collection=settings.collection,
        reindexer=reindexer,
        registries=(
            [embedder.batcher.metrics.registry]
            if isinstance(embedder, InProcessEmbeddingClient)
            else []
        ),
        writer=writer,
    )


def _celery_jobs(settings: Settings, store: VersionedStore) -> tuple[JobQueue, Writer]:
    """Jobs go to indexer workers by task name; this gateway writes their points to its store
    (the collection exists already: the writer upserts into it)."""
    from indexer.distributed.stream import PointStream
    from indexer.jobs.celery_queue import CeleryJobQueue

    url = settings.broker.url
    assert url is not None  # in_process_jobs is false
    jobs = CeleryJobQueue(settings, PointStream(url, settings.broker))
    try:
        writer = Writer(url, store, settings)
    except BaseException:
        jobs.close()
        raise
    log.info("jobs go to Celery; this gateway writes collection %s", settings.collection)
    return jobs, writer


def indexer_resources(settings: Settings) -> IndexerResources:
    """What an indexer worker's tasks share: its embedder is built on the first task."""
    return IndexerResources(settings, partial(build_embedder, settings, wait_for_workers=False))
