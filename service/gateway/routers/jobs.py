"""Ingestion jobs: start one, follow it, cancel it, resume it, retry its failed items."""

from __future__ import annotations

from fastapi import APIRouter

from service.core.errors import invalid
from service.core.schemas.api import IngestRequest, JobAccepted, JobStatus
from service.gateway.deps import ComponentsDep, IngestScope

router = APIRouter(prefix="/v1", tags=["jobs"], dependencies=[IngestScope])


@router.post("/ingest", operation_id="ingest", status_code=202, response_model=JobAccepted)
def ingest(body: IngestRequest, components: ComponentsDep) -> JobAccepted:
    if body.collection not in (None, components.collection):
        raise invalid(f"this gateway serves collection {components.collection!r} only")
    source = body.source.model_dump(exclude_none=True)
    return JobAccepted(job_id=components.jobs.submit("ingest", {"source": source}))


@router.get("/jobs/{job_id}", operation_id="get_job", response_model=JobStatus)
def get_job(job_id: str, components: ComponentsDep) -> JobStatus:
    return JobStatus.model_validate(components.jobs.status(job_id))


@router.delete("/jobs/{job_id}", operation_id="cancel_job", response_model=JobStatus)
def cancel_job(job_id: str, components: ComponentsDep) -> JobStatus:
    return JobStatus.model_validate(components.jobs.cancel(job_id))


@router.post(
    "/jobs/{job_id}/retry-failed",
    operation_id="retry_failed_items",
    status_code=202,
    response_model=JobAccepted,
)
def retry_failed(job_id: str, components: ComponentsDep) -> JobAccepted:
    return JobAccepted(job_id=components.jobs.retry_failed(job_id))


@router.post(
    "/jobs/{job_id}/retry", operation_id="resume_job", status_code=202, response_model=JobAccepted
)
def resume_job(job_id: str, components: ComponentsDep) -> JobAccepted:
    """Resume an interrupted, failed or cancelled job under the same id: items already indexed
    with the same content are skipped (counted in ``skipped``), the rest are indexed."""
    return JobAccepted(job_id=components.jobs.retry(job_id))
