"""Request dependencies as ``Annotated`` aliases: routes declare what they need, nothing more."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool

from service.core.audit import audit
from service.core.config import Settings
from service.core.errors import ClipsearchError, ErrorType, not_found
from service.core.keys import Scope
from service.gateway.auth import ACROSS_COLLECTIONS, AUDITED, Principal, authorize, identify
from service.gateway.metrics import GatewayMetrics
from service.gateway.state import Components, Runtime

# The dependencies below only read app.state: `async def`, so that FastAPI calls them on the
# event loop. A plain `def` dependency costs each request a trip through the thread pool (a
# hand-off there and back, ~21 % of the event loop's time under the embeddings load test).


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_runtime(request: Request) -> Runtime:
    return _runtime(request)


async def get_settings(request: Request) -> Settings:
    return _runtime(request).settings


async def get_components(request: Request) -> Components:
    return _runtime(request).components


async def get_metrics(request: Request) -> GatewayMetrics:
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


async def requested_collection(
    request: Request, runtime: Runtime
) -> tuple[str | None, ClipsearchError | None]:
    """The collection a request names: its ``collection`` path or query parameter, the
    ``collection`` field of its JSON body (already read by FastAPI for the routes that take
    one), or the collection of the record its path names (a rollout, a job); None = the
    configured one. With a record, also what an unknown record is told: a key that cannot see
    the record's collection must get that, not the collection's name."""
    job_id = request.path_params.get("job_id")
    if job_id:  # the job's own collection, whatever else the request names
        try:
            job = await run_in_threadpool(runtime.components.jobs.status, str(job_id))
        except ClipsearchError as exc:
            return None, exc  # unknown: admitted as a call across collections, the route says so
        owner = job.get("collection")
        return (str(owner) if owner else None), not_found(f"no job {str(job_id)!r}")
    named = request.path_params.get("collection") or request.query_params.get("collection")
    if named:
        return str(named), None
    reindex_id = request.path_params.get("reindex_id")
    if reindex_id:
        reindexer = runtime.components.reindexer
        try:
            record = await run_in_threadpool(reindexer.status, str(reindex_id))
        except ClipsearchError as exc:
            return None, exc  # unknown: admitted as a call across collections, the route says so
        owner = record.get("collection")
        return (str(owner) if owner else None), not_found(f"no reindex {str(reindex_id)!r}")
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = json.loads(await request.body() or b"null")
        except (ValueError, RecursionError):  # not JSON, not UTF-8, nested too deep
            return None, None  # the route's own validation says what is wrong with it
        # A collection being created is named by its body's ``name``.
        field = "name" if _operation(request) == "create_collection" else "collection"
        if isinstance(body, dict) and isinstance(body.get(field), str):
            return body[field] or None, None
    elif request.headers.get("content-type", "").startswith(FORMS):
        try:
            form = await request.form()  # Starlette keeps it: the route reads the same one
        except Exception:  # malformed: the route's own validation says what is wrong with it
            return None, None
        named = form.get("collection")
        if isinstance(named, str) and named:
            return named, None
    return None, None


FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")


def _operation(request: Request) -> str | None:
    return getattr(request.scope.get("route"), "operation_id", None)


def require(scope: Scope, *, any_collection: bool = False) -> Callable[..., AsyncIterator[None]]:
    """A dependency that admits a request whose API key carries ``scope`` on the collection it
    acts on (no keys = open; see ``service.gateway.auth``), charges its rate limit, keeps the
    caller in ``request.state.principal`` and writes the audit line of an admin action
    (``service.gateway.auth.AUDITED``), refused or done."""

    async def check(request: Request) -> AsyncIterator[None]:
        runtime = _runtime(request)
        client = request.client.host if request.client else None
        route = request.scope.get("route")
        action = getattr(route, "operation_id", None)
        audited = action in AUDITED
        target: dict[str, object] = dict(request.path_params)
        across = any_collection or action in ACROSS_COLLECTIONS
        try:
            collection, unknown = None, None
            if not across:
                collection, unknown = await requested_collection(request, runtime)
                across = collection is None and unknown is not None
            principal = authorize(
                runtime.settings,
                _presented_key(request),
                scope,
                collection,
                limiter=runtime.limiter,
                client=client,
                any_collection=across,
            )
        except ClipsearchError as exc:
            if unknown is not None and exc.type is ErrorType.not_found:
                exc = unknown  # a record of a collection the key cannot see does not exist
            if audited:
                who = identify(runtime.settings, _presented_key(request))
                audit(
                    who=who,
                    action=str(action),
                    target=target,
                    result=exc.type.value,
                    via="http",
                    client=client,
                )
            raise exc from None
        request.state.principal = principal
        if not audited:
            yield
            return
        target = {"collection": principal.collection, **target}
        result = "internal"
        try:
            yield
            result = "ok"
        except ClipsearchError as exc:
            result = exc.type.value
            raise
        except RequestValidationError:
            result = ErrorType.invalid_input.value
            raise
        finally:
            audit(
                who=principal.id,
                action=str(action),
                target=target,
                result=result,
                via="http",
                client=client,
            )

    return check


async def get_principal(request: Request) -> Principal:
    """The caller admitted by the route's scope dependency."""
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        raise ClipsearchError(ErrorType.internal, "route has no scope dependency")
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]
SearchScope = Depends(require("search"))
IngestScope = Depends(require("ingest"))
AdminScope = Depends(require("admin"))
SearchAnyCollection = Depends(require("search", any_collection=True))
