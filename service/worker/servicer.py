"""The ``Encoder`` gRPC service around a :class:`BundleRegistry`: each request goes to the
batcher of the bundle it names (``EmbedRequest.bundle``, empty = the default); an unknown bundle
is NOT_FOUND, its detail listing the bundles served.

Every call follows the batcher's rules: admission is refused at once when the lane is full
(RESOURCE_EXHAUSTED with retry-after), the call's gRPC deadline becomes the request's deadline,
and a call that ends early (client cancel, deadline) cancels its pending request so that its items
are dropped before inference. Errors leave through :func:`service.rpc.status.abort`, the one
mapping to status codes; errors of one image travel inside the response.

``LoadBundle`` / ``UnloadBundle`` change the bundles served at run time (a gateway's rollout onto
a bundle the worker was not started with): the spec is resolved and every file's checksum
verified by the ``resolve_bundle`` the process was built with (the same resolver an in-process
gateway uses), so a bad spec fails here exactly as it would there — ``not_found`` or
``invalid_input`` — and nothing changes. Only bundles loaded this way can be unloaded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, NoReturn, TypeVar

import grpc
from prometheus_client import CollectorRegistry, Counter

from service.core.bundle.manifest import Bundle
from service.core.config import EncoderSettings
from service.core.errors import ClipsearchError, ErrorType, invalid
from service.encoder.registry import BundleRegistry, Served
from service.encoder.requests import Pending
from service.rpc import codec
from service.rpc.proto import encoder_pb2 as pb
from service.rpc.proto import encoder_pb2_grpc as pb_grpc
from service.rpc.status import GRPC_STATUS, abort

log = logging.getLogger(__name__)

R = TypeVar("R")
# Failures that belong to one streamed request's own content: that request's slot carries the
# error and the stream goes on. Anything else (full, closing, broken) ends the whole stream.
REQUEST_ERRORS = frozenset(
    {ErrorType.invalid_input, ErrorType.unsupported_media, ErrorType.payload_too_large}
)
# grpc reports "no deadline" as a remaining time of centuries; past this we use our own default.
_NO_DEADLINE_S = 86_400.0
_SLOT_PAUSE_S = 0.001
_SLOT_PAUSE_MAX_S = 0.064

# A bundle spec (served name@version or name, zoo name, folder, "tiny") -> the loaded bundle,
# every file's checksum verified: not_found when it names nothing, invalid_input when broken.
BundleResolver = Callable[[str], Bundle]


class WorkerMetrics:
    """Per-RPC counters, on the batcher's registry so that one /metrics serves both."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.rpcs = Counter(
            "clipsearch_worker_rpcs_total",
            "Encoder RPCs by method and final status code",
            ["method", "code"],
            registry=registry,
        )
        self.errors = Counter(
            "clipsearch_worker_errors_total",
            "Mapped failures by error type: failed calls and failed items of image requests",
            ["type"],
            registry=registry,
        )
        self.abandoned = Counter(
            "clipsearch_worker_abandoned_total",
            "Calls that ended (cancelled, deadline) while their items were still queued",
            ["method"],
            registry=registry,
        )


@dataclass
class _Slot:
    """One request of a call: waiting on the batcher, or answered."""

    kind: str
    pending: Pending[Any] | None = None
    response: pb.EmbedResponse | None = None
    served: Served | None = None  # the bundle the request went to


