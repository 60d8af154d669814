"""``EmbeddingClient`` over encoder workers (``clipsearch worker``) reached by gRPC.

One channel per worker. Workers may serve several bundles each, and different workers different
bundles: the client learns which worker serves which bundle from their ``Info`` (and every
``Health`` answer) and sends a bundle's requests only to the workers that serve it, round-robin.
A call names its bundle (``name@version``) or none: then the client's default bundle, the default
of the first worker (in endpoint order) that answered. Requests always carry the bundle
explicitly, so two workers with different defaults never mix models. A bundle no worker serves
is ``not_found`` naming the bundles served (asked again first, in case a worker loaded it since).

Bundles loaded at run time (``load_bundle``: a rollout's next model) are remembered, spec and
``name@version``, until ``drop_bundle``. A worker that was down during the load, or restarted
since (a fresh process serves only its configured bundles), is sent ``LoadBundle`` again by the
health watch as soon as a probe finds it ready without one of them: off the request path, one
call per worker and bundle at a time, backing off after a failure (``reload_backoff_s``, doubled
up to ``reload_backoff_max_s``; the first failure of a streak is logged as a warning, the rest at
debug). Until it answers, that bundle's requests go to the workers that serve it.

Routing around a sick worker (issue 19):

- **Health is watched in the background**, never on a request's path: one thread per client asks
  every worker's ``Health`` RPC every ``probe_interval_s`` with a ``probe_timeout_s`` deadline.
  Each worker is ``serving``, ``ejected`` or ``down`` (unreachable, warming up, shutting down).
  ``health()`` answers from that cached state in microseconds (``/health/ready`` relies on it).
- **Ejection** (Envoy's outlier detection): ``eject_after`` consecutive timeouts or errors, from
  probes or requests (a call that a hedged copy elsewhere beat counts as a timeout), eject a
  worker for a back-off (``eject_base_s``, doubled each time it is ejected again, up to
  ``eject_max_s``; forgiven after ``forgive_after_s`` of serving). It is re-admitted by the first
  probe that passes after its back-off. Ejected and down workers get no requests while another
  worker serves the bundle; when none does, they are tried anyway. Request failures never eject
  the last serving worker (Envoy's ``max_ejection_percent``); failed probes can.
- **Hedging** ("The Tail at Scale"): an interactive embed with no answer after the hedge delay
  (the p95 of the last ``hedge_window`` latencies of that kind, never below ``hedge_floor_s``) is
  sent to another serving worker too; the first answer wins and the other call is cancelled.
  Hedges are rate-limited to ``hedge_budget`` of the calls, so a slow cluster is not doubled.
- **Retries**: UNAVAILABLE, and DEADLINE_EXCEEDED with time left, move on to another worker
  serving the bundle, up to ``settings.retries`` times (embeds are pure, so that is always safe);
  an interactive try gets its share of the call's deadline so that a hung worker leaves time to
  retry. NOT_FOUND from a worker that dropped the bundle moves on too (and is forgotten there).
  Nothing else is retried: a full lane or bad input would fail the same way elsewhere. A bulk
  call whose worker the watch ejects (a stalled stream) is cancelled and sent to another worker.
- **Keepalive pings** on every channel: a frozen process keeps its TCP connection, and only pings
  or deadlines notice (the worker permits them, see ``service/worker/server.py``).

What grpcio's core gives, and why most of the above is ours: keepalive is core's (channel
options). Core's ``round_robin`` over one channel cannot route by bundle (a call cannot pick its
subchannel), its client-side health checking (gRFC A17) needs ``grpc.health.v1`` Watch on the
workers and only drops subchannels the server *says* are unhealthy, never a frozen one; the
service config's ``retryPolicy`` retries only on the same channel and never a DEADLINE_EXCEEDED,
and ``hedgingPolicy`` is not implemented in C-core (grpc/proposal#287). Failures come back as the
worker's own ``ClipsearchError`` (see ``service/rpc/status.py``); one bad image fails alone as
with the in-process client. Metrics (``metrics.registry``): per worker its state, ejections,
hedges and retries, and the hedge delay in use.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import grpc
import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from service.core.config import EncoderSettings
from service.core.domain import Lane
from service.core.embeddings import (
    EncoderHealth,
    EncoderInfo,
    ImageEmbedding,
    ServedBundle,
    TextEmbeddings,
)
from service.core.errors import ClipsearchError, ErrorType, invalid, not_found, too_large
from service.rpc import codec
from service.rpc.proto import encoder_pb2 as pb
from service.rpc.proto import encoder_pb2_grpc as pb_grpc
from service.rpc.status import from_rpc_error

log = logging.getLogger(__name__)

T = TypeVar("T")
Group = tuple[list[int], list[bytes]]  # one request: the items' indices, and their bytes
HEALTH_TIMEOUT_S = 2.0
MAX_RECONNECT_BACKOFF_MS = 5_000
_MESSAGE_MARGIN = 64 * 1024  # room for the request's own fields
_ITEM_OVERHEAD = 16  # tag and length of one repeated bytes item, generously
# Workers that never answered are asked again (in the background) at most this often.
ROUTES_RETRY_S = 5.0
# A bundle no worker is known to serve makes the client ask them all again, at most this often.
ROUTES_REFRESH_S = 1.0
# LoadBundle answers once the bundle is warmed up: a large model (or a TensorRT build) is slow.
LOAD_BUNDLE_TIMEOUT_S = 600.0
# Failures of one worker's LoadBundle that say nothing about the bundle (it is down, or slow, or
# loading that bundle already for another call: conflict): the other workers' answers decide.
_WORKER_GONE = frozenset({ErrorType.unavailable, ErrorType.timeout, ErrorType.conflict})

SERVING, EJECTED, DOWN = "serving", "ejected", "down"
STATES = (SERVING, EJECTED, DOWN)
_WATCH_STEP_S = 0.1  # how often a waiting call looks at its workers' state (stalls, hedges)
_PER_TRY_MIN_S = 1.0  # an interactive try never gets less of the call's deadline than this


@dataclass(frozen=True)
class HealthPolicy:
    """How the client watches, ejects, re-admits and hedges (see the module docstring)."""

    probe_interval_s: float = 0.5
    probe_timeout_s: float = 1.0
    eject_after: int = 3  # consecutive timeouts or errors
    eject_base_s: float = 2.0
    eject_max_s: float = 30.0
    forgive_after_s: float = 60.0
    hedge_floor_s: float = 0.05
    hedge_initial_s: float = 0.5  # until hedge_min_samples latencies were seen
    hedge_quantile: float = 0.95
    hedge_window: int = 200
    hedge_min_samples: int = 20
    hedge_budget: float = 0.1  # hedges per call, on average
    hedge_burst: float = 10.0
    keepalive_time_s: float = 10.0
    keepalive_timeout_s: float = 5.0
    reload_backoff_s: float = 1.0  # after a failed LoadBundle of a bundle a worker lost
    reload_backoff_max_s: float = 30.0


class HedgeDelay:
    """The delay before a hedge: the ``quantile`` of the last ``window`` latencies (the initial
    delay until ``min_samples`` were seen), never below ``floor_s``."""

    def __init__(
        self,
        *,
        floor_s: float,
        initial_s: float,
        quantile: float = 0.95,
        window: int = 200,
        min_samples: int = 20,
    ) -> None:
        if not 0 < quantile <= 1 or window < 1 or min_samples < 1:
            raise ValueError("hedge delay: 0 < quantile <= 1, window >= 1, min_samples >= 1")
        self.floor_s = floor_s
        self.initial_s = initial_s
        self.quantile = quantile
        self.min_samples = min(min_samples, window)
        self._seen: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        with self._lock:
            self._seen.append(seconds)

    def delay(self) -> float:
        with self._lock:
            seen = sorted(self._seen)
        if len(seen) < self.min_samples:
            return max(self.floor_s, self.initial_s)
        rank = max(0, math.ceil(self.quantile * len(seen)) - 1)  # nearest-rank percentile
        return max(self.floor_s, seen[rank])


class Budget:
    """A token bucket: each call earns ``rate`` tokens (at most ``burst``), a hedge spends one."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._lock = threading.Lock()

    def earn(self) -> None:
        with self._lock:
            self._tokens = min(self.burst, self._tokens + self.rate)

    def take(self) -> bool:
        with self._lock:
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True


