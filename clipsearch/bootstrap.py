"""Settings in, wired components out: the one place that chooses implementations (in-process or
remote encoder, embedded or server store, in-process or Celery jobs) for the gateway and for the
indexer workers. Nothing imports this package; it imports ``service`` and ``indexer``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from clipsearch.bundles import TINY_BUNDLE, load_configured_bundle, resolve_bundle
from indexer.distributed.probes import GATEWAY_WRITER_POINTS, WriterMetrics
from indexer.distributed.resources import IndexerResources
from indexer.distributed.writer import Writer
from service.clients.base import EmbeddingClient, JobQueue
from service.core.bundle.manifest import Bundle, load_bundle
from service.core.config import Settings
from service.core.contract import METADATA_KEY, CollectionSettings, check_settings
from service.core.domain import collection_dims
from service.core.errors import ClipsearchError, ErrorType, invalid, not_found
from service.gateway.state import Components, startup_progress
from service.search.planner import NullCache, SearchService
from service.search.querylog import LoggedSearchService, QueryLog
from service.store.versions import VersionedStore

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from indexer.jobs.rollout_records import ReindexRecords
    from service.encoder.registry import BundleRegistry

log = logging.getLogger(__name__)

T = TypeVar("T")
# Errors that a dependency not there yet gives (a worker not listening, a Qdrant server still
# starting): start-up tries again. Anything else (a bad bundle, a locked data dir, a collection
# of other dimensions) cannot heal by waiting: start-up fails with it.
TRANSIENT = frozenset({ErrorType.unavailable, ErrorType.timeout, ErrorType.overloaded})


def build_registry(settings: Settings) -> BundleRegistry:
    """The configured bundles, not yet warmed up: ``settings.bundle`` (the default) and then
    ``settings.encoder.extra_bundles`` (zoo names or folders, resolved like the default)."""
    from service.encoder.engine import EncoderEngine
    from service.encoder.registry import BundleRegistry

    registry = BundleRegistry(settings)
    try:
        registry.add(EncoderEngine(load_configured_bundle(settings), settings))
        for name in settings.encoder.extra_bundles:
            bundle = load_configured_bundle(settings.model_copy(update={"bundle": name}))
            registry.add(EncoderEngine(bundle, settings))
    except BaseException:
        registry.close()
        raise
    return registry


def build_embedder(settings: Settings, *, wait_for_workers: bool = True) -> EmbeddingClient:
    """The in-process engine (warmed up), or a client of the configured encoder workers.

    ``wait_for_workers``: the gateway waits (``until_reachable``: as long as it takes) and asks
    the workers what they serve; an indexer takes the client as it is and lets its tasks retry
    while workers start.
    """
    if settings.in_process_encoder:
        from service.clients.inprocess import InProcessEmbeddingClient

        registry = build_registry(settings)
        try:
            registry.warmup()
        except BaseException:
            registry.close()
            raise
        provider = registry.default.engine.provider
        log.info("embedding with %s in-process (%s)", ", ".join(registry.refs()), provider)
        return InProcessEmbeddingClient(registry=registry)
    from service.clients.grpc import GrpcEmbeddingClient

    client = GrpcEmbeddingClient(
        settings.encoder.endpoints, settings.encoder, max_message_mb=settings.worker.max_message_mb
    )
    if not wait_for_workers:
        return client
    # Workers may not listen yet (started after the gateway, a slow image pull) or still warm up
    # (a TensorRT build takes minutes): go on once one answers Info, however long that takes;
    # readiness then follows the client's health.
    try:
        info = until_reachable(
            settings, f"encoder workers at {', '.join(settings.encoder.endpoints)}", client.info
        )
    except BaseException:
        client.close()
        raise
    log.info("encoder workers %s serve %s", ", ".join(settings.encoder.endpoints), info.bundle)
    return client


def build_components(settings: Settings) -> Components:
    from indexer.jobs.local import InProcessJobQueue
    from indexer.reindex import InProcessReindexer
    from service.store.factory import open_store

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # The store before the model: a data dir that another gateway holds fails at once.
    store = open_store(settings)
    try:
        embedder = build_embedder(settings)
    except BaseException:
        store.close()
        raise
    try:
        info = embedder.info()  # from the workers when remote: no bundle needed here
        dims = collection_dims(info.spaces)
        own = own_settings(settings, info.bundle)
        # A Qdrant server still starting is waited for; the embedded store answers at once.
        where = f"the Qdrant server at {settings.qdrant.url}" if settings.qdrant.url else "store"
        until_reachable(
            settings,
            where,
            lambda: store.ensure(settings.collection, dims, info.bundle, own.metadata()),
        )
        query_log = QueryLog(settings.admin.query_log_size) if settings.admin.query_log else None
        reindexer = InProcessReindexer(
            settings=settings,
            embedder=embedder,
            store=store,
            resolve_bundle=partial(rollout_bundle, settings),
            query_log=query_log,
            records=rollout_records(settings),
        )
        # After the reindexer, which loads again the bundles of versions its rollouts built.
        served = [b.ref for b in embedder.info().bundles] or [info.bundle]
        check_collection_settings(store, settings.collection, own, served=served)
        if settings.in_process_jobs:
            jobs: JobQueue = InProcessJobQueue(settings=settings, embedder=embedder, store=store)
            writer = None
        else:
            jobs, writer = _celery_jobs(settings, store)
    except BaseException:
        embedder.close()
        store.close()
        raise

    nulls = NullCache()  # each bundle's score calibration, shared by every collection

    def search_service(collection: str) -> SearchService:
        if collection != settings.collection:
            reindexer.serve_collection(collection)  # created on another replica: load its bundle
        if query_log is None:
            return SearchService(embedder, store, collection, nulls=nulls)
        return LoggedSearchService(embedder, store, collection, log=query_log, nulls=nulls)

    return Components(
        embedder=embedder,
        store=store,
        jobs=jobs,
        search=search_service(settings.collection),
        search_factory=search_service,
        collection=settings.collection,
        reindexer=reindexer,
        # The writer's counts (clipsearch_writer_*) on the gateway's /metrics.
        registries=[count_writes(store)]
        + served_registries(embedder)
        + ([writer.metrics.registry] if writer else [])
        # Dataset units and bytes read by the in-process job runner.
        + ([jobs.read_metrics.registry] if isinstance(jobs, InProcessJobQueue) else []),
        writer=writer,
    )


def rollout_records(settings: Settings) -> ReindexRecords | None:
    """With a broker, rollout records and leases in Redis, shared by every gateway replica;
    else None: files under the data dir that only this gateway uses."""
    from indexer.jobs.rollout_records import RedisRecords

    if settings.broker.url is None:
        return None
    return RedisRecords.from_url(settings.broker.url, lease_s=settings.admin.rollout_lease_s)


def count_writes(store: VersionedStore) -> CollectorRegistry:
    """``clipsearch_points_upserted_total``: the points this process put into a collection's
    serving version, whichever path wrote them (the items API, in-process jobs, the gateway's
    writer), counted by the store itself so the counter agrees with the data."""
    from prometheus_client import CollectorRegistry, Counter

    registry = CollectorRegistry(auto_describe=True)
    written = Counter(
        "clipsearch_points_upserted_total",
        "Points written to a collection's serving version by this process (items API, "
        "in-process jobs, the gateway's writer)",
        registry=registry,
    )
    store.on_written = written.inc
    return registry


def own_settings(settings: Settings, bundle: str | None) -> CollectionSettings:
    """This process's cluster-wide settings (``service.core.contract``): what a collection
    version it creates records, and what it must agree with to write or embed for one."""
    from service.items.chunking import MAX_CHUNKS

    return CollectionSettings.of(settings, bundle=bundle, max_chunks=MAX_CHUNKS)


def check_collection_settings(
    store: VersionedStore,
    collection: str,
    own: CollectionSettings,
    *,
    served: list[str] | None,
    where: str = "here",
) -> None:
    """Refuse (conflict) when this process's settings disagree with those the collection's
    current version records; ``served``: the bundles it embeds with (None: it embeds nothing).
    A collection that does not exist yet, or records nothing, passes."""
    if collection not in store.aliases(fresh=True):
        return
    version, metadata = store.metadata_of(collection)
    recorded = CollectionSettings.from_metadata(metadata)
    check_settings(collection, recorded, own, served=served, where=where, version=version)


def recorded_settings(store: VersionedStore, collection: str) -> dict[str, Any] | None:
    """What ``collection``'s current version records (its metadata entry), or None."""
    try:
        _, metadata = store.metadata_of(collection)
    except ClipsearchError as exc:
        if exc.type is ErrorType.not_found:
            return None
        raise
    recorded = metadata.get(METADATA_KEY)
    return dict(recorded) if isinstance(recorded, dict) else None


