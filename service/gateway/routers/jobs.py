"""Ingestion jobs: start one, list them, follow one, cancel it, resume it, retry its failed
items."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query

from service.core.schemas.api import (
    COLLECTION_MAX_CHARS,
    IngestRequest,
    JobAccepted,
    JobList,
    JobStatus,
)
from service.gateway.auth import jobs_filter
from service.gateway.deps import ComponentsDep, IngestScope, PrincipalDep
from service.gateway.routers.responses import errors
from service.gateway.state import Components

router = APIRouter(prefix="/v1", tags=["jobs"], dependencies=[IngestScope])


# Each works as pasted into "Try it out" on any gateway (no folder or network needed); a folder
# source is the same request with its path, under sources.allowed_roots.
INGEST_EXAMPLES: dict[str, Any] = {
    "manifest_lines": {
        "summary": "Text-only documents, one manifest line each",
        "value": {
            "source": {
                "manifest_lines": [
                    {"id": "doc-1", "description": "a red bicycle leaning on a brick wall"},
                    {"id": "doc-2", "description": "two dogs playing in the snow"},
                ]
            }
        },
    },
}


@router.post(
    "/ingest",
    operation_id="ingest",
    status_code=202,
    response_model=JobAccepted,
    responses=errors(400, 404, 429),
)
def ingest(
    body: Annotated[IngestRequest, Body(openapi_examples=INGEST_EXAMPLES)],
    components: ComponentsDep,
) -> JobAccepted:
    """Index a source into ``collection`` (default: the configured one; 404 for one that does
    not exist)."""
    collection = _writable(components, body.collection)
    source = body.source.model_dump(exclude_none=True)
    job_id = components.jobs.submit("ingest", {"source": source, "collection": collection})
    return JobAccepted(job_id=job_id)


@router.get("/jobs", operation_id="list_jobs", response_model=JobList, responses=errors(403, 404))
def list_jobs(
    components: ComponentsDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=100, description="jobs per page")] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000, description="jobs to skip")] = 0,
    collection: Annotated[
        str | None,
        Query(max_length=COLLECTION_MAX_CHARS, description="only this collection's jobs"),
    ] = None,
) -> JobList:
    """The jobs of this gateway's job queue (in-process or Celery), newest first (by
    ``created_at``), ``limit`` at a time, each as ``GET /v1/jobs/{id}`` shows it: those of
    ``collection``, else of every collection the API key may ingest into. A collection deleted
    since keeps its jobs listed."""
    where = jobs_filter(principal, collection, components.collection)
    page, total = components.jobs.list_jobs(limit=limit, offset=offset, where=where)
    jobs = [JobStatus.model_validate(job) for job in page]
    return JobList(jobs=jobs, total=total, limit=limit, offset=offset)


@router.get(
    "/jobs/{job_id}", operation_id="get_job", response_model=JobStatus, responses=errors(404)
)
def get_job(job_id: str, components: ComponentsDep) -> JobStatus:
    return JobStatus.model_validate(components.jobs.status(job_id))


@router.delete(
    "/jobs/{job_id}",
    operation_id="cancel_job",
    response_model=JobStatus,
    responses=errors(404, 409),
)
def cancel_job(job_id: str, components: ComponentsDep) -> JobStatus:
    return JobStatus.model_validate(components.jobs.cancel(job_id))


@router.post(
    "/jobs/{job_id}/retry-failed",
    operation_id="retry_failed_items",
    status_code=202,
    response_model=JobAccepted,
    responses=errors(400, 404, 409, 429),
)
def retry_failed(job_id: str, components: ComponentsDep) -> JobAccepted:
    """A new job over this job's failed items, into the same collection (404 once that is
    deleted)."""
    _writable(components, components.jobs.status(job_id).get("collection"))
    return JobAccepted(job_id=components.jobs.retry_failed(job_id))


@router.post(
    "/jobs/{job_id}/retry",
    operation_id="resume_job",
    status_code=202,
    response_model=JobAccepted,
    responses=errors(404, 409, 429),
)
def resume_job(job_id: str, components: ComponentsDep) -> JobAccepted:
    """Resume an interrupted, failed or cancelled job under the same id: items already indexed
    with the same content are skipped (counted in ``skipped``), the rest are indexed; into the
    same collection (404 once that is deleted)."""
    _writable(components, components.jobs.status(job_id).get("collection"))
    return JobAccepted(job_id=components.jobs.retry(job_id))


def _writable(components: Components, named: str | None) -> str:
    """The collection a job writes to, checked to exist (not_found otherwise), with its bundle
    served: a collection created on another gateway replica, or before a restart, is loaded
    from the bundle spec its version records."""
    collection = components.collection_of(named)
    if collection != components.collection:
        components.reindexer.serve_collection(collection)
    return collection
