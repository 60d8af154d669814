"""The composition root: settings in, wired components out.

This is the one place that chooses implementations (in-process or remote encoder, embedded or
server store, in-process or Celery jobs) and the one place in ``service`` allowed to import the
indexer and, for the offline test bundle, ``models``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from service.clients.base import EmbeddingClient, JobQueue
from service.core.config import Settings
from service.core.errors import ClipsearchError, ErrorType
from service.core.manifest import MANIFEST_NAME, Bundle, load_bundle
from service.gateway.state import Components
from service.search.planner import SearchService
from service.store.versions import VersionedStore
from service.writer.loop import Writer

log = logging.getLogger(__name__)

ZOO_DIR = Path(__file__).resolve().parents[2] / "models" / "zoo"
DEFAULT_ZOO_BUNDLE = "default"
TINY_BUNDLE = "tiny-test"
# How long start-up waits for a remote encoder worker to turn ready.
ENCODER_WAIT_S = 120.0


def resolve_bundle(settings: Settings) -> Path:
    """The bundle folder to serve: ``settings.bundle`` (a folder or a zoo name), else the zoo's
    default, else the tiny test bundle built once under the data dir."""
    if settings.bundle:
        candidate = Path(settings.bundle).expanduser()
        if (candidate / MANIFEST_NAME).is_file():
            return candidate
        if (ZOO_DIR / settings.bundle / MANIFEST_NAME).is_file():
            return ZOO_DIR / settings.bundle
        if settings.bundle == TINY_BUNDLE:
            return _tiny_bundle(settings)
        raise ClipsearchError(
            ErrorType.bundle_invalid,
            f"bundle {settings.bundle!r} is neither a bundle folder nor a zoo name",
            {"zoo": sorted(p.name for p in ZOO_DIR.glob("*") if (p / MANIFEST_NAME).is_file())},
        )
    if (ZOO_DIR / DEFAULT_ZOO_BUNDLE / MANIFEST_NAME).is_file():
        log.info("serving the shipped default bundle from %s", ZOO_DIR / DEFAULT_ZOO_BUNDLE)
        return ZOO_DIR / DEFAULT_ZOO_BUNDLE
    log.warning(
        "no trained default bundle in %s: serving the tiny test bundle (text search over "
        "captions and descriptions works; text→image search is not semantic with it)",
        ZOO_DIR,
    )
    return _tiny_bundle(settings)


def _tiny_bundle(settings: Settings) -> Path:
    from models.tiny import build_tiny_bundle  # offline builder: numpy, onnx, tokenizers only

    target = settings.data_dir / "bundles" / TINY_BUNDLE
    if not (target / MANIFEST_NAME).is_file():
        log.info("building the tiny test bundle in %s", target)
        build_tiny_bundle(target, seed=0)
    return target


def load_configured_bundle(settings: Settings) -> Bundle:
    bundle = load_bundle(resolve_bundle(settings))
    log.info("bundle %s loaded from %s", bundle.manifest.ref, bundle.root)
    return bundle


def build_embedder(settings: Settings) -> EmbeddingClient:
    """The in-process engine (warmed up), or a client of the configured encoder workers."""
    if settings.in_process_encoder:
        from service.clients.inprocess import InProcessEmbeddingClient
        from service.encoder.engine import EncoderEngine

        engine = EncoderEngine(load_configured_bundle(settings), settings)
        engine.warmup()
        return InProcessEmbeddingClient(engine)
    from service.clients.grpc import GrpcEmbeddingClient

    client = GrpcEmbeddingClient(
        settings.encoder.endpoints, settings.encoder, max_message_mb=settings.worker.max_message_mb
    )
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
    from indexer.local import InProcessJobQueue
    from indexer.reindex import InProcessReindexer
    from service.clients.inprocess import InProcessEmbeddingClient
    from service.store.factory import open_store

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    embedder = build_embedder(settings)
    store = open_store(settings)
    try:
        info = embedder.info()  # from the workers when remote: no bundle needed here
        store.ensure(
            settings.collection,
            {name: info.spaces[name] for name in ("image", "caption", "description")},
            info.bundle,
        )
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
    from service.clients.jobs_celery import CeleryJobQueue
    from service.clients.stream import PointStream

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
