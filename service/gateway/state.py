"""What the app serves with, and the truth about whether it is ready."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from service.clients.admin import Reindexer
from service.clients.base import EmbeddingClient, JobQueue, PointsWriter
from service.core.config import Settings
from service.core.errors import ClipsearchError, ErrorType
from service.search.planner import SearchService
from service.store.versions import VersionedStore

log = logging.getLogger(__name__)


@dataclass
class Components:
    embedder: EmbeddingClient
    store: VersionedStore
    jobs: JobQueue
    search: SearchService
    collection: str
    reindexer: Reindexer
    # Registries of components that keep their own metrics (the in-process encoder's batcher),
    # served by the gateway's /metrics after its own.
    registries: list[CollectorRegistry] = field(default_factory=list)
    # The points writer, when indexer workers feed this gateway's store (a broker is set).
    writer: PointsWriter | None = None

    def close(self) -> None:
        closers = [self.reindexer.close, self.jobs.close, self.embedder.close, self.store.close]
        if self.writer is not None:
            closers.insert(2, self.writer.close)  # before the store it writes to
        for closer in closers:
            try:
                closer()
            except Exception:
                log.exception("error while shutting down")


ComponentsFactory = Callable[[Settings], Components]


class Runtime:
    """Builds the components off the event loop; readiness is true only once they are built
    (model loaded and warmed up, store open) and stays true only while they stay healthy."""

    def __init__(self, settings: Settings, factory: ComponentsFactory) -> None:
        self.settings = settings
        self._factory = factory
        self._components: Components | None = None
        self._error: str | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._build, name="startup", daemon=True)
        self._thread.start()

    def _build(self) -> None:
        try:
            self._components = self._factory(self.settings)
            log.info("ready")
        except Exception as exc:
            self._error = str(exc) or type(exc).__name__
            log.exception("start-up failed")
        finally:
            self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout) and self._components is not None

    def readiness(self) -> tuple[bool, dict[str, object]]:
        comp = self._components
        if comp is None:
            reason = f"start-up failed: {self._error}" if self._error else "starting"
            return False, {"reason": reason}
        encoder = comp.embedder.health()
        checks = {"encoder": encoder.ready, "jobs": comp.jobs.ready()}
        detail: dict[str, object] = {"checks": checks, "model": comp.embedder.info().bundle}
        if not encoder.ready:
            detail["reason"] = f"encoder: {encoder.reason}"
        if comp.writer is not None:
            writer = comp.writer.health()
            checks["writer"] = writer.ready
            if not writer.ready:
                detail.setdefault("reason", f"writer: {writer.reason}")
        return all(checks.values()), detail

    def extra_registries(self) -> list[CollectorRegistry]:
        return [] if self._components is None else self._components.registries

    @property
    def components(self) -> Components:
        if self._components is None:
            message = (
                f"service failed to start: {self._error}" if self._error else "service is starting"
            )
            raise ClipsearchError(ErrorType.unavailable, message, retry_after_s=5)
        return self._components

    def close(self) -> None:
        if self._thread is not None:
            self._thread.join()
        if self._components is not None:
            self._components.close()
