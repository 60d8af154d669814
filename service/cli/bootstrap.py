"""The composition root: settings in, wired components out.

This is the one place that chooses implementations (in-process or remote encoder, embedded or
server store, in-process or Celery jobs) and the one place in ``service`` allowed to import the
indexer and, for the offline test bundle, ``models``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from service.core.config import Settings
from service.core.errors import ClipsearchError, ErrorType
from service.core.manifest import MANIFEST_NAME, Bundle, load_bundle
from service.gateway.state import Components
from service.search.planner import SearchService

log = logging.getLogger(__name__)

ZOO_DIR = Path(__file__).resolve().parents[2] / "models" / "zoo"
DEFAULT_ZOO_BUNDLE = "default"
TINY_BUNDLE = "tiny-test"


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


def build_components(settings: Settings) -> Components:
    from indexer.local import InProcessJobQueue
    from service.clients.inprocess import InProcessEmbeddingClient
    from service.encoder.engine import EncoderEngine
    from service.store.factory import open_store

    if not settings.in_process_encoder:
        raise ClipsearchError(ErrorType.invalid_input, "remote encoder workers are not built yet")
    if not settings.in_process_jobs:
        raise ClipsearchError(ErrorType.invalid_input, "the Celery job queue is not built yet")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    bundle = load_configured_bundle(settings)
    engine = EncoderEngine(bundle, settings)
    engine.warmup()
    embedder = InProcessEmbeddingClient(engine)
    store = open_store(settings)
    try:
        spaces = bundle.manifest.spaces
        store.ensure_collection(
            settings.collection,
            {"image": spaces.image, "caption": spaces.caption, "description": spaces.description},
        )
        jobs = InProcessJobQueue(settings=settings, embedder=embedder, store=store)
    except BaseException:
        store.close()
        raise
    return Components(
        embedder=embedder,
        store=store,
        jobs=jobs,
        search=SearchService(embedder, store, settings.collection),
        collection=settings.collection,
    )
