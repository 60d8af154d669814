"""Admin API: model rollouts (reindex onto a bundle, compare, promote), rollback and golden sets
(the admin dashboard drives these). Every route needs the ``admin`` scope."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.core.schemas.admin import (
    ExportRequest,
    ExportResult,
    GoldenListed,
    GoldenSet,
    GoldenStored,
    ReindexRequest,
    ReindexStatus,
    RollbackRequest,
    RollbackResponse,
)
from service.gateway.deps import AdminScope, ComponentsDep, PrincipalDep, SettingsDep
from service.gateway.routers.responses import errors
from service.store.export import check_destination, export_collection

router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    dependencies=[AdminScope],
    responses=errors(400, 404, 409),
)


@router.post(
    "/reindex", operation_id="start_reindex", status_code=202, response_model=ReindexStatus
)
def start_reindex(body: ReindexRequest, components: ComponentsDep) -> ReindexStatus:
    collection = body.collection or components.collection
    video = body.video.model_dump(exclude_none=True) if body.video else None
    record = components.reindexer.start(collection, body.bundle, body.promote, video=video)
    return ReindexStatus.model_validate(record)


@router.get("/reindex", operation_id="list_reindexes", response_model=list[ReindexStatus])
def list_reindexes(components: ComponentsDep, principal: PrincipalDep) -> list[ReindexStatus]:
    found = components.reindexer.list()
    return [ReindexStatus.model_validate(r) for r in found if principal.sees(r["collection"])]


@router.get("/reindex/{reindex_id}", operation_id="get_reindex", response_model=ReindexStatus)
def get_reindex(reindex_id: str, components: ComponentsDep) -> ReindexStatus:
    return ReindexStatus.model_validate(components.reindexer.status(reindex_id))


@router.delete("/reindex/{reindex_id}", operation_id="cancel_reindex", response_model=ReindexStatus)
def cancel_reindex(reindex_id: str, components: ComponentsDep) -> ReindexStatus:
    return ReindexStatus.model_validate(components.reindexer.cancel(reindex_id))


@router.post(
    "/reindex/{reindex_id}/promote", operation_id="promote_reindex", response_model=ReindexStatus
)
def promote_reindex(reindex_id: str, components: ComponentsDep) -> ReindexStatus:
    return ReindexStatus.model_validate(components.reindexer.promote(reindex_id))


@router.post("/rollback", operation_id="rollback", response_model=RollbackResponse)
def rollback(body: RollbackRequest, components: ComponentsDep) -> RollbackResponse:
    collection = body.collection or components.collection
    return RollbackResponse.model_validate(components.reindexer.rollback(collection))


@router.put("/golden", operation_id="set_golden", response_model=GoldenStored)
def set_golden(body: GoldenSet, components: ComponentsDep) -> GoldenStored:
    collection = body.collection or components.collection
    queries = [q.model_dump() for q in body.queries]
    return GoldenStored.model_validate(components.reindexer.set_golden(collection, queries))


@router.get("/golden", operation_id="get_golden", response_model=GoldenListed)
def get_golden(
    components: ComponentsDep, collection: Annotated[str | None, Query()] = None
) -> GoldenListed:
    name = collection or components.collection
    return GoldenListed.model_validate(
        {"collection": name, "queries": components.reindexer.golden(name)}
    )


@router.post("/export", operation_id="export_collection", response_model=ExportResult)
def export(body: ExportRequest, components: ComponentsDep, settings: SettingsDep) -> ExportResult:
    """Write the collection (ids, every named vector, payload; the bundle in each file's
    metadata) as parquet files under a folder or an s3:// prefix of the allowed roots. They
    ingest back as a table source: with the same bundle, without calling the encoder."""
    collection = body.collection or components.collection
    dest = check_destination(body.to, settings.sources)
    _, version_bundle = components.store.bundle_of(collection)  # type: ignore[attr-defined]
    bundle = components.embedder.info(bundle=version_bundle).bundle
    written = export_collection(
        components.store, collection, dest, bundle=bundle, rows_per_file=body.rows_per_file
    )
    return ExportResult.model_validate(written)
