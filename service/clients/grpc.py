"""``EmbeddingClient`` over encoder workers (``clipsearch worker``) reached by gRPC.

One channel per worker; calls go round-robin. A call that meets UNAVAILABLE (worker down,
warming up, shutting down) moves on to the next worker, up to ``settings.retries`` times — embeds
are pure, so a retry is always safe. Nothing else is retried: a full lane, bad input or a passed
deadline would fail the same way elsewhere, and retrying them only adds load. Failures come back
as the worker's own ``ClipsearchError`` (see ``service/rpc/status.py``), and one bad image fails
alone exactly as with the in-process client.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import grpc
import numpy as np

from service.core.config import EncoderSettings
from service.core.domain import Lane
from service.core.embeddings import EncoderHealth, EncoderInfo, ImageEmbedding, TextEmbeddings
from service.core.errors import ClipsearchError, ErrorType, invalid, too_large
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


class GrpcEmbeddingClient:
    """Implements :class:`service.clients.base.EmbeddingClient` over encoder workers."""

    def __init__(
        self, endpoints: Sequence[str], settings: EncoderSettings, *, max_message_mb: int = 64
    ) -> None:
        if not endpoints:
            raise invalid("the gRPC embedding client needs at least one worker endpoint")
        self.endpoints = list(endpoints)
        self.settings = settings
        self.max_message_bytes = max_message_mb * 1024 * 1024
        options = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            # grpc backs off up to 120 s between reconnects by default: a restarted worker
            # would sit unused for minutes.
            ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
        ]
        self._channels = [grpc.insecure_channel(e, options=options) for e in self.endpoints]
        self._stubs = [pb_grpc.EncoderStub(channel) for channel in self._channels]
        self._turn = itertools.count()  # next() on it is atomic under the GIL
        self._info: EncoderInfo | None = None
        self._info_lock = threading.Lock()
        self._closed = threading.Event()

    # -- EmbeddingClient -------------------------------------------------------------------

    def info(self) -> EncoderInfo:
        """What the workers serve, asked once; all workers that answer must serve one bundle."""
        with self._info_lock:
            if self._info is None:
                self._info = self._fetch_info()
            return self._info

    def embed_texts(self, texts: Sequence[str], *, lane: Lane = "interactive") -> TextEmbeddings:
        self._check_open()
        for i, text in enumerate(texts):
            if not isinstance(text, str):  # protobuf could not carry it; same error as in-process
                raise invalid(f"text {i} is not a string", {"index": i})
        request = pb.EmbedRequest(lane=codec.lane_to_proto(lane), texts=pb.Texts(items=texts))
        response = self._invoke(lambda stub, left: stub.Embed(request, timeout=left))
        if response.WhichOneof("output") != "texts":
            raise ClipsearchError(ErrorType.internal, "the worker answered texts without texts")
        return codec.texts_from_proto(response.texts)

    def embed_images(
        self, images: Sequence[bytes], *, lane: Lane = "interactive"
    ) -> list[np.ndarray | ClipsearchError]:
        results = self.encode_images(images, lane=lane)
        return [r if isinstance(r, ClipsearchError) else r.joint for r in results]

    def encode_images(
        self, images: Sequence[bytes], *, lane: Lane = "interactive"
    ) -> list[ImageEmbedding | ClipsearchError]:
        self._check_open()
        wire_lane = codec.lane_to_proto(lane)
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
            request = pb.EmbedRequest(lane=wire_lane, images=pb.Images(items=groups[0][1]))
            reply = self._invoke(lambda stub, left: stub.Embed(request, timeout=left))
            replies = [reply]
        elif groups:
            replies = list(self._stream(groups, wire_lane).results)
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
        """Ready while at least one worker is; the reason names every worker that is not."""
        if self._closed.is_set():
            return EncoderHealth(False, "the embedding client is closed")
        timeout = min(HEALTH_TIMEOUT_S, self.settings.request_timeout_s)
        calls = [stub.Health.future(pb.HealthRequest(), timeout=timeout) for stub in self._stubs]
        expected = self._info.bundle if self._info is not None else None
        status: dict[str, dict[str, object]] = {}
        for endpoint, call in zip(self.endpoints, calls, strict=True):
            try:
                reply = call.result()
            except grpc.RpcError as err:
                status[endpoint] = {"ready": False, "reason": from_rpc_error(err).message}
                continue
            health = codec.health_from_proto(reply)
            entry: dict[str, object] = {"ready": health.ready, "bundle": reply.bundle}
            if expected is not None and reply.bundle != expected:
                entry.update(ready=False, reason=f"serves {reply.bundle}, not {expected}")
            elif not health.ready:
                entry["reason"] = health.reason or "not ready"
            status[endpoint] = entry
        down = [f"{e}: {s['reason']}" for e, s in status.items() if not s["ready"]]
        ready = len(down) < len(status)
        reason = None
        if down:
            reason = ("" if ready else "no encoder worker is ready: ") + "; ".join(down)
        return EncoderHealth(ready, reason, {"endpoints": status})

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
        log.info("gRPC embedding client closed (%s)", ", ".join(self.endpoints))

    # -- internals -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise ClipsearchError(ErrorType.unavailable, "the embedding client is closed")

    def _invoke(self, call: Callable[[pb_grpc.EncoderStub, float], T]) -> T:
        """``call(stub, seconds_left)`` round-robin, moving on after UNAVAILABLE only."""
        deadline = time.monotonic() + self.settings.request_timeout_s
        first = next(self._turn)
        error: ClipsearchError | None = None
        for attempt in range(self.settings.retries + 1):
            index = (first + attempt) % len(self._stubs)
            left = deadline - time.monotonic()
            if left <= 0:
                raise ClipsearchError(ErrorType.timeout, "the encoder call's deadline passed")
            try:
                return call(self._stubs[index], left)
            except ValueError as exc:  # grpc's answer on a channel that close() just closed
                self._check_open()
                raise ClipsearchError(ErrorType.internal, f"gRPC call failed: {exc}") from exc
            except grpc.RpcError as err:
                error = from_rpc_error(err, endpoint=self.endpoints[index])
                if err.code() is not grpc.StatusCode.UNAVAILABLE:
                    raise error from None
                log.warning("encoder %s unavailable: %s", self.endpoints[index], error.message)
        assert error is not None
        raise error

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

    def _stream(self, groups: list[Group], lane: pb.Lane) -> pb.EmbedStreamResponse:
        def requests() -> Iterator[pb.EmbedRequest]:  # built lazily, afresh on each attempt
            for _, data in groups:
                yield pb.EmbedRequest(lane=lane, images=pb.Images(items=data))

        return self._invoke(lambda stub, left: stub.EmbedStream(requests(), timeout=left))

    @staticmethod
    def _image_values(reply: pb.EmbedResponse, n: int) -> list[ImageEmbedding | ClipsearchError]:
        kind = reply.WhichOneof("output")
        if kind == "error":  # the whole request was refused for its own content
            return [codec.error_from_proto(reply.error)] * n
        values = codec.images_from_proto(reply.images) if kind == "images" else []
        if len(values) != n:
            raise ClipsearchError(ErrorType.internal, f"the worker answered {len(values)} of {n}")
        return values

    def _fetch_info(self) -> EncoderInfo:
        timeout = self.settings.request_timeout_s
        calls = [stub.Info.future(pb.InfoRequest(), timeout=timeout) for stub in self._stubs]
        infos: dict[str, EncoderInfo] = {}
        errors: dict[str, str] = {}
        for endpoint, call in zip(self.endpoints, calls, strict=True):
            try:
                infos[endpoint] = codec.info_from_proto(call.result())
            except grpc.RpcError as err:
                errors[endpoint] = from_rpc_error(err).message
        if not infos:
            raise ClipsearchError(
                ErrorType.unavailable,
                "no encoder worker answered: "
                + "; ".join(f"{e}: {message}" for e, message in errors.items()),
                {"errors": errors},
            )
        bundles = {e: (i.bundle, i.spaces) for e, i in infos.items()}
        if len({(b, tuple(sorted(s.items()))) for b, s in bundles.values()}) > 1:
            listing = ", ".join(f"{e} serves {b}" for e, (b, _) in bundles.items())
            raise ClipsearchError(
                ErrorType.bundle_invalid,
                f"the encoder workers serve different bundles ({listing}); every worker "
                "behind one gateway must serve the same bundle",
                {"bundles": {e: b for e, (b, _) in bundles.items()}},
            )
        return next(iter(infos.values()))


def _missing() -> ClipsearchError:
    return ClipsearchError(ErrorType.internal, "the worker returned no result for an image")
