"""The bundles an encoder serves at once, keyed by ``name@version``.

Each bundle has its own engine (ONNX sessions), its own :class:`Batcher` (interactive and bulk
lanes, core threads) and its own ``bundle``-labelled series on one shared metrics registry. One
bundle is the default: a request that names no bundle goes to it, so callers written for a single
bundle keep working unchanged.

Bundles come and go at run time (a rollout loads the next model beside the live one):
:meth:`BundleRegistry.load` builds and warms up the new engine *outside* the registry's lock and
only then publishes it, so requests to the other bundles never wait on a load;
:meth:`BundleRegistry.drop` unpublishes a bundle at once (new requests to it get ``not_found``),
lets its queued work drain for a grace period, then closes it. The registry remembers which
bundles were loaded at run time (:meth:`~BundleRegistry.load`) rather than configured at start-up
(:meth:`~BundleRegistry.add`): a rollout frees only the former (``drop(..., runtime_only=True)``).

Scheduling is per bundle (each batcher has its own core threads) with one thing shared: the
search traffic each tower kind sees (``traffic``). A query to any bundle slices the bulk batches
of every bundle, so a rebuild on bundle B delays a query to bundle A by at most one B bulk slice
(``encoder.bulk_slice_ms``; by default half of one B item's inference, and always one item at
least) plus the contention of running beside it — the same bound as behind A's own bulk work.
On top of that, priority is strict across bundles: no bulk batch of any bundle starts while a
tower of another bundle (or the other tower kind) holds interactive work (:mod:`.tower`).

An unknown bundle is ``not_found`` (HTTP 404, gRPC NOT_FOUND): a bundle is a resource the caller
names, like a collection or a job; the error lists the bundles served.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from service.core.bundle.manifest import Bundle
from service.core.collector import refreeze
from service.core.config import Settings
from service.core.domain import Lane
from service.core.embeddings import EncoderHealth, EncoderInfo, ServedBundle
from service.core.errors import ClipsearchError, ErrorType, invalid, not_found
from service.encoder.batcher import Batcher
from service.encoder.engine import EncoderEngine
from service.encoder.metrics import EncoderMetrics
from service.encoder.units import LANES, SearchTraffic

log = logging.getLogger(__name__)

_DRAIN_POLL_S = 0.01


@dataclass(frozen=True)
class Served:
    """One served bundle: its engine and the batcher in front of it."""

    engine: EncoderEngine
    batcher: Batcher

    @property
    def ref(self) -> str:
        return self.engine.bundle.manifest.ref


def unknown_bundle(bundle: str, served: Sequence[str]) -> ClipsearchError:
    listing = ", ".join(served) or "none"
    return not_found(
        f"bundle {bundle!r} is not served here; served bundles (name@version): {listing}",
        {"bundle": bundle, "served": list(served)},
    )


class BundleRegistry:
    """Thread-safe: lookups take a short lock and never wait on a load, a warm-up or a drain."""

    def __init__(self, settings: Settings, *, metrics: EncoderMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or EncoderMetrics()
        self._lock = threading.Lock()
        self._served: dict[str, Served] = {}
        self._default: str | None = None
        self._loading: set[str] = set()
        self._runtime: set[str] = set()  # loaded at run time (load), not configured (add)
        # Search traffic seen by any bundle's towers slices every bundle's bulk batches.
        self.traffic = SearchTraffic()
        self._closed = False

    @classmethod
    def of(cls, engine: EncoderEngine, *, batcher: Batcher | None = None) -> BundleRegistry:
        """A registry serving ``engine`` (the default), with ``batcher`` if one is given."""
        registry = cls(engine.settings, metrics=batcher.metrics.parent if batcher else None)
        registry.add(engine, batcher=batcher)
        return registry

    # -- lookup ----------------------------------------------------------------------------

    def get(self, bundle: str | None = None) -> Served:
        """The bundle ``name@version``, or the default for ``None`` / ``""``."""
        if bundle is not None and not isinstance(bundle, str):
            raise invalid(f"bundle must be a name@version string, not {type(bundle).__name__}")
        with self._lock:
            ref = bundle or self._default
            served = self._served.get(ref) if ref else None
            refs = list(self._served)
        if served is None:
            raise unknown_bundle(bundle or "(default)", refs)
        return served

    @property
    def default(self) -> Served:
        return self.get(None)

    def refs(self) -> list[str]:
        """The bundles served, default first."""
        with self._lock:
            default = self._default
            return sorted(self._served, key=lambda r: r != default)

    def served(self) -> list[Served]:
        with self._lock:
            default = self._default
            return sorted(self._served.values(), key=lambda s: s.ref != default)

    def describe(self) -> tuple[ServedBundle, ...]:
        """Every bundle served, default first."""
        with self._lock:
            default = self._default
            served = list(self._served.values())
        listing = [s.engine.describe(default=s.ref == default) for s in served]
        return tuple(sorted(listing, key=lambda b: not b.default))

    def info(self, bundle: str | None = None) -> EncoderInfo:
        """The named bundle's (or the default's) info, with its batching and every bundle."""
        served = self.get(bundle)
        return replace(
            served.engine.info(),
            batching=served.batcher.batching_info(),
            bundles=self.describe(),
        )

    # -- changes ---------------------------------------------------------------------------

    def add(
        self, engine: EncoderEngine, *, batcher: Batcher | None = None, default: bool = False
    ) -> Served:
        """Serve ``engine`` as it is: one not warmed up answers ``unavailable`` (warming up)
        until :meth:`warmup`. The first bundle added is the default unless another says so."""
        ref = engine.bundle.manifest.ref
        self._reserve(ref)
        try:
            batcher = batcher or Batcher(
                engine, self.settings.encoder, metrics=self.metrics, traffic=self.traffic
            )
        except BaseException:
            with self._lock:
                self._loading.discard(ref)
            raise
        return self._publish(Served(engine, batcher), default=default)

    def load(self, bundle: Bundle, *, default: bool = False) -> Served:
        """Build, warm up and then serve ``bundle`` (at run time): nothing else waits on it; a
        failure to load leaves the registry as it was."""
        ref = bundle.manifest.ref
        self._reserve(ref)
        engine: EncoderEngine | None = None
        try:
            t0 = time.perf_counter()
            engine = EncoderEngine(bundle, self.settings)
            engine.warmup()
            batcher = Batcher(
                engine, self.settings.encoder, metrics=self.metrics, traffic=self.traffic
            )
        except BaseException:
            with self._lock:
                self._loading.discard(ref)
            if engine is not None:
                engine.close()
            raise
        served = self._publish(Served(engine, batcher), default=default)
        with self._lock:
            self._runtime.add(ref)
        log.info("bundle %s loaded in %.1f s", ref, time.perf_counter() - t0)
        return served

    def loaded_at_runtime(self, bundle: str) -> bool:
        """Whether ``bundle`` is served because :meth:`load` loaded it (not configured)."""
        with self._lock:
            return bundle in self._runtime and bundle in self._served

    def set_default(self, bundle: str) -> None:
        served = self.get(bundle)
        with self._lock:
            self._default = served.ref
        log.info("bundle %s is now the default", served.ref)

    def drop(
        self, bundle: str, *, grace_s: float | None = None, runtime_only: bool = False
    ) -> None:
        """Stop serving ``bundle``: new requests to it get ``not_found`` at once; work already
        queued gets ``grace_s`` (default: the request timeout) to finish, then the bundle's
        batcher and sessions close and its metric series go. The default cannot be dropped
        (``conflict``): make another bundle the default first; with ``runtime_only`` neither
        can a bundle configured at start-up (only one :meth:`load` loaded)."""
        with self._lock:
            served = self._served.get(bundle)
            if served is None:
                refs = list(self._served)
            elif bundle == self._default:
                raise ClipsearchError(
                    ErrorType.conflict,
                    f"bundle {bundle!r} is the default; make another bundle the default first",
                    {"bundle": bundle},
                )
            elif runtime_only and bundle not in self._runtime:
                raise ClipsearchError(
                    ErrorType.conflict,
                    f"bundle {bundle!r} was configured at start-up, not loaded at run time; "
                    "only a restart without it stops serving it",
                    {"bundle": bundle, "configured": True},
                )
            else:
                del self._served[bundle]
                self._runtime.discard(bundle)
        if served is None:
            raise unknown_bundle(bundle, refs)
        grace = self.settings.encoder.request_timeout_s if grace_s is None else grace_s
        self._drain(served, time.monotonic() + grace)
        served.batcher.close(remove_metrics=True)
        served.engine.close()
        del served
        refreeze(f"dropping bundle {bundle}")  # frozen at start-up, its objects can go now
        log.info("bundle %s dropped", bundle)

    def _reserve(self, ref: str) -> None:
        with self._lock:
            if self._closed:
                raise ClipsearchError(ErrorType.unavailable, "the encoder is closed")
            if ref in self._served or ref in self._loading:
                raise ClipsearchError(
                    ErrorType.conflict,
                    f"bundle {ref} is already served or being loaded",
                    {"bundle": ref},
                )
            self._loading.add(ref)

    def _publish(self, served: Served, *, default: bool) -> Served:
        with self._lock:
            self._loading.discard(served.ref)
            closed = self._closed
            if not closed:
                self._served[served.ref] = served
                if default or self._default is None:
                    self._default = served.ref
        if closed:  # closed while it loaded
            served.batcher.close(remove_metrics=True)
            served.engine.close()
            raise ClipsearchError(ErrorType.unavailable, "the encoder is closed")
        return served

    @staticmethod
    def _drain(served: Served, deadline: float) -> None:
        batcher = served.batcher
        while any(batcher.queue_depth(lane) for lane in LANES) and time.monotonic() < deadline:
            time.sleep(_DRAIN_POLL_S)

    # -- state -----------------------------------------------------------------------------

    def warmup(self) -> None:
        """Warm up every engine not yet ready (start-up)."""
        for served in self.served():
            if not served.engine.ready:
                served.engine.warmup()

    def queue_depth(self, lane: Lane) -> int:
        return sum(s.batcher.queue_depth(lane) for s in self.served())

    def health(self) -> EncoderHealth:
        """Ready while the default bundle is (it serves every request that names none); the
        detail gives each bundle's own state, so a broken extra bundle is visible without
        taking the whole encoder out of rotation."""
        served = self.served()
        if self._closed or not served:
            return EncoderHealth(False, "the encoder is closed")
        states = {s.ref: s.batcher.health() for s in served}
        default = states[served[0].ref]
        detail = {
            "bundles": {
                ref: {"ready": h.ready, **({"reason": h.reason} if h.reason else {})}
                for ref, h in states.items()
            },
            **default.detail,
        }
        return EncoderHealth(default.ready, default.reason, detail)

    def close(self) -> None:
        """Close every bundle; lookups still find them (their batchers answer ``unavailable``)."""
        with self._lock:
            self._closed = True
            served = list(self._served.values())
        for s in served:
            s.batcher.close()
            s.engine.close()