class EncoderServicer(pb_grpc.EncoderServicer):
    def __init__(
        self,
        registry: BundleRegistry,
        settings: EncoderSettings,
        metrics: WorkerMetrics,
        *,
        resolve_bundle: BundleResolver | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.metrics = metrics
        self.resolve_bundle = resolve_bundle
        self.stopping = False

    # -- RPCs ----------------------------------------------------------------------------

    def Embed(self, request: pb.EmbedRequest, context: grpc.ServicerContext) -> pb.EmbedResponse:
        def embed() -> pb.EmbedResponse:
            self._check_stopping()
            deadline, left = self._deadline(context)
            slot = self._submit(request, deadline)
            self._watch(context, "Embed", [slot])
            return self._resolve(slot, left, in_stream=False)

        return self._call("Embed", context, embed)

    def EmbedStream(
        self, request_iterator: Iterable[pb.EmbedRequest], context: grpc.ServicerContext
    ) -> pb.EmbedStreamResponse:
        def stream() -> pb.EmbedStreamResponse:
            self._check_stopping()
            deadline, _ = self._deadline(context)
            slots: list[_Slot] = []
            self._watch(context, "EmbedStream", slots)
            for request in request_iterator:
                slots.append(self._submit_waiting(request, deadline, slots))
            results = [self._resolve(s, deadline - time.monotonic()) for s in slots]
            return pb.EmbedStreamResponse(results=results)

        return self._call("EmbedStream", context, stream)

    def Info(self, request: pb.InfoRequest, context: grpc.ServicerContext) -> pb.InfoResponse:
        def info() -> pb.InfoResponse:
            return codec.info_to_proto(self.registry.info(request.bundle or None))

        return self._call("Info", context, info)

    def Health(self, request: pb.HealthRequest, context: grpc.ServicerContext) -> pb.HealthResponse:
        return self._call("Health", context, self.health)

    def LoadBundle(
        self, request: pb.LoadBundleRequest, context: grpc.ServicerContext
    ) -> pb.LoadBundleResponse:
        def load() -> pb.LoadBundleResponse:
            self._check_stopping()
            return self.load_bundle(request.spec)

        return self._call("LoadBundle", context, load)

    def UnloadBundle(
        self, request: pb.UnloadBundleRequest, context: grpc.ServicerContext
    ) -> pb.UnloadBundleResponse:
        def unload() -> pb.UnloadBundleResponse:
            if not request.bundle:
                raise invalid("UnloadBundle needs a bundle (name@version)")
            grace = request.grace_s if request.grace_s > 0 else None
            self.registry.drop(request.bundle, grace_s=grace, runtime_only=True)
            return pb.UnloadBundleResponse()

        return self._call("UnloadBundle", context, unload)

    def load_bundle(self, spec: str) -> pb.LoadBundleResponse:
        """Serve the bundle ``spec`` names (loaded and warmed up now unless served already)."""
        spec = spec.strip()
        if not spec:
            raise invalid("LoadBundle needs a spec: name@version, zoo name, folder or 'tiny'")
        refs = self.registry.refs()
        served = (
            spec if spec in refs else next((r for r in refs if r.rpartition("@")[0] == spec), None)
        )
        if served is not None:
            return self._loaded(served, loaded=False)
        if self.resolve_bundle is None:
            raise invalid(
                f"this encoder worker cannot load bundles at run time; it serves {', '.join(refs)}",
                {"bundle": spec, "served": refs},
            )
        bundle = self.resolve_bundle(spec)  # not_found / invalid_input: nothing changed
        ref = bundle.manifest.ref
        try:
            self.registry.load(bundle)
        except ClipsearchError as exc:
            if exc.type is not ErrorType.conflict or ref not in self.registry.refs():
                raise
            return self._loaded(ref, loaded=False)  # served already (by another spec)
        log.info("loaded bundle %s from %r at run time", ref, spec)
        return self._loaded(ref, loaded=True)

    def _loaded(self, ref: str, *, loaded: bool) -> pb.LoadBundleResponse:
        listing = {b.ref: b for b in self.registry.describe()}
        return pb.LoadBundleResponse(bundle=codec.bundle_to_proto(listing[ref]), loaded=loaded)

    def health(self) -> pb.HealthResponse:
        health = self.registry.health()
        if self.stopping:
            health = replace(health, ready=False, reason="the worker is shutting down")
        refs = self.registry.refs()
        return codec.health_to_proto(health, refs[0] if refs else "", refs)

    # -- helpers ---------------------------------------------------------------------------

    def _call(self, method: str, context: grpc.ServicerContext, body: Callable[[], R]) -> R:
        try:
            response = body()
        except ClipsearchError as exc:
            self._fail(method, context, exc)
        except Exception as exc:
            if not context.is_active():  # the request stream broke because the call ended
                self._fail(method, context, ClipsearchError(ErrorType.unavailable, str(exc)))
            log.exception("%s failed", method)
            self._fail(method, context, ClipsearchError(ErrorType.internal, f"{method} failed"))
        self.metrics.rpcs.labels(method, "OK").inc()
        return response

    def _fail(self, method: str, context: grpc.ServicerContext, exc: ClipsearchError) -> NoReturn:
        if context.is_active():
            code = GRPC_STATUS[exc.type].name
            self.metrics.errors.labels(exc.type.value).inc()
        else:  # nobody waits for this answer any more
            code = "DEADLINE_EXCEEDED" if context.time_remaining() <= 0 else "CANCELLED"
        self.metrics.rpcs.labels(method, code).inc()
        abort(context, exc)

    def _check_stopping(self) -> None:
        if self.stopping:
            raise ClipsearchError(ErrorType.unavailable, "the worker is shutting down")

    def _served(self, request: pb.EmbedRequest) -> Served:
        served = self.registry.get(request.bundle or None)
        if not served.engine.ready:
            raise ClipsearchError(
                ErrorType.unavailable,
                f"the worker is warming up {served.ref}",
                {"bundle": served.ref},
                retry_after_s=1.0,
            )
        return served

    def _deadline(self, context: grpc.ServicerContext) -> tuple[float, float]:
        """The call's deadline on the monotonic clock, and the seconds left until then."""
        left = context.time_remaining()
        if left is None or left > _NO_DEADLINE_S:
            left = self.settings.request_timeout_s
        return time.monotonic() + left, left

    def _watch(self, context: grpc.ServicerContext, method: str, slots: list[_Slot]) -> None:
        """When the call ends, cancel what is still queued (a no-op for finished requests)."""

        def on_end() -> None:
            waiting = [s.pending for s in list(slots) if s.pending and not s.pending.done()]
            if waiting:
                self.metrics.abandoned.labels(method).inc()
            for pending in waiting:
                pending.cancel()

        if not context.add_callback(on_end):  # the call has already ended
            on_end()

    def _submit(self, request: pb.EmbedRequest, deadline: float) -> _Slot:
        lane = codec.lane_from_proto(request.lane)
        kind = request.WhichOneof("input")
        served = self._served(request)
        batcher = served.batcher
        if kind == "texts":
            texts = list(request.texts.items)
            if not texts:  # the batcher answers "no texts" at once; clients expect 0 rows
                empty = codec.texts_to_proto(batcher.embed_texts([]))
                return _Slot(kind, response=pb.EmbedResponse(texts=empty))
            texts_pending = batcher.submit_texts(texts, lane=lane, deadline=deadline)
            return _Slot(kind, texts_pending, served=served)
        if kind == "images":
            images = list(request.images.items)
            pending = batcher.submit_images(images, lane=lane, deadline=deadline)
            return _Slot(kind, pending, served=served)
        raise invalid("an EmbedRequest needs texts or images")

    def _submit_waiting(
        self, request: pb.EmbedRequest, deadline: float, slots: list[_Slot]
    ) -> _Slot:
        """Submit one streamed request. A full lane is the stream's flow control: wait for this
        stream's own oldest request, then try again; refuse only if it has nothing queued."""
        pause = _SLOT_PAUSE_S
        while True:
            try:
                return self._submit(request, deadline)
            except ClipsearchError as exc:
                if exc.type in REQUEST_ERRORS:
                    error = codec.error_to_proto(exc)
                    return _Slot("error", response=pb.EmbedResponse(error=error))
                if exc.type is not ErrorType.overloaded:
                    raise
                oldest = next((s for s in slots if s.response is None), None)
                if oldest is not None:
                    self._resolve(oldest, deadline - time.monotonic())
                    pause = _SLOT_PAUSE_S
                    continue
                # The batcher frees a request's queue slots just after completing it: give our
                # own just-finished requests that moment (a few ms at most), then refuse.
                if not slots or pause > _SLOT_PAUSE_MAX_S:
                    raise
                time.sleep(pause)
                pause *= 2

    def _resolve(self, slot: _Slot, left: float, *, in_stream: bool = True) -> pb.EmbedResponse:
        """Wait for the slot's result and encode it; in a stream, a request's own error fills
        its slot instead of ending the call."""
        if slot.response is not None:
            return slot.response
        assert slot.pending is not None
        try:
            result = slot.pending.result(timeout=max(0.0, left))
        except ClipsearchError as exc:
            if not in_stream or exc.type not in REQUEST_ERRORS:
                raise
            slot.response = pb.EmbedResponse(error=codec.error_to_proto(exc))
            return slot.response
        if slot.kind == "texts":
            slot.response = pb.EmbedResponse(texts=codec.texts_to_proto(result))
        else:
            for item in result:
                if isinstance(item, ClipsearchError):
                    self.metrics.errors.labels(item.type.value).inc()
            assert slot.served is not None
            spaces = slot.served.engine.bundle.manifest.spaces
            images = codec.images_to_proto(result, spaces.image, spaces.visual)
            slot.response = pb.EmbedResponse(images=images)
        slot.pending = None  # drop the batcher's request: the encoded reply is all we keep
        slot.served = None
        return slot.response
