"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.gateway.deps import MetricsDep, RuntimeDep

router = APIRouter(tags=["health"])


@router.get("/health/live", operation_id="health_live")
def live() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/health/ready", operation_id="health_ready")
def ready(runtime: RuntimeDep, metrics: MetricsDep) -> JSONResponse:
    ok, detail = runtime.readiness()
    metrics.ready.set(1 if ok else 0)
    return JSONResponse({"ready": ok, **detail}, status_code=200 if ok else 503)


@router.get("/metrics", operation_id="metrics", include_in_schema=False)
def metrics_endpoint(runtime: RuntimeDep, metrics: MetricsDep) -> Response:
    metrics.ready.set(1 if runtime.readiness()[0] else 0)
    body = generate_latest(metrics.registry)
    for registry in runtime.extra_registries():
        body += generate_latest(registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
