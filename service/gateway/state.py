"""What the app serves with, and the truth about whether it is ready."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from service.clients.admin import Reindexer
from service.clients.base import EmbeddingClient, JobQueue, PointsWriter
from service.core.collector import freeze_started
from service.core.config import Settings
from service.core.errors import ClipsearchError, ErrorType
from service.gateway.ratelimit import RateLimiter
from service.search.planner import SearchService
from service.store.versions import NEXT, PREVIOUS, VersionedStore

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
    # Makes the search service of a collection other than the configured one (None: this
    # gateway searches its configured collection only).
    search_factory: Callable[[str], SearchService] | None = None
    _searches: dict[str, SearchService] = field(default_factory=dict, repr=False)
    _searches_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def collection_of(self, name: str | None) -> str:
        """The collection a request names (None or empty: the configured one), checked to
        exist: (not_found) otherwise, word for word what a key that cannot see it is told."""
        if not name or name == self.collection:
            return self.collection
        # A search service made for it, or its alias (read through the alias cache; a
        # rollout's .next/.previous is no collection), before a fresh listing of the store (a
        # collection from before versioning has no alias).
        if name.endswith((NEXT, PREVIOUS)):
            raise ClipsearchError(ErrorType.not_found, f"collection {name!r} does not exist")
        if name in self._searches or name in self.store.aliases() or name in self.store.names():
            return name
        raise ClipsearchError(ErrorType.not_found, f"collection {name!r} does not exist")

    def search_for(self, name: str | None) -> SearchService:
        """The search service of the collection a request names (see :meth:`collection_of`)."""
        collection = self.collection_of(name)
        if collection == self.collection or self.search_factory is None:
            if collection != self.collection:
                raise ClipsearchError(
                    ErrorType.invalid_input,
                    f"this gateway searches collection {self.collection!r} only",
                )
            return self.search
        with self._searches_lock:
            service = self._searches.get(collection)
            if service is None:
                service = self._searches[collection] = self.search_factory(collection)
            return service

    def forget(self, name: str) -> None:
        """Drop what this process keeps for a deleted collection."""
        with self._searches_lock:
            self._searches.pop(name, None)

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


class StartupCancelled(Exception):
    """The runtime closed while its factory waited for a dependency."""


class StartupProgress:
    """What a components factory says while it waits for a dependency that is not there yet
    (encoder workers, a Qdrant server): ``/health/ready`` names it, and the log has one line per
    change of what is awaited (never one per retry)."""

    def __init__(self, backoff_max_s: float, stop: threading.Event | None = None) -> None:
        self.backoff_max_s = backoff_max_s
        self._stop = stop or threading.Event()
        self.waiting_for: str | None = None
        self.reason: str | None = None

    def waiting(self, what: str | None, reason: str | None = None) -> None:
        """Now waiting for ``what`` (``reason``: its last error), or for nothing (None)."""
        if what != self.waiting_for:
            if what is not None:
                log.warning("waiting for %s: %s", what, reason or "not there yet")
            elif self.waiting_for is not None:
                log.info("%s: reached", self.waiting_for)
        self.waiting_for, self.reason = what, reason

    def sleep(self, seconds: float) -> None:
        """Wait before the next try; raises StartupCancelled at once if the runtime closes."""
        if self._stop.wait(seconds):
            raise StartupCancelled("the service is shutting down")

    def backoffs(self, first_s: float = 0.25) -> Iterator[float]:
        """The waits between tries: doubling from ``first_s`` up to ``backoff_max_s``."""
        delay = min(first_s, self.backoff_max_s)
        while True:
            yield delay
            delay = min(delay * 2, self.backoff_max_s)


_current = threading.local()


def startup_progress(settings: Settings) -> StartupProgress:
    """The progress of the Runtime building on this thread; elsewhere (a test, an indexer) one
    that only logs."""
    progress = getattr(_current, "progress", None)
    if isinstance(progress, StartupProgress):
        return progress
    return StartupProgress(settings.startup.backoff_max_s)


class Runtime:
    """Builds the components off the event loop, waiting for dependencies that are not there
    yet for as long as it takes; an error that cannot heal ends start-up (``error``, and
    `clipsearch serve` exits with it).

    Once built, a monitor thread checks readiness every ``startup.health_interval_s`` and keeps
    the answer: ``readiness()`` never calls a worker, Redis or the store. Ready = the encoder
    serves the default bundle and the store answers; Redis (jobs) and the points writer only add
    a ``degraded`` detail, since search needs neither. ``liveness()`` fails only when that
    monitor has not completed a check for ``startup.stall_s``: something it calls is wedged (a
    deadlocked store, a client call that never returns), and the process cannot make progress.
    """

    def __init__(
        self,
        settings: Settings,
        factory: ComponentsFactory,
        *,
        describe: Callable[[Components], object] | None = None,
    ) -> None:
        self.settings = settings
        # Per-key rate limits (service.gateway.ratelimit), shared by REST and gRPC.
        self.limiter = RateLimiter()
        self._factory = factory
        # What /health/ready shows of the served models: described again only when the served
        # bundles change (a rollout), not on every check.
        self._describe = describe
        self._described: tuple[tuple[str, ...], object] | None = None
        self._components: Components | None = None
        self._error: str | None = None
        self._done = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._monitor: threading.Thread | None = None
        self.progress = StartupProgress(settings.startup.backoff_max_s, self._stop)
        self._state: tuple[bool, dict[str, object]] = (False, {"reason": "starting"})
        self._beat = time.monotonic()  # when the monitor last completed a check
        self._last_logged: tuple[bool, str, tuple[str, ...]] | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._build, name="startup", daemon=True)
        self._thread.start()

    def _build(self) -> None:
        _current.progress = self.progress
        try:
            components = self._factory(self.settings)
        except StartupCancelled:
            log.info("start-up stopped: the service is shutting down")
            self._done.set()
            return
        except Exception as exc:
            self._error = _one_line(exc)
            # What went wrong is in the message (a locked data dir, a corrupt bundle): one line,
            # and the traceback only at debug level. `clipsearch serve` then exits with it.
            log.error("start-up failed: %s", self._error)
            log.debug("start-up failure", exc_info=True)
            self._done.set()
            return
        finally:
            _current.progress = None
        if self.settings.startup.gc_freeze:
            freeze_started("gateway started")  # before it is ready: no request pays for it
        self._state = self._check(components)
        self._beat = time.monotonic()
        self._components = components
        log.info("started")
        self._log_change(self._state)
        self._monitor = threading.Thread(target=self._watch, name="readiness", daemon=True)
        self._monitor.start()
        self._done.set()

    def _watch(self) -> None:
        """Re-check readiness every interval (off every request's path) until closed."""
        comp = self._components
        assert comp is not None
        while not self._stop.wait(self.settings.startup.health_interval_s):
            try:
                state = self._check(comp)
            except Exception as exc:  # a check that fails says so; the loop goes on
                state = (False, {"reason": f"readiness check failed: {_one_line(exc)}"})
            self._state = state
            self._beat = time.monotonic()
            self._log_change(state)

    def _check(self, comp: Components) -> tuple[bool, dict[str, object]]:
        encoder = comp.embedder.health()
        checks: dict[str, bool] = {"encoder": encoder.ready, "store": True}
        detail: dict[str, object] = {"checks": checks, "model": comp.embedder.info().bundle}
        reasons: list[str] = []
        if not encoder.ready:
            reasons.append(f"encoder: {encoder.reason}")
        try:
            comp.store.list_collections()
        except Exception as exc:
            checks["store"] = False
            reasons.append(f"store: {_one_line(exc)}")
        if reasons:
            detail["reason"] = "; ".join(reasons)
        # Search needs neither Redis nor the writer: while they are away only ingest waits.
        degraded: dict[str, str] = {}
        if not comp.jobs.ready():
            url = self.settings.broker.safe_url
            degraded["jobs"] = (
                f"Redis at {url} is unreachable: ingest and job requests answer 503 until it is"
                " back; search is unaffected"
                if url
                else "the job runner is not ready"
            )
        if comp.writer is not None:
            writer = comp.writer.health()
            if not writer.ready:
                degraded["writer"] = f"points writer: {writer.reason}"
        if degraded:
            detail["degraded"] = degraded
        if self._describe is not None:
            try:
                info = comp.embedder.info()
                served = (info.bundle, *(b.ref for b in info.bundles or ()))
                if self._described is None or self._described[0] != served:
                    self._described = (served, self._describe(comp))
                detail["models"] = self._described[1]
            except Exception:  # an encoder that cannot describe itself is already in the checks
                log.debug("cannot describe the served models", exc_info=True)
        return all(checks.values()), detail

    def _log_change(self, state: tuple[bool, dict[str, object]]) -> None:
        ready, detail = state
        degraded = detail.get("degraded")
        notes = list(degraded.values()) if isinstance(degraded, dict) else []
        key = (ready, str(detail.get("reason")), tuple(sorted(map(str, notes))))
        if key == self._last_logged:
            return
        self._last_logged = key
        if ready and notes:
            log.warning("ready, degraded: %s", "; ".join(map(str, notes)))
        elif ready:
            log.info("ready")
        else:
            log.warning("not ready: %s", detail.get("reason"))

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout) and self._components is not None

    @property
    def error(self) -> str | None:
        """Why start-up failed, in one line; None while starting and once built."""
        return self._error

    def readiness(self) -> tuple[bool, dict[str, object]]:
        """The last check's answer (cached: no call to any dependency)."""
        if self._components is None:
            if self._error:
                return False, {"reason": f"start-up failed: {self._error}"}
            waiting = self.progress.waiting_for
            if waiting is None:
                return False, {"reason": "starting"}
            detail: dict[str, object] = {"reason": f"starting: waiting for {waiting}"}
            if self.progress.reason:
                detail["waiting_for"] = {"what": waiting, "last_error": self.progress.reason}
            return False, detail
        ready, detail = self._state
        return ready, dict(detail)

    def liveness(self) -> tuple[bool, dict[str, object]]:
        """False only once the readiness monitor has not completed a check for ``stall_s``."""
        if self._components is None or self._stop.is_set():
            return True, {}  # starting (waiting is progress) or shutting down
        stalled = time.monotonic() - self._beat
        if stalled > self.settings.startup.stall_s:
            return False, {
                "reason": f"the readiness check has not completed for {stalled:.0f} s "
                f"(stall_s = {self.settings.startup.stall_s:g}): the process is wedged"
            }
        return True, {}

    def extra_registries(self) -> list[CollectorRegistry]:
        return [] if self._components is None else self._components.registries

    @property
    def components(self) -> Components:
        if self._components is None:
            waiting = self.progress.waiting_for
            message = (
                f"service failed to start: {self._error}"
                if self._error
                else f"service is starting: waiting for {waiting}"
                if waiting
                else "service is starting"
            )
            raise ClipsearchError(ErrorType.unavailable, message, retry_after_s=5)
        return self._components

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._monitor is not None:
            self._monitor.join(timeout=5)  # a wedged check must not hold the shutdown
        if self._components is not None:
            self._components.close()


def _one_line(exc: Exception) -> str:
    """A start-up error as one line: our own errors say what to do; anything else is named."""
    text = " ".join(str(exc).split())
    if isinstance(exc, ClipsearchError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