def served_registries(embedder: EmbeddingClient) -> list[CollectorRegistry]:
    """The embedder's own Prometheus series, served by the gateway's /metrics after its own:
    the in-process encoder's batchers, or the gRPC client's per-worker health, hedges and
    retries."""
    from service.clients.grpc import GrpcEmbeddingClient
    from service.clients.inprocess import InProcessEmbeddingClient

    if isinstance(embedder, InProcessEmbeddingClient):
        return [embedder.batcher.metrics.registry]
    if isinstance(embedder, GrpcEmbeddingClient):
        return [embedder.metrics.registry]
    return []


def until_reachable(settings: Settings, what: str, attempt: Callable[[], T]) -> T:
    """``attempt()``, tried again after each transient error (``TRANSIENT``: the dependency is
    not there yet) with doubling waits up to ``startup.backoff_max_s``, for as long as it takes:
    a gateway started before its dependency is ready within one wait of it appearing. The
    Runtime building the gateway names ``what`` in ``/health/ready`` and logs each change (not
    each retry); its close ends the wait. Any other error is raised at once."""
    progress = startup_progress(settings)
    waits = progress.backoffs()
    while True:
        try:
            result = attempt()
        except ClipsearchError as exc:
            if exc.type not in TRANSIENT:
                raise
            progress.waiting(what, exc.message)
            progress.sleep(next(waits))
            continue
        progress.waiting(None)
        return result


