"""The FastAPI app factory: ``create_app(settings, factory)``.

The factory builds the components (encoder, store, job runner) on a start-up thread, so that
``/health/live`` answers at once and ``/health/ready`` tells the truth while the model loads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.admin import mount_dashboard
from service.admin.cards import served
from service.core.config import Settings
from service.core.errors import too_large
from service.gateway.docs import install_docs
from service.gateway.errors import error_response, install_error_handlers
from service.gateway.metrics import GatewayMetrics
from service.gateway.routers import (
    admin,
    collections,
    embeddings,
    health,
    items,
    jobs,
    media,
    search,
)
from service.gateway.state import Components, ComponentsFactory, Runtime

log = logging.getLogger(__name__)
# Multipart framing around an upload: room for the form fields next to the file itself.
MULTIPART_OVERHEAD = 256 * 1024


def create_app(settings: Settings, factory: ComponentsFactory) -> FastAPI:
    runtime = Runtime(settings, _announcing(factory), describe=health.models)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.start()
        try:
            yield
        finally:
            runtime.close()

    app = FastAPI(
        title="clipsearch",
        version="0.1.0",
        summary="Multimodal search: text→image, image→image and text→description",
        lifespan=lifespan,
        # /docs and /redoc with their assets from a package, not a CDN (service/gateway/docs.py).
        docs_url=None,
        redoc_url=None,
    )
    install_docs(app)
    app.state.runtime = runtime
    app.state.metrics = GatewayMetrics()
    install_error_handlers(app)
    for module in (health, search, items, jobs, media, collections, admin):
        app.include_router(module.router)
    app.include_router(embeddings.router)
    mount_dashboard(app)  # /admin (service/admin), on the runtime above

    max_body = settings.limits.max_upload_bytes + MULTIPART_OVERHEAD

    app.add_middleware(Observe, max_body=max_body)
    return app


def _announcing(factory: ComponentsFactory) -> ComponentsFactory:
    """The factory, and then one log line per served model saying what it is for (its card's
    domain and intended use): a demo model must not pass for a real one."""

    def build(settings: Settings) -> Components:
        components = factory(settings)
        try:
            for card in served(components.embedder):
                log.info("model %s", card.summary)
        except Exception:  # a log line never fails a start-up
            log.warning("cannot describe the served models", exc_info=True)
        return components

    return build


class Observe:
    """Every HTTP request's latency (to its response's start) and count by method, route and
    status in the app's metrics, and the refusal (413) of a body declared over ``max_body``
    bytes before any of it is read.

    Plain ASGI, not ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware`` runs the app
    in a task of its own and re-streams every response through a memory stream, ~6 % of the
    event loop's time under the embeddings load test."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics: GatewayMetrics = scope["app"].state.metrics
        method: str = scope["method"]
        length = _header(scope, b"content-length")
        if length and length.isdigit() and int(length) > self.max_body:
            # Refuse before reading the body: an oversize upload costs us nothing.
            request = Request(scope, receive)
            response = error_response(
                too_large(f"request body of {length} bytes is over the {self.max_body}-byte limit"),
                request,
            )
            metrics.requests.labels(method, _route(scope), str(response.status_code)).inc()
            await response(scope, receive, send)
            return
        started = time.perf_counter()

        async def observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = _route(scope)
                metrics.latency.labels(method, route).observe(time.perf_counter() - started)
                metrics.requests.labels(method, route, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, observed)


def _header(scope: Scope, name: bytes) -> str | None:
    """The first ``name`` header of the request (names are lower case in ASGI), as Starlette's
    ``Headers.get`` reads it."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _route(scope: Scope) -> str:
    """The matched route's template (bounded label cardinality), never the raw path; the router
    records the route in the scope once it has matched."""
    route = scope.get("route")
    return str(getattr(route, "path", None) or "unmatched")
