"""What one indexer worker process holds for all its tasks: the embedder and the points stream.

The bundle is found by path (a folder or a zoo name): the indexer may import neither ``models``
nor the CLI.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from service.clients.base import EmbeddingClient
from service.clients.stream import PointStream
from service.core.config import Settings
from service.core.errors import ClipsearchError, ErrorType, invalid
from service.core.manifest import MANIFEST_NAME, load_bundle

log = logging.getLogger(__name__)

# The shipped bundles.
ZOO_DIR = Path(__file__).resolve().parents[1] / "models" / "zoo"
DEFAULT_ZOO_BUNDLE = "default"


def resolve_bundle_dir(settings: Settings) -> Path:
    """``settings.bundle`` as a folder or a zoo name, else the zoo's default bundle.

    The gateway's ``service.cli.bootstrap.resolve_bundle`` does the same and can also build the
    tiny test bundle; an indexer is always pointed at a real bundle (or at encoder workers).
    """
    names = [settings.bundle] if settings.bundle else [DEFAULT_ZOO_BUNDLE]
    for name in names:
        for candidate in (Path(name).expanduser(), ZOO_DIR / name):
            if (candidate / MANIFEST_NAME).is_file():
                return candidate
    raise ClipsearchError(
        ErrorType.bundle_invalid,
        f"no bundle {names[0]!r}: set CLIPSEARCH_BUNDLE to a bundle folder or zoo name, "
        "or CLIPSEARCH_ENCODER__ENDPOINTS to encoder workers",
    )


def build_embedder(settings: Settings) -> EmbeddingClient:
    """The configured encoder workers over gRPC, else the engine in this process (warmed up)."""
    if not settings.in_process_encoder:
        from service.clients.grpc import GrpcEmbeddingClient

        return GrpcEmbeddingClient(
            settings.encoder.endpoints,
            settings.encoder,
            max_message_mb=settings.worker.max_message_mb,
        )
    from service.clients.inprocess import InProcessEmbeddingClient
    from service.encoder.engine import EncoderEngine

    bundle = load_bundle(resolve_bundle_dir(settings))
    engine = EncoderEngine(bundle, settings)
    engine.warmup()
    log.info("indexer embeds with %s in-process (%s)", bundle.manifest.ref, engine.provider)
    return InProcessEmbeddingClient(engine)


class IndexerResources:
    """One per worker process: the embedder and the stream, built on the first task (a worker
    that never gets one loads no model) and shared by every task after it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._embedder: EmbeddingClient | None = None
        self._stream: PointStream | None = None

    def embedder(self) -> EmbeddingClient:
        with self._lock:
            if self._embedder is None:
                self._embedder = build_embedder(self.settings)
            return self._embedder

    def stream(self) -> PointStream:
        with self._lock:
            if self._stream is None:
                if not self.settings.broker.url:
                    raise invalid("the indexer needs a broker: set CLIPSEARCH_BROKER__URL")
                self._stream = PointStream(self.settings.broker.url, self.settings.broker)
            return self._stream

    def close(self) -> None:
        with self._lock:
            if self._embedder is not None:
                self._embedder.close()
            if self._stream is not None:
                self._stream.close()
            self._embedder = self._stream = None
