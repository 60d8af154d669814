"""Admin API: zero-downtime reindex and rollback (the admin dashboard drives these)."""

from __future__ import annotations

from fastapi import APIRouter

from service.core.schemas.admin import (
    ReindexRequest,
    ReindexStatus,
    RollbackRequest,
    RollbackResponse,
)
from service.gateway.deps import AdminScope, ComponentsDep

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[AdminScope])


@router.post(
    "/reindex", operation_id="start_reindex", status_code=202, response_model=ReindexStatus
)
def start_reindex(body: ReindexRequest, components: ComponentsDep) -> ReindexStatus:
    collection = body.collection or components.collection
    return ReindexStatus.model_validate(components.reindexer.start(collection, body.bundle))


@router.get("/reindex", operation_id="list_reindexes", response_model=list[ReindexStatus])
def list_reindexes(components: ComponentsDep) -> list[ReindexStatus]:
    return [ReindexStatus.model_validate(r) for r in components.reindexer.list()]


@router.get("/reindex/{reindex_id}", operation_id="get_reindex", response_model=ReindexStatus)
def get_reindex(reindex_id: str, components: ComponentsDep) -> ReindexStatus:
    return ReindexStatus.model_validate(components.reindexer.status(reindex_id))


@router.delete("/reindex/{reindex_id}", operation_id="cancel_reindex", response_model=ReindexStatus)
def cancel_reindex(reindex_id: str, components: ComponentsDep) -> ReindexStatus:
    return ReindexStatus.model_validate(components.reindexer.cancel(reindex_id))


@router.post("/rollback", operation_id="rollback", response_model=RollbackResponse)
def rollback(body: RollbackRequest, components: ComponentsDep) -> RollbackResponse:
    collection = body.collection or components.collection
    return RollbackResponse.model_validate(components.reindexer.rollback(collection))
