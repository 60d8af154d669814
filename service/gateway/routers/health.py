"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.admin.cards import served
from service.gateway.deps import MetricsDep, RuntimeDep
from service.gateway.state import Components, Runtime

router = APIRouter(tags=["health"])


@router.get("/health/live", operation_id="health_live")
async def live(request: Request) -> JSONResponse:
    """Answered on the event loop itself: a wedged loop never answers (the probe times out);
    otherwise 503 only once the readiness monitor has stalled (``Runtime.liveness``)."""
    ok, detail = _runtime(request).liveness()
    return JSONResponse(
        {"status": "alive" if ok else "stalled", **detail}, status_code=200 if ok else 503
    )


@router.get("/health/ready", operation_id="health_ready")
async def ready(request: Request) -> JSONResponse:
    """The monitor's last answer: no worker, Redis or store call on this path, and no thread
    from the pool either (sync dependencies would take one: a pool full of slow searches must
    not delay it)."""
    ok, detail = _runtime(request).readiness()
    request.app.state.metrics.ready.set(1 if ok else 0)
    return JSONResponse({"ready": ok, **detail}, status_code=200 if ok else 503)


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def models(components: Components) -> list[dict[str, object]]:
    """What each served model is for (its card): a demo model says so in /health/ready."""
    return [
        {"bundle": c.ref, "domain": c.domain, "intended_use": c.intended_use, "default": c.default}
        for c in served(components.embedder)
    ]


@router.get("/metrics", operation_id="metrics", include_in_schema=False)
def metrics_endpoint(runtime: RuntimeDep, metrics: MetricsDep) -> Response:
    metrics.ready.set(1 if runtime.readiness()[0] else 0)
    body = generate_latest(metrics.registry)
    for registry in runtime.extra_registries():
        body += generate_latest(registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