class Ejection:
    """One worker's state machine: ``serving``, ``ejected`` or ``down``. The clock is passed in.

    ``failure`` counts a timeout or error; ``eject_after`` in a row eject the worker for a back-off
    that doubles with each ejection (forgiven after ``forgive_after_s`` of serving). ``unreachable``
    (nothing listens, warming up, shutting down) makes a serving worker ``down`` at once, without
    ejecting it: it comes back with the next probe that passes. Only a probe re-admits an ejected
    worker, and only once its back-off has passed."""

    def __init__(self, policy: HealthPolicy, now: float = 0.0) -> None:
        self.policy = policy
        self.state = SERVING  # optimistic until the first probe, like Envoy's hosts
        self.failures = 0
        self.strikes = 0  # ejections not yet forgiven
        self.until = float("-inf")  # end of the current back-off
        self.since = now  # when it last started serving
        self.reason: str | None = None

    def failure(
        self, now: float, reason: str, *, unreachable: bool = False, may_eject: bool = True
    ) -> str | None:
        """Returns the new state when this failure changed it. ``may_eject`` False: the caller
        knows no other worker serves, and ejecting the last one helps no call (Envoy's
        ``max_ejection_percent``): the failures are counted, the worker stays in rotation."""
        self.reason = reason
        self.failures += 1
        if (
            self.state != EJECTED
            and self.failures >= self.policy.eject_after
            and not unreachable
            and may_eject
        ):
            if self.state == SERVING and now - self.since >= self.policy.forgive_after_s:
                self.strikes = 0
            backoff = self.policy.eject_base_s * 2.0**self.strikes
            self.strikes += 1
            self.until = now + min(self.policy.eject_max_s, backoff)
            self.state = EJECTED
            return EJECTED
        if unreachable and self.state == SERVING:
            self.state = DOWN
            return DOWN
        return None

    def not_ready(self, reason: str) -> str | None:
        """The worker answered that it cannot serve (warming up, stuck, shutting down)."""
        self.reason = reason
        self.failures = 0
        if self.state == SERVING:
            self.state = DOWN
            return DOWN
        return None

    def success(self, now: float, *, probe: bool) -> str | None:
        self.failures = 0
        if self.state == SERVING or (self.state == EJECTED and (not probe or now < self.until)):
            return None
        self.state = SERVING
        self.since = now
        self.reason = None
        return SERVING


class ClientMetrics:
    """The client's series, on its own registry (the owner exposes it)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.state = Gauge(
            "clipsearch_encoder_client_worker_state",
            "1 for each worker's state (serving, ejected, down), as the health watch sees it",
            ["endpoint", "state"],
            registry=r,
        )
        self.ejections = Counter(
            "clipsearch_encoder_client_ejections_total",
            "Workers ejected after consecutive timeouts or errors",
            ["endpoint"],
            registry=r,
        )
        self.hedges = Counter(
            "clipsearch_encoder_client_hedges_total",
            "Second copies of slow interactive calls, by the worker they went to",
            ["endpoint"],
            registry=r,
        )
        self.retries = Counter(
            "clipsearch_encoder_client_retries_total",
            "Calls moved on from a worker, by that worker and why (the gRPC code, or stalled)",
            ["endpoint", "reason"],
            registry=r,
        )
        self.hedge_delay = Gauge(
            "clipsearch_encoder_client_hedge_delay_seconds",
            "The current hedge delay per input kind",
            ["kind"],
            registry=r,
        )
        self.reloads = Counter(
            "clipsearch_encoder_client_bundle_reloads_total",
            "LoadBundle sent by the health watch to a worker that lost a bundle loaded at run "
            "time, by worker, bundle and result (loaded, failed)",
            ["endpoint", "bundle", "result"],
            registry=r,
        )

    def set_state(self, endpoint: str, state: str) -> None:
        for s in STATES:
            self.state.labels(endpoint, s).set(1.0 if s == state else 0.0)


@dataclass
class _Worker:
    """What the health watch knows of one worker."""

    endpoint: str
    ejection: Ejection
    reply: pb.HealthResponse | None = None  # its last Health answer
    probed: bool = False


@dataclass(eq=False)
class _Attempt:
    index: int
    future: Any  # grpc.Future and grpc.Call
    started: float
    hedge: bool = False
    cancelled: bool = field(default=False)


@dataclass
class _Reload:
    """The health watch's LoadBundle of one bundle to one worker that lacks it."""

    failures: int = 0  # in a row
    not_before: float = float("-inf")  # back-off after a failure
    in_flight: bool = False
    error: str | None = None  # the last failure's message


