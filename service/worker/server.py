"""The encoder worker process: the ``Encoder`` gRPC server around its bundles (a
:class:`BundleRegistry`: one engine and batcher per bundle, the first the default).

Start-up order: bind and serve first, then warm up. ``Health`` answers "not warmed up" and
``Embed`` answers UNAVAILABLE (clients move on to another worker) until the warm-up inference
succeeds — a TensorRT engine build can take minutes, and a closed port during that time would look
like a dead process to a liveness probe. Stop is graceful: ``Health`` turns not-ready and new
calls are refused at once, calls in flight get ``grace`` seconds to finish.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from prometheus_client import Gauge, start_http_server

from service.core.collector import PAUSES, freeze_started
from service.core.config import Settings
from service.encoder.batcher import Batcher
from service.encoder.engine import EncoderEngine
from service.encoder.registry import BundleRegistry
from service.rpc.proto import encoder_pb2_grpc as pb_grpc
from service.worker.servicer import BundleResolver, EncoderServicer, WorkerMetrics

log = logging.getLogger(__name__)

MIN_THREADS = 64
MAX_THREADS = 1024
STOP_GRACE_S = 10.0
KEEPALIVE_MIN_PING_MS = 5_000  # the most often a client may ping an idle connection


def thread_budget(settings: Settings) -> int:
    """Handler threads. Each waiting call holds one, so every caller the interactive lane can
    admit gets its own, and as many again for bulk streams and fast refusals; the floor keeps 64
    concurrent callers from queueing inside grpc's pool, the cap bounds memory."""
    return max(MIN_THREADS, min(MAX_THREADS, 2 * settings.encoder.interactive.max_queue))


def bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class WorkerServer:
    """``start()`` serves and warms up; ``stop()`` drains; ``port`` is the bound port.

    ``WorkerServer(settings, engine)`` serves one bundle; ``registry=`` serves several, and
    ``self.registry.load`` / ``drop`` change them while the worker serves. ``resolve_bundle``
    lets clients do the same over gRPC (``LoadBundle``); without it they cannot."""

    def __init__(
        self,
        settings: Settings,
        engine: EncoderEngine | None = None,
        *,
        batcher: Batcher | None = None,
        registry: BundleRegistry | None = None,
        resolve_bundle: BundleResolver | None = None,
    ) -> None:
        if registry is None:
            if engine is None:
                raise TypeError("WorkerServer needs an engine or a registry")
            batcher = batcher or Batcher(engine, settings.encoder)
            registry = BundleRegistry.of(engine, batcher=batcher)
        elif engine is not None or batcher is not None:
            raise TypeError("pass either an engine (and batcher) or a registry, not both")
        self.settings = settings
        self.registry = registry
        metrics_registry = registry.metrics.registry
        self.metrics = WorkerMetrics(metrics_registry)
        self.servicer = EncoderServicer(
            registry, settings.encoder, self.metrics, resolve_bundle=resolve_bundle
        )
        ready = Gauge(
            "clipsearch_worker_ready", "1 while Health answers ready", registry=metrics_registry
        )
        ready.set_function(lambda: 1.0 if self.servicer.health().ready else 0.0)
        PAUSES.expose(metrics_registry)  # the process's garbage-collector pauses
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._server: grpc.Server | None = None
        self._httpd: Any = None
        self._stopped = threading.Event()

    @property
    def engine(self) -> EncoderEngine:
        """The default bundle's engine."""
        return self.registry.default.engine

    @property
    def batcher(self) -> Batcher:
        """The default bundle's batcher (its ``metrics.registry`` holds every bundle's)."""
        return self.registry.default.batcher

    def start(self, *, warmup: bool = True) -> int:
        """Bind, serve, warm up; returns the bound port (useful with port 0)."""
        w = self.settings.worker
        threads = thread_budget(self.settings)
        limit = w.max_message_mb * 1024 * 1024
        server = grpc.server(
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="encoder-rpc"),
            options=[
                # Two workers on one port would split calls silently; fail to bind instead.
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                # Clients ping every few seconds to notice a frozen worker (see
                # service/clients/grpc.py); without these the server would answer GOAWAY.
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_recv_ping_interval_without_data_ms", KEEPALIVE_MIN_PING_MS),
            ],
            # Beyond the pool, refuse at once (RESOURCE_EXHAUSTED) rather than queue unbounded.
            maximum_concurrent_rpcs=threads,
        )
        pb_grpc.add_EncoderServicer_to_server(self.servicer, server)
        address = bind_address(w.host, w.port)
        try:
            try:
                self.port = server.add_insecure_port(address)
            except RuntimeError as exc:  # grpc's way of saying the port cannot be bound
                raise OSError(f"cannot bind the encoder worker to {address}: {exc}") from exc
            server.start()
            self._server = server
            log.info(
                "encoder worker serving %s on %s (%d handler threads)",
                ", ".join(self.registry.refs()),
                bind_address(w.host, self.port),
                threads,
            )
            if w.metrics_port:
                self._start_metrics(w.host, w.metrics_port)
            if warmup:
                self.registry.warmup()
            if self.settings.startup.gc_freeze:
                freeze_started("encoder worker started")
        except BaseException:
            self.stop(grace=0)  # the batcher's threads and any bound port go too
            raise
        return self.port

    def _start_metrics(self, host: str, port: int) -> None:
        self._httpd, _ = start_http_server(port, host, registry=self.registry.metrics.registry)
        self.metrics_port = int(self._httpd.server_address[1])
        log.info("worker metrics on http://%s/metrics", bind_address(host, self.metrics_port))

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server stops; True if it did within ``timeout``."""
        return self._stopped.wait(timeout)

    def stop(self, grace: float | None = STOP_GRACE_S) -> None:
        if self._stopped.is_set():
            return
        self.servicer.stopping = True
        if self._server is not None:
            self._server.stop(grace).wait()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        self.registry.close()
        self._stopped.set()
        log.info("encoder worker stopped")