def rollout_bundle(settings: Settings, spec: str) -> Bundle:
    """The bundle a rollout names (a zoo name, a bundle folder, or ``tiny``: the tiny test
    bundle built for this data dir), loaded with every file's checksum verified. (not_found)
    when it names no bundle, (invalid_input) when it is broken: nothing is loaded either way."""
    name = TINY_BUNDLE if spec == "tiny" else spec
    try:
        folder = resolve_bundle(settings.model_copy(update={"bundle": name}), quiet=True)
    except ClipsearchError as exc:
        raise not_found(exc.message, {"bundle": spec, **_detail(exc)}) from exc
    try:
        return load_bundle(folder)
    except ClipsearchError as exc:
        raise invalid(f"bundle {spec!r} cannot be served: {exc.message}", _detail(exc)) from exc


def _detail(exc: ClipsearchError) -> dict[str, object]:
    return dict(exc.detail) if isinstance(exc.detail, dict) else {}


def _celery_jobs(settings: Settings, store: VersionedStore) -> tuple[JobQueue, Writer]:
    """Jobs go to indexer workers by task name; this gateway writes their points to its store
    (the collection exists already: the writer upserts into it)."""
    from indexer.distributed.bundles import task_bundles
    from indexer.distributed.stream import PointStream
    from indexer.jobs.celery_queue import CeleryJobQueue

    url = settings.broker.url
    assert url is not None  # in_process_jobs is false
    # Every collection's points stream: a job into any of them is written here (the writer
    # adds those created later as jobs name them, and as it finds them in the store).
    collections = [settings.collection, *(n for n in store.names() if n != settings.collection)]
    metrics = WriterMetrics(points_metric=GATEWAY_WRITER_POINTS)
    writer = Writer(url, store, settings, collections=collections, metrics=metrics)
    try:
        jobs = CeleryJobQueue(
            settings,
            PointStream(url, settings.broker),
            partial(recorded_settings, store),
            partial(task_bundles, store),
            writes=writer.add_collection,
        )
    except BaseException:
        writer.close()
        raise
    log.info("jobs go to Celery; this gateway writes collections %s", ", ".join(collections))
    return jobs, writer


def indexer_resources(settings: Settings) -> IndexerResources:
    """What an indexer worker's tasks share: its embedder is built on the first task."""
    return IndexerResources(
        settings,
        partial(build_embedder, settings, wait_for_workers=False),
        # A rollout's bundle, loaded from the spec its tasks carry (the in-process encoder).
        partial(rollout_bundle, settings),
    )