@dataclass(frozen=True)
class _Route:
    """What one worker serves, as it last said."""

    default: str
    bundles: tuple[str, ...]


class GrpcEmbeddingClient:
    """Implements :class:`service.clients.base.EmbeddingClient` over encoder workers."""

    def __init__(
        self,
        endpoints: Sequence[str],
        settings: EncoderSettings,
        *,
        max_message_mb: int = 64,
        policy: HealthPolicy | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if not endpoints:
            raise invalid("the gRPC embedding client needs at least one worker endpoint")
        self.endpoints = list(endpoints)
        self.settings = settings
        self.policy = policy = policy or HealthPolicy()
        self.metrics = ClientMetrics(registry)
        self.max_message_bytes = max_message_mb * 1024 * 1024
        options = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            # grpc backs off up to 120 s between reconnects by default: a restarted worker
            # would sit unused for minutes.
            ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
            # A frozen worker keeps its TCP connection: pings notice it (the worker allows them).
            ("grpc.keepalive_time_ms", int(policy.keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(policy.keepalive_timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
        ]
        self._channels = [grpc.insecure_channel(e, options=options) for e in self.endpoints]
        self._stubs = [pb_grpc.EncoderStub(channel) for channel in self._channels]
        self._turn = itertools.count()  # next() on it is atomic under the GIL
        self._infos: dict[str, EncoderInfo] = {}  # per bundle, asked once
        self._info_lock = threading.Lock()
        self._routes: dict[int, _Route] = {}  # endpoint index -> what it serves
        self._listing: dict[str, ServedBundle] = {}  # every bundle a worker said it serves
        self._default: str | None = None
        self._routes_lock = threading.Lock()
        self._refreshed = float("-inf")
        self._asked_unknown = float("-inf")
        self._runtime: dict[str, str] = {}  # name@version -> spec, loaded by load_bundle
        self._reloads: dict[tuple[int, str], _Reload] = {}  # (endpoint index, name@version)
        self._reload_lock = threading.Lock()
        self._closed = threading.Event()
        now = time.monotonic()
        self._workers = [_Worker(e, Ejection(policy, now)) for e in self.endpoints]
        self._state_lock = threading.Lock()
        for endpoint in self.endpoints:
            self.metrics.set_state(endpoint, SERVING)
        self._delays = {
            kind: HedgeDelay(
                floor_s=policy.hedge_floor_s,
                initial_s=policy.hedge_initial_s,
                quantile=policy.hedge_quantile,
                window=policy.hedge_window,
                min_samples=policy.hedge_min_samples,
            )
            for kind in ("texts", "images")
        }
        self._budget = Budget(policy.hedge_budget, policy.hedge_burst)
        self._probed = threading.Event()  # the first round of probes is in
        self._watcher = threading.Thread(
            target=self._watch, name="encoder-health-watch", daemon=True
        )
        self._watcher.start()

    # -- EmbeddingClient -------------------------------------------------------------------

    def info(self, *, bundle: str | None = None) -> EncoderInfo:
        """The bundle's info (default: the default bundle's), asked once from a worker serving
        it; ``bundles`` lists every bundle the workers serve, the default first."""
        self._check_open()
        ref, candidates = self._candidates(bundle)
        with self._info_lock:
            info = self._infos.get(ref)
        if info is None:
            request = pb.InfoRequest(bundle=ref)
            timeout = self.settings.request_timeout_s
            reply = self._invoke(
                lambda stub, left: stub.Info.future(request, timeout=min(left, timeout)),
                candidates,
            )
            info = codec.info_from_proto(reply)
            self._note(info)
            with self._info_lock:
                info = self._infos.setdefault(ref, info)
        return replace(info, bundles=self.bundles())

    def bundles(self) -> tuple[ServedBundle, ...]:
        """Every bundle the workers are known to serve, the client's default first (a bundle
        every worker has unloaded since is not listed)."""
        with self._routes_lock:
            default = self._default
            served = {ref for route in self._routes.values() for ref in route.bundles}
            listing = [
                replace(b, default=b.ref == default)
                for b in self._listing.values()
                if b.ref in served
            ]
        return tuple(sorted(listing, key=lambda b: (not b.default, b.ref)))

    # -- bundles at run time ---------------------------------------------------------------

    def load_bundle(self, spec: str) -> tuple[ServedBundle, bool]:
        """Have every worker serve the bundle ``spec`` names (``LoadBundle``: each resolves it
        and verifies its checksums as an in-process gateway would); the bundle, and whether any
        worker loaded it now (False: they all served it already). A refusal for the bundle
        itself (``not_found``, ``invalid_input``, from any worker) unloads it again from the
        workers that loaded it and is raised; workers that are down are skipped as long as one
        loads it (the health watch loads it there once they are up, see the module docstring)."""
        self._check_open()
        if not isinstance(spec, str) or not spec.strip():
            raise invalid("bundle must be a non-empty name")
        request = pb.LoadBundleRequest(spec=spec)
        calls = [s.LoadBundle.future(request, timeout=LOAD_BUNDLE_TIMEOUT_S) for s in self._stubs]
        answers: dict[int, pb.LoadBundleResponse] = {}
        errors: dict[int, ClipsearchError] = {}
        for index, call in enumerate(calls):
            try:
                answers[index] = call.result()
            except grpc.RpcError as err:
                errors[index] = from_rpc_error(err, endpoint=self.endpoints[index])
        refused = [e for e in errors.values() if e.type not in _WORKER_GONE]
        refs = {codec.bundle_from_proto(a.bundle).ref for a in answers.values()}
        if refused or len(refs) > 1 or not answers:
            loaded = [i for i, a in answers.items() if a.loaded]
            for index in loaded:  # nothing changed, on every worker
                self._unload(index, codec.bundle_from_proto(answers[index].bundle).ref, 0.0)
            if len(refs) > 1 and not refused:
                raise invalid(
                    f"bundle {spec!r} names different bundles on different workers: "
                    + ", ".join(sorted(refs)),
                    {"bundle": spec, "refs": sorted(refs)},
                )
            first = (refused or list(errors.values()))[0]
            raise first
        for index, error in errors.items():
            log.warning("encoder %s did not load %s: %s", self.endpoints[index], spec, error)
        served = codec.bundle_from_proto(next(iter(answers.values())).bundle)
        with self._routes_lock:
            self._listing[served.ref] = served
        if any(a.loaded for a in answers.values()):  # a spec that loads it on a fresh worker
            with self._reload_lock:
                self._runtime[served.ref] = spec
        self._refresh(force=True)  # route to it at once
        return served, any(a.loaded for a in answers.values())

    def drop_bundle(
        self, bundle: str, *, grace_s: float | None = None, runtime_only: bool = True
    ) -> None:
        """Have every worker that loaded ``bundle`` at run time stop serving it
        (``UnloadBundle``); a worker started with it keeps it (it refuses, and that is logged).
        ``runtime_only`` is always true here: the workers enforce it."""
        del runtime_only
        self._check_open()
        with self._reload_lock:  # first, so that the health watch does not load it again
            self._runtime.pop(bundle, None)
            for key in [k for k, r in self._reloads.items() if k[1] == bundle and not r.in_flight]:
                del self._reloads[key]
        for index in self._serving(bundle):
            self._unload(index, bundle, grace_s or 0.0)
        self._refresh(force=True)

    def _unload(self, index: int, bundle: str, grace_s: float) -> None:
        request = pb.UnloadBundleRequest(bundle=bundle, grace_s=grace_s)
        try:
            self._stubs[index].UnloadBundle(
                request, timeout=grace_s + self.settings.request_timeout_s
            )
        except grpc.RpcError as err:
            error = from_rpc_error(err, endpoint=self.endpoints[index])
            if error.type is not ErrorType.not_found:
                log.warning("encoder %s keeps %s: %s", self.endpoints[index], bundle, error)

    def embed_texts(
        self, texts: Sequence[str], *, lane: Lane = "interactive", bundle: str | None = None
    ) -> TextEmbeddings:
        self._check_open()
        for i, text in enumerate(texts):
            if not isinstance(text, str):  # protobuf could not carry it; same error as in-process
                raise invalid(f"text {i} is not a string", {"index": i})
        ref, candidates = self._candidates(bundle)
        request = pb.EmbedRequest(
            lane=codec.lane_to_proto(lane), texts=pb.Texts(items=texts), bundle=ref
        )
        response = self._invoke(
            lambda stub, left: stub.Embed.future(request, timeout=left),
            candidates,
            hedge="texts" if lane == "interactive" else None,
        )
        if response.WhichOneof("output") != "texts":
            raise ClipsearchError(ErrorType.internal, "the worker answered texts without texts")
        return codec.texts_from_proto(response.texts)

    def embed_images(
        self, images: Sequence[bytes], *, lane: Lane = "interactive", bundle: str | None = None
    ) -> list[np.ndarray | ClipsearchError]:
        results = self.encode_images(images, lane=lane, bundle=bundle)
        return [r if isinstance(r, ClipsearchError) else r.joint for r in results]

    def encode_images(
        self, images: Sequence[bytes], *, lane: Lane = "interactive", bundle: str | None = None
    ) -> list[ImageEmbedding | ClipsearchError]:
        self._check_open()
        wire_lane = codec.lane_to_proto(lane)
        ref, candidates = self._candidates(bundle)
        results: list[ImageEmbedding | ClipsearchError | None] = [None] * len(images)
        sendable: list[tuple[int, bytes]] = []
        for i, data in enumerate(images):
            if not isinstance(data, bytes | bytearray | memoryview):
                results[i] = invalid("image is not bytes")  # the engine's own wording
            elif len(data) + _ITEM_OVERHEAD > self.max_message_bytes - _MESSAGE_MARGIN:
                results[i] = too_large(
                    f"image is {len(data)} bytes; the largest message to the encoder "
                    f"is {self.max_message_bytes} bytes"
                )
            else:
                sendable.append((i, bytes(data)))
        groups = self._groups(sendable, lane)
        if len(groups) == 1:
            request = pb.EmbedRequest(
                lane=wire_lane, images=pb.Images(items=groups[0][1]), bundle=ref
            )
            reply = self._invoke(
                lambda stub, left: stub.Embed.future(request, timeout=left),
                candidates,
                hedge="images" if lane == "interactive" else None,
            )
            replies = [reply]
        elif groups:
            replies = list(self._stream(groups, wire_lane, ref, candidates).results)
        else:
            replies = []
        if len(replies) != len(groups):
            raise ClipsearchError(ErrorType.internal, "the worker answered the wrong number")
        for (indices, _), reply in zip(groups, replies, strict=True):
            for i, value in zip(indices, self._image_values(reply, len(indices)), strict=True):
                results[i] = value
        return [r if r is not None else _missing() for r in results]

    def ready(self) -> bool:
        return self.health().ready

    def health(self) -> EncoderHealth:
        """Ready while at least one worker serving the default bundle is (serving, and its last
        ``Health`` said ready); the reason names every worker that is not. A worker that serves
        other bundles only is not counted either way (it serves a rollout's bundle, say). A
        worker's ``reloading`` maps each bundle loaded at run time that it lacks, and that the
        watch is loading on it again, to the last failure (or "loading"). Answers
        from the health watch's cached state; only the very first call waits for its first
        round of probes (at most ``probe_timeout_s``)."""
        if self._closed.is_set():
            return EncoderHealth(False, "the embedding client is closed")
        self._probed.wait(self.policy.probe_timeout_s + 1.0)
        expected = self._default
        with self._routes_lock:
            routes = dict(self._routes)
        status: dict[str, dict[str, object]] = {}
        ready = False
        with self._state_lock:
            workers = [
                (w.endpoint, w.ejection.state, w.ejection.reason, w.reply) for w in self._workers
            ]
        with self._reload_lock:  # bundles loaded at run time that a worker lacks, being reloaded
            reloading = {key: r.error or "loading" for key, r in self._reloads.items()}
        for index, (endpoint, state, reason, reply) in enumerate(workers):
            route = routes.get(index)
            served = list(route.bundles) if route else list(reply.bundles) if reply else []
            entry: dict[str, object] = {"state": state}
            if reply is not None and reply.bundle:
                entry.update(bundle=reply.bundle, bundles=list(reply.bundles) or [reply.bundle])
            lacking = {ref: why for (i, ref), why in reloading.items() if i == index}
            if lacking:
                entry["reloading"] = lacking
            if expected is not None and served and expected not in served:
                entry["ready"] = state == SERVING and bool(reply and reply.ready)
                entry["serves_default"] = False
                entry["note"] = f"serves {', '.join(served)}, not the default {expected}"
            else:
                up = state == SERVING and reply is not None and reply.ready
                entry["ready"] = up
                ready = ready or up
                if not up:
                    entry["reason"] = (
                        reason or (reply.reason if reply is not None else None) or "not ready"
                    )
                    if state != SERVING:
                        entry["reason"] = f"{state}: {entry['reason']}"
            status[endpoint] = entry
        down = [f"{e}: {s['reason']}" for e, s in status.items() if "reason" in s]
        why = None
        if down or not ready:
            why = ("" if ready else "no encoder worker is ready: ") + (
                "; ".join(down) or f"no worker serves the default bundle {expected}"
            )
        return EncoderHealth(ready, why, {"endpoints": status})

    def wait_ready(self, timeout_s: float, *, interval_s: float = 0.25) -> EncoderHealth:
        """Block until a worker is ready (start-up); raises ``unavailable`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            health = self.health()
            left = deadline - time.monotonic()
            if health.ready:
                return health
            if left <= 0 or self._closed.is_set():
                raise ClipsearchError(
                    ErrorType.unavailable,
                    f"no encoder worker became ready within {timeout_s:g} s: {health.reason}",
                    health.detail,
                )
            self._closed.wait(min(interval_s, left))  # close() ends the wait at once

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        for channel in self._channels:
            channel.close()
        if self._watcher is not threading.current_thread():
            self._watcher.join(self.policy.probe_timeout_s + 1.0)
        log.info("gRPC embedding client closed (%s)", ", ".join(self.endpoints))

    # -- internals -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise ClipsearchError(ErrorType.unavailable, "the embedding client is closed")

    def _invoke(
        self,
        start: Callable[[pb_grpc.EncoderStub, float], Any],
        candidates: Sequence[int],
        *,
        hedge: str | None = None,
    ) -> Any:
        """``start(stub, seconds_left)`` starts a call (a grpc future) on a worker from
        ``candidates`` (endpoint indices), serving workers first, round-robin. Moves on after
        UNAVAILABLE, DEADLINE_EXCEEDED with time left, NOT_FOUND from a worker that no longer
        serves the bundle, or when the health watch ejects the worker while the call waits
        (a stalled stream); ``hedge`` (an input kind) sends a second copy to another worker
        after the hedge delay. The first answer wins; the calls still running are cancelled."""
        deadline = time.monotonic() + self.settings.request_timeout_s
        order = self._order(candidates)
        retries = self.settings.retries
        tries = retries + 1
        done: queue.Queue[_Attempt] = queue.Queue()
        live: list[_Attempt] = []
        tried: set[int] = set()
        gone: set[int] = set()  # workers that said they no longer serve the bundle
        error: ClipsearchError | None = None
        delay = self._delays[hedge].delay() if hedge else math.inf
        if hedge:
            self._budget.earn()
            self.metrics.hedge_delay.labels(hedge).set(delay)

        def launch(*, hedging: bool = False) -> bool:
            busy = {a.index for a in live}
            pool = [i for i in order if i not in gone and i not in busy]
            if hedging:  # a copy only to another serving worker
                pool = [i for i in pool if self._state(i) == SERVING]
            fresh = [i for i in pool if i not in tried]
            if not pool:
                return False
            pick = (fresh or pool)[0]
            now = time.monotonic()
            left = deadline - now
            if left <= 0:
                return False
            if hedge and not hedging:  # leave time for the tries after this one
                left = min(left, max(_PER_TRY_MIN_S, left / max(1, tries)))
            try:
                future = start(self._stubs[pick], left)
            except ValueError as exc:  # grpc's answer on a channel that close() just closed
                self._check_open()
                raise ClipsearchError(ErrorType.internal, f"gRPC call failed: {exc}") from exc
            attempt = _Attempt(pick, future, now, hedge=hedging)
            tried.add(pick)
            live.append(attempt)
            future.add_done_callback(lambda _: done.put(attempt))
            return True

        def move_on(attempt: _Attempt, reason: str) -> None:
            nonlocal retries
            if retries > 0 and launch():
                retries -= 1
                self.metrics.retries.labels(self.endpoints[attempt.index], reason).inc()

        launch()
        hedge_at = time.monotonic() + delay
        try:
            while live:
                now = time.monotonic()
                if now >= deadline:
                    break
                wake = min(deadline, hedge_at, now + _WATCH_STEP_S)
                try:
                    attempt = done.get(timeout=max(0.0, wake - now))
                except queue.Empty:
                    now = time.monotonic()
                    if now >= hedge_at:
                        hedge_at = math.inf  # one copy per call at most
                        if self._budget.take():
                            if launch(hedging=True):
                                self.metrics.hedges.labels(self.endpoints[live[-1].index]).inc()
                            else:
                                self._budget.earn()  # no other worker: nothing spent
                    for stalled in [a for a in live if self._state(a.index) != SERVING]:
                        others = [i for i in order if i != stalled.index and i not in gone]
                        if retries > 0 and any(self._state(i) == SERVING for i in others):
                            live.remove(stalled)
                            stalled.future.cancel()
                            move_on(stalled, "stalled")
                    continue
                if attempt not in live:
                    continue  # cancelled by us
                live.remove(attempt)
                try:
                    result = attempt.future.result()
                except grpc.RpcError as err:
                    index = attempt.index
                    failure = from_rpc_error(err, endpoint=self.endpoints[index])
                    code = err.code()
                    log.warning("encoder %s: %s", self.endpoints[index], failure.message)
                    error = failure
                    if code is grpc.StatusCode.NOT_FOUND and len(candidates) > 1:
                        self._forget(index, failure)
                        gone.add(index)
                        if not live:
                            launch()
                        continue
                    if code is grpc.StatusCode.UNAVAILABLE:
                        self._failed(index, failure.message, unreachable=True)
                    elif code is grpc.StatusCode.DEADLINE_EXCEEDED:
                        self._failed(index, "timed out: " + failure.message)
                    elif code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
                        self._failed(index, failure.message)
                        continue
                    else:
                        continue  # the request's own fault or a full lane: the same elsewhere
                    if not live and time.monotonic() < deadline:
                        move_on(attempt, code.name)
                    continue
                except grpc.FutureCancelledError:
                    continue
                elapsed = time.monotonic() - attempt.started
                if hedge:
                    self._delays[hedge].observe(elapsed)
                self._succeeded(attempt.index)
                if attempt.hedge:  # the first copy is still waiting: a strike against its worker
                    for slow in live:
                        if not slow.hedge:
                            self._failed(slow.index, "slower than a hedged copy elsewhere")
                return result
        finally:
            for attempt in live:
                attempt.future.cancel()
        if error is not None and (time.monotonic() < deadline or error.type is ErrorType.timeout):
            raise error from None
        raise ClipsearchError(ErrorType.timeout, "the encoder call's deadline passed")

    # -- health watch ----------------------------------------------------------------------

    def _state(self, index: int) -> str:
        return self._workers[index].ejection.state

    def _order(self, candidates: Sequence[int]) -> list[int]:
        """Serving workers first, round-robin; the others after them, as a last resort."""
        unique = list(dict.fromkeys(candidates))
        turn = next(self._turn)
        serving = [i for i in unique if self._state(i) == SERVING]
        others = [i for i in unique if i not in serving]
        if serving:
            k = turn % len(serving)
            serving = serving[k:] + serving[:k]
        return serving + others

    def _transition(self, index: int, change: Callable[[Ejection], str | None]) -> None:
        worker = self._workers[index]
        with self._state_lock:
            before = worker.ejection.state
            after = change(worker.ejection)
        if after is None:
            return
        self.metrics.set_state(worker.endpoint, after)
        if after == EJECTED:
            self.metrics.ejections.labels(worker.endpoint).inc()
        log.warning(
            "encoder %s: %s -> %s%s",
            worker.endpoint,
            before,
            after,
            f" ({worker.ejection.reason})" if worker.ejection.reason else "",
        )

    def _failed(
        self, index: int, reason: str, *, unreachable: bool = False, probe: bool = False
    ) -> None:
        """A request's failure (a timeout, an error, a hedge that lost) never ejects the last
        serving worker: on a loaded machine a slow but working worker loses races, and ejecting
        it would leave no worker at all. A failed probe (a trivial call that got no answer within
        its deadline) still can: then nothing answers, and readiness must say so."""
        now = time.monotonic()

        def fail(e: Ejection) -> str | None:  # under the state lock
            others = probe or any(
                w.ejection.state == SERVING for i, w in enumerate(self._workers) if i != index
            )
            return e.failure(now, reason, unreachable=unreachable, may_eject=others)

        self._transition(index, fail)

    def _succeeded(self, index: int, *, probe: bool = False) -> None:
        now = time.monotonic()
        self._transition(index, lambda e: e.success(now, probe=probe))

    def _watch(self) -> None:
        """The health watch's thread: a round of probes every ``probe_interval_s``, counted from
        the start of the last round. A round lasts until its slowest answer (up to
        ``probe_timeout_s`` for a frozen worker), so a fixed pause after each round would make a
        frozen worker's ejection take ``eject_after`` x (timeout + interval) instead of
        ``eject_after`` x timeout."""
        while not self._closed.is_set():
            started = time.monotonic()
            try:
                self._probe_round()
            except Exception:  # the watch must outlive any surprise
                log.exception("encoder health probe round failed")
            self._probed.set()
            elapsed = time.monotonic() - started
            self._closed.wait(max(0.0, self.policy.probe_interval_s - elapsed))

    def _probe_round(self) -> None:
        timeout = self.policy.probe_timeout_s
        try:
            calls = [
                stub.Health.future(pb.HealthRequest(), timeout=timeout) for stub in self._stubs
            ]
        except ValueError:  # the channels were just closed
            return
        for index, call in enumerate(calls):
            try:
                reply = call.result()
            except grpc.FutureCancelledError:
                return
            except grpc.RpcError as err:
                if self._closed.is_set():
                    return
                code = err.code()
                message = from_rpc_error(err).message
                if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                    message = f"no Health answer within {timeout:g} s"
                self._failed(
                    index, message, unreachable=code is grpc.StatusCode.UNAVAILABLE, probe=True
                )
                continue
            with self._state_lock:
                self._workers[index].reply = reply
                self._workers[index].probed = True
            if reply.bundle:
                self._learn(index, _Route(reply.bundle, tuple(reply.bundles) or (reply.bundle,)))
            if reply.ready:
                self._succeeded(index, probe=True)
                self._reload_missing(index, reply)
            else:
                reason = reply.reason or "not ready"
                self._transition(index, functools.partial(Ejection.not_ready, reason=reason))

    def _reload_missing(self, index: int, reply: pb.HealthResponse) -> None:
        """Send LoadBundle to this (ready, serving) worker for each bundle loaded at run time
        that its Health answer does not list: it was down during the load or restarted since.
        Never waits: the answer is handled by :meth:`_on_reload`."""
        if self._state(index) != SERVING or self._closed.is_set():
            return
        listed = set(reply.bundles) or {reply.bundle}
        now = time.monotonic()
        due: list[tuple[str, str, bool]] = []
        with self._reload_lock:
            for ref, spec in self._runtime.items():
                entry = self._reloads.get((index, ref))
                if ref in listed:
                    if entry is not None and not entry.in_flight:
                        del self._reloads[(index, ref)]  # served again, however
                    continue
                entry = entry or self._reloads.setdefault((index, ref), _Reload())
                if entry.in_flight or now < entry.not_before:
                    continue
                entry.in_flight = True
                due.append((ref, spec, entry.failures == 0))
        for ref, spec, first in due:
            log.log(
                logging.INFO if first else logging.DEBUG,
                "encoder %s does not serve bundle %s (down during its load, or restarted): "
                "loading it again from %r",
                self.endpoints[index],
                ref,
                spec,
            )
            request = pb.LoadBundleRequest(spec=spec)
            try:
                call = self._stubs[index].LoadBundle.future(request, timeout=LOAD_BUNDLE_TIMEOUT_S)
            except ValueError:  # the channels were just closed
                return
            call.add_done_callback(functools.partial(self._on_reload, index, ref, spec))

    def _on_reload(self, index: int, ref: str, spec: str, call: grpc.Future) -> None:
        try:
            self._reloaded(index, ref, spec, call)
        except Exception:  # a callback must not raise into grpc's thread
            log.exception("loading %s again on %s failed", ref, self.endpoints[index])
            self._reload_failed(index, ref, spec, "unexpected error", quiet=True)

    def _reloaded(self, index: int, ref: str, spec: str, call: grpc.Future) -> None:
        endpoint = self.endpoints[index]
        try:
            reply = call.result()
        except grpc.FutureCancelledError:
            self._reload_failed(index, ref, spec, "cancelled", quiet=True)
            return
        except grpc.RpcError as err:
            error = from_rpc_error(err, endpoint=endpoint)
            # conflict: another call (load_bundle) is loading it there right now
            quiet = self._closed.is_set() or error.type is ErrorType.conflict
            self._reload_failed(index, ref, spec, error.message, quiet=quiet)
            return
        got = codec.bundle_from_proto(reply.bundle).ref
        # The check and the route are one step under the lock that drop_bundle forgets under:
        # a drop either sees the route (and unloads it there) or is seen here.
        with self._reload_lock:
            wanted = ref in self._runtime
            entry = self._reloads.pop((index, ref), None) if wanted and got == ref else None
            if wanted and got == ref:
                with self._routes_lock:  # route to it at once; the next probe says the same
                    route = self._routes.get(index)
                    if route is not None and ref not in route.bundles:
                        self._routes[index] = _Route(route.default, (*route.bundles, ref))
        if got != ref or not wanted:
            if reply.loaded:  # dropped meanwhile, or the spec names another bundle now
                self._unload_later(index, got)
            if got != ref:
                self._reload_failed(index, ref, spec, f"{spec!r} is {got} there now, not {ref}")
            else:
                with self._reload_lock:
                    self._reloads.pop((index, ref), None)
            return
        self.metrics.reloads.labels(endpoint, ref, "loaded").inc()
        log.info(
            "encoder %s serves bundle %s again%s",
            endpoint,
            ref,
            f" after {entry.failures} failed tries" if entry and entry.failures else "",
        )

    def _reload_failed(
        self, index: int, ref: str, spec: str, why: str, *, quiet: bool = False
    ) -> None:
        """Back off before the next try; only the first failure in a row is a warning."""
        now = time.monotonic()
        with self._reload_lock:
            if ref not in self._runtime:  # dropped meanwhile: nothing to try again
                self._reloads.pop((index, ref), None)
                return
            entry = self._reloads.setdefault((index, ref), _Reload())
            entry.in_flight = False
            if quiet:
                entry.not_before = now + self.policy.reload_backoff_s
                first = False
            else:
                entry.failures += 1
                entry.error = why
                backoff = self.policy.reload_backoff_s * 2.0 ** (entry.failures - 1)
                entry.not_before = now + min(self.policy.reload_backoff_max_s, backoff)
                first = entry.failures == 1
        if quiet:
            return
        self.metrics.reloads.labels(self.endpoints[index], ref, "failed").inc()
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "encoder %s does not serve bundle %s again yet (LoadBundle %r failed: %s); "
            "retrying with back-off, its requests go to the workers that serve it",
            self.endpoints[index],
            ref,
            spec,
            why,
        )

    def _unload_later(self, index: int, ref: str) -> None:
        """UnloadBundle without waiting (from a grpc callback thread, which must not block)."""
        request = pb.UnloadBundleRequest(bundle=ref)
        timeout = self.settings.request_timeout_s
        with contextlib.suppress(ValueError):  # the channels were just closed
            self._stubs[index].UnloadBundle.future(request, timeout=timeout)

    def _groups(self, items: list[tuple[int, bytes]], lane: Lane) -> list[Group]:
        """Split into requests that each fit one message; bulk work also by batch size, so the
        worker infers the first part while the rest still uploads."""
        budget = self.max_message_bytes - _MESSAGE_MARGIN
        per_request = self.settings.bulk.max_batch_size if lane == "bulk" else len(items)
        groups: list[Group] = []
        size = budget + 1  # start a group with the first item
        for index, data in items:
            cost = len(data) + _ITEM_OVERHEAD
            if size + cost > budget or len(groups[-1][0]) >= per_request:
                groups.append(([], []))
                size = 0
            groups[-1][0].append(index)
            groups[-1][1].append(data)
            size += cost
        return groups

    def _stream(
        self, groups: list[Group], lane: pb.Lane, bundle: str, candidates: Sequence[int]
    ) -> pb.EmbedStreamResponse:
        def requests() -> Iterator[pb.EmbedRequest]:  # built lazily, afresh on each attempt
            for _, data in groups:
                yield pb.EmbedRequest(lane=lane, images=pb.Images(items=data), bundle=bundle)

        return self._invoke(
            lambda stub, left: stub.EmbedStream.future(requests(), timeout=left), candidates
        )

    @staticmethod
    def _image_values(reply: pb.EmbedResponse, n: int) -> list[ImageEmbedding | ClipsearchError]:
        kind = reply.WhichOneof("output")
        if kind == "error":  # the whole request was refused for its own content
            return [codec.error_from_proto(reply.error)] * n
        values = codec.images_from_proto(reply.images) if kind == "images" else []
        if len(values) != n:
            raise ClipsearchError(ErrorType.internal, f"the worker answered {len(values)} of {n}")
        return values

    # -- routing ---------------------------------------------------------------------------

    def _candidates(self, bundle: str | None) -> tuple[str, list[int]]:
        """The bundle's name@version (the default's for ``None``) and the workers serving it."""
        if bundle is not None and not isinstance(bundle, str):
            raise invalid(f"bundle must be a name@version string, not {type(bundle).__name__}")
        if not self._routes:
            self._refresh(force=True)  # unavailable when no worker answers
        self._ask_unknown()
        ref = bundle or self._default
        assert ref is not None  # set by the first worker that answered
        candidates = self._serving(ref)
        if not candidates:  # a worker may have loaded it since we asked
            self._refresh()
            candidates = self._serving(ref)
        if not candidates:
            with self._routes_lock:
                served = sorted({r for route in self._routes.values() for r in route.bundles})
            raise not_found(
                f"no encoder worker serves bundle {ref!r}; served bundles (name@version): "
                + (", ".join(served) or "none"),
                {"bundle": ref, "served": served},
            )
        return ref, candidates

    def _serving(self, ref: str) -> list[int]:
        with self._routes_lock:
            return sorted(i for i, route in self._routes.items() if ref in route.bundles)

    def _learn(self, index: int, route: _Route, info: EncoderInfo | None = None) -> None:
        with self._routes_lock:
            self._routes[index] = route
            if self._default is None:
                self._default = route.default
            unlisted = any(ref not in self._listing for ref in route.bundles)
        if info is not None:
            self._note(info)
        elif unlisted:  # a bundle we know only by name: ask for its details, in the background
            self._ask([index])

    def _note(self, info: EncoderInfo) -> None:
        """Remember what a worker's Info says of its bundles (the listing of ``bundles()``)."""
        with self._routes_lock:
            for served in info.bundles:
                self._listing[served.ref] = served
            if info.bundle not in self._listing:  # an older worker, one bundle, no listing
                self._listing[info.bundle] = ServedBundle(
                    ref=info.bundle,
                    spaces=info.spaces,
                    trained=info.trained,
                    max_text_tokens=info.max_text_tokens,
                    provider=info.provider,
                )
        with self._info_lock:
            self._infos.setdefault(info.bundle, replace(info, bundles=()))

    def _forget(self, index: int, error: ClipsearchError) -> None:
        """The worker said it does not serve the bundle (dropped since we asked)."""
        bundle = error.detail.get("bundle") if isinstance(error.detail, dict) else None
        with self._routes_lock:
            route = self._routes.get(index)
            if route is not None and bundle in route.bundles:
                kept = tuple(b for b in route.bundles if b != bundle)
                self._routes[index] = _Route(route.default, kept)

    def _learn_reply(self, index: int, reply: pb.InfoResponse) -> None:
        info = codec.info_from_proto(reply)
        default = next((b.ref for b in info.bundles if b.default), info.bundle)
        refs = tuple(b.ref for b in info.bundles) or (info.bundle,)
        self._learn(index, _Route(default, refs), info)

    def _refresh(self, *, force: bool = False) -> None:
        """Ask every worker what it serves (at most every ``ROUTES_REFRESH_S`` unless forced);
        ``unavailable`` when none answers and none ever did."""
        now = time.monotonic()
        if not force and now - self._refreshed < ROUTES_REFRESH_S:
            return
        self._refreshed = now
        timeout = self.settings.request_timeout_s
        calls = [stub.Info.future(pb.InfoRequest(), timeout=timeout) for stub in self._stubs]
        errors: dict[str, str] = {}
        for index, (endpoint, call) in enumerate(zip(self.endpoints, calls, strict=True)):
            try:
                self._learn_reply(index, call.result())
            except grpc.RpcError as err:
                errors[endpoint] = from_rpc_error(err).message
        if not self._routes:
            raise ClipsearchError(
                ErrorType.unavailable,
                "no encoder worker answered: "
                + "; ".join(f"{e}: {message}" for e, message in errors.items()),
                {"errors": errors},
            )

    def _ask_unknown(self) -> None:
        """Ask the workers that never answered again, in the background: one that comes up
        later joins the rotation for the bundles it serves without delaying any call."""
        now = time.monotonic()
        with self._routes_lock:
            unknown = [i for i in range(len(self._stubs)) if i not in self._routes]
            if not unknown or now - self._asked_unknown < ROUTES_RETRY_S:
                return
            self._asked_unknown = now
        self._ask(unknown)

    def _ask(self, indices: Sequence[int]) -> None:
        """Info from these workers, learned when it comes; nobody waits for it."""
        if self._closed.is_set():
            return
        for index in indices:
            call = self._stubs[index].Info.future(pb.InfoRequest(), timeout=HEALTH_TIMEOUT_S)
            call.add_done_callback(functools.partial(self._on_info, index))

    def _on_info(self, index: int, call: grpc.Future) -> None:
        try:
            self._learn_reply(index, call.result())
        except (grpc.RpcError, grpc.FutureCancelledError):
            pass  # down, or the client closed: asked again later if at all
        except Exception:  # a callback must not raise into grpc's thread
            log.exception("learning what %s serves failed", self.endpoints[index])


def _missing() -> ClipsearchError:
    return ClipsearchError(ErrorType.internal, "the worker returned no result for an image")
