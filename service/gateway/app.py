"""The FastAPI app factory: ``create_app(settings, factory)``.

The factory builds the components (encoder, store, job runner) on a start-up thread, so that
``/health/live`` answers at once and ``/health/ready`` tells the truth while the model loads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

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

    @app.middleware("http")
    async def observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_body:
            # Refuse before reading the body: an oversize upload costs us nothing.
            response: Response = error_response(
                too_large(f"request body of {length} bytes is over the {max_body}-byte limit"),
                request,
            )
        else:
            started = time.perf_counter()
            response = await call_next(request)
            app.state.metrics.latency.labels(request.method, _route(request)).observe(
                time.perf_counter() - started
            )
        app.state.metrics.requests.labels(
            request.method, _route(request), str(response.status_code)
        ).inc()
        return response

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


def _route(request: Request) -> str:
    """The matched route's template (bounded label cardinality), never the raw path; the router
    records the route in the scope once it has matched."""
    route = request.scope.get("route")
    return str(getattr(route, "path", None) or "unmatched")
