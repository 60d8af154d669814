"""The one mapping from error types to HTTP, and the handlers that apply it."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from service.core.errors import HTTP_STATUS, ClipsearchError, ErrorType

log = logging.getLogger(__name__)

_STATUS_TYPE = {
    404: ErrorType.not_found,
    405: ErrorType.invalid_input,
    413: ErrorType.payload_too_large,
}


def error_response(exc: ClipsearchError, request: Request) -> JSONResponse:
    request.app.state.metrics.errors.labels(exc.type.value, "http").inc()
    headers = {}
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    if exc.type is ErrorType.unauthorized:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(exc.to_dict(), status_code=HTTP_STATUS[exc.type], headers=headers)


def _allowed_methods(routes: Sequence[BaseRoute], scope: Scope) -> set[str]:
    """The methods of every route whose path matches the request's, routers included."""
    methods: set[str] = set()
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's included router
        if included is not None:
            methods |= _allowed_methods(included.routes, scope)
        elif getattr(route, "methods", None) and route.matches(scope)[0] is not Match.NONE:
            methods |= set(route.methods)  # type: ignore[attr-defined]
    return methods


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ClipsearchError)
    async def _domain(request: Request, exc: ClipsearchError) -> JSONResponse:
        return error_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        first = problems[0] if problems else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p != "body") or "request"
        err = ClipsearchError(ErrorType.invalid_input, f"{where}: {first['msg']}", problems)
        response = error_response(err, request)
        response.status_code = 422
        return response

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = _STATUS_TYPE.get(exc.status_code, ErrorType.invalid_input)
        response = error_response(ClipsearchError(kind, str(exc.detail)), request)
        response.status_code = exc.status_code
        # Starlette's own headers: a 405 names the allowed methods (`Allow`, RFC 9110), of every
        # route on the path (Starlette names the first route's only: GET of GET + DELETE).
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:
            allowed = _allowed_methods(request.app.router.routes, request.scope)
            if allowed:
                response.headers["Allow"] = ", ".join(sorted(allowed))
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(ClipsearchError(ErrorType.internal, "internal error"), request)
