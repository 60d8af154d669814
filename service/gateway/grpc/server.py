"""The gateway's gRPC server: ``clipsearch.v1.Search``, ``grpc.health.v1`` and reflection on one
port (50052 by default), beside the HTTP server of the same app.

:func:`serve_grpc` binds at once, so that a port in use fails before the HTTP server starts, and
serves for the app's lifespan: it starts after the app's own start-up and stops (draining calls
in flight) before the app closes the components the calls use.

Backpressure at the edge: past ``max_concurrent_rpcs`` calls in flight, grpc refuses a call at
once with RESOURCE_EXHAUSTED; a full encoder lane is RESOURCE_EXHAUSTED with retry-after, as it
is 429 over REST.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import grpc
from fastapi import FastAPI
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.core.errors import ClipsearchError, ErrorType
from service.gateway.grpc.servicer import SERVICE_NAME, SearchServicer
from service.gateway.metrics import GatewayMetrics
from service.gateway.state import Runtime
from service.rpc.proto import search_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

MAX_WORKERS = 16
# Calls in flight past the workers wait in grpc's queue; past this many they are refused.
MAX_CONCURRENT_RPCS = 64
STOP_GRACE_S = 5.0
# Room for the message framing around an image at the upload limit (as REST's multipart room).
MESSAGE_OVERHEAD = 256 * 1024


class GatewayHealth(health.HealthServicer):
    """``grpc.health.v1`` telling what ``/health/ready`` tells, for the server ("") and for
    ``clipsearch.v1.Search``: each Check asks the runtime; watchers hear of start-up, of changes
    a Check sees, and of shutdown."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self._runtime = runtime
        self._stopping = False
        self.refresh()

    def refresh(self) -> None:
        if self._stopping:
            return
        ready, _ = self._runtime.readiness()
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            self.set(name, status)

    def Check(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.refresh()
        return super().Check(request, context)

    def enter_graceful_shutdown(self) -> None:
        self._stopping = True
        super().enter_graceful_shutdown()


def grpc_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class GrpcGateway:
    """One app's gRPC server; ``port`` is the bound port (``port=0`` binds a free one)."""

    def __init__(
        self,
        runtime: Runtime,
        metrics: GatewayMetrics,
        *,
        host: str,
        port: int,
        max_workers: int = MAX_WORKERS,
        max_concurrent_rpcs: int = MAX_CONCURRENT_RPCS,
    ) -> None:
        self._runtime = runtime
        max_message = runtime.settings.limits.max_upload_bytes + MESSAGE_OVERHEAD
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers, thread_name_prefix="grpc-gateway"),
            maximum_concurrent_rpcs=max_concurrent_rpcs,
            options=[
                # Never share the port with another process (a second gateway would take half
                # the calls without anyone noticing).
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", max_message),
            ],
        )
        pb_grpc.add_SearchServicer_to_server(SearchServicer(runtime, metrics), self._server)
        self.health = GatewayHealth(runtime)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )
        address = grpc_address(host, port)
        try:
            bound = self._server.add_insecure_port(address)
        except RuntimeError as exc:
            bound, reason = 0, str(exc)
        else:
            reason = "the address is in use or not local"
        if not bound:
            self._server.stop(0)
            raise ClipsearchError(
                ErrorType.unavailable,
                f"cannot listen for gRPC on {address}: {reason} (set CLIPSEARCH_GRPC_PORT, "
                "0 = no gRPC)",
            )
        self.port = bound
        self.address = grpc_address(host, bound)

    def start(self) -> None:
        self._server.start()
        # Watchers hear "serving" as soon as the components are built, not at the next Check.
        threading.Thread(target=self._ready_when_built, name="grpc-health", daemon=True).start()
        log.info("gRPC API (clipsearch.v1.Search, health, reflection) on %s", self.address)

    def _ready_when_built(self) -> None:
        self._runtime.wait()
        self.health.refresh()

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """Say NOT_SERVING, refuse new calls, let those in flight finish within ``grace``."""
        self.health.enter_graceful_shutdown()
        self._server.stop(grace).wait()
        log.info("gRPC API stopped")


def serve_grpc(app: FastAPI, *, host: str, port: int, **options: Any) -> GrpcGateway:
    """Bind the app's gRPC server now; it serves while the app runs (its lifespan)."""
    gateway = GrpcGateway(app.state.runtime, app.state.metrics, host=host, port=port, **options)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[Any]:
        async with inner(application) as state:
            gateway.start()
            try:
                yield state
            finally:
                await asyncio.to_thread(gateway.stop)

    app.router.lifespan_context = lifespan
    app.state.grpc = gateway
    return gateway
