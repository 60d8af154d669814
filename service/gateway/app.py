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

from service.core.config import Settings
from service.core.errors import too_large
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
from service.gateway.state import ComponentsFactory, Runtime

log = logging.getLogger(__name__)
# Multipart framing around an upload: room for the form fields next to the file itself.
MULTIPART_OVERHEAD = 256 * 1024


def create_app(settings: Settings, factory: ComponentsFactory) -> FastAPI:
    runtime = Runtime(settings, factory)

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
    )
    app.state.runtime = runtime
    app.state.metrics = GatewayMetrics()
    install_error_handlers(app)
    for module in (health, search, items, jobs, media, collections, admin):
        app.include_router(module.router)
    app.include_router(embeddings.router)

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


def _route(request: Request) -> str:
    """The matched route's template (bounded label cardinality), never the raw path; the router
    records the route in the scope once it has matched."""
    route = request.scope.get("route")
    return str(getattr(route, "path", None) or "unmatched")
