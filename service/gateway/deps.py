"""Request dependencies as ``Annotated`` aliases: routes declare what they need, nothing more."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from service.core.config import Scope, Settings
from service.core.errors import ClipsearchError, ErrorType
from service.gateway.metrics import GatewayMetrics
from service.gateway.state import Components, Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_settings(request: Request) -> Settings:
    return get_runtime(request).settings


def get_components(request: Request) -> Components:
    return get_runtime(request).components


def get_metrics(request: Request) -> GatewayMetrics:
    metrics: GatewayMetrics = request.app.state.metrics
    return metrics


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ComponentsDep = Annotated[Components, Depends(get_components)]
MetricsDep = Annotated[GatewayMetrics, Depends(get_metrics)]


def _presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.headers.get("x-api-key")


def authorize(settings: Settings, presented: str | None, scope: Scope) -> None:
    """Admit a caller whose API key carries ``scope`` (no keys = open): REST and gRPC alike."""
    keys = settings.auth.api_keys
    if not keys:
        return
    if not presented:
        raise ClipsearchError(ErrorType.unauthorized, "an API key is required")
    for key, scopes in keys.items():
        if hmac.compare_digest(key.encode(), presented.encode()):
            if scope not in scopes:
                raise ClipsearchError(ErrorType.forbidden, f"this key lacks the {scope!r} scope")
            return
    raise ClipsearchError(ErrorType.unauthorized, "unknown API key")


def require(scope: Scope) -> Callable[[Request], None]:
    """A dependency that admits a request whose API key carries ``scope`` (no keys = open)."""

    def check(request: Request) -> None:
        authorize(get_settings(request), _presented_key(request), scope)

    return check


SearchScope = Depends(require("search"))
IngestScope = Depends(require("ingest"))
AdminScope = Depends(require("admin"))
