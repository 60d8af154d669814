"""The Celery job queue: the gateway's side of distributed ingestion.

``submit`` checks the source (its shape, and for local sources the allowed roots, so a wrong one
is refused before any job exists), writes the job's definition under ``<data_dir>/jobs`` (the
same record shape as the in-process runner's) and sends ``clipsearch.plan_job`` by name: the
gateway never imports ``indexer``. An indexer worker reads the source and fans it out into
``index_batch`` tasks; the writer counts each item in Redis once its points are written.

``status`` merges the record with that live progress. The progress hash is created at submit, so
a job whose hash is gone (Redis restarted without persistence) reads ``interrupted``, never
``completed``: its items' fate is unknown, and re-ingesting the source repairs it harmlessly.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from pydantic import ValidationError

from service.clients.base import new_job_record, now_iso
from service.clients.stream import PointStream
from service.core.config import Settings
from service.core.errors import ClipsearchError, ErrorType, invalid, not_found
from service.core.source_spec import SourceSpec
from service.core.sources import resolve_local_dir
from service.core.tasks import INDEX_QUEUE, PLAN_JOB

log = logging.getLogger(__name__)

JOB_KINDS = frozenset({"ingest", "ingest_directory"})
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


def job_state(record: dict[str, Any], progress: dict[str, Any] | None) -> dict[str, Any]:
    """The job as ``GET /v1/jobs/{id}`` shows it: the record, with the live counts and state."""
    status = {k: v for k, v in record.items() if k != "params"}
    if record.get("state") != "submitted":  # never reached the broker: the record says why
        return status
    if progress is None:
        status["state"] = "interrupted"
        status["error"] = (
            "the job's progress is gone from Redis (restarted without persistence?): "
            "ingest the source again to finish it; indexed items are not duplicated"
        )
        return status
    total, done, failed = progress["total"], progress["done"], progress["failed"]
    status.update(total=total, done=done, failed=failed, errors=progress["errors"])
    if progress.get("error"):
        status.update(state="failed", error=progress["error"])
    elif not progress.get("total_known"):
        status["state"] = "queued"
    elif done + failed >= total:
        status["state"] = "completed"
    else:
        status["state"] = "running"
    return status


class CeleryJobQueue:
    def __init__(self, settings: Settings, stream: PointStream) -> None:
        if not settings.broker.url:
            raise invalid("the Celery job queue needs a broker: set CLIPSEARCH_BROKER__URL")
        self._settings = settings
        self._stream = stream
        self._dir = settings.data_dir / "jobs"
        self._dir.mkdir(parents=True, exist_ok=True)
        self._app = Celery("clipsearch-gateway", broker=settings.broker.url, set_as_current=False)
        self._app.conf.update(
            task_serializer="json",
            accept_content=["json"],
            broker_connection_retry_on_startup=True,
            # A send meets a Redis outage with a clear error within seconds, not a hang.
            broker_connection_timeout=5,
            task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2},
        )

    # -- JobQueue protocol -------------------------------------------------------------------
    def submit(self, kind: str, params: dict[str, Any]) -> str:
        if kind not in JOB_KINDS:
            raise invalid(f"unknown job kind {kind!r}")
        spec = self._checked_source(params.get("source", ""))
        job_id = uuid.uuid4().hex
        collection = self._settings.collection
        source = spec.model_dump(exclude_none=True)
        record = new_job_record(job_id, source, collection)
        self._persist(record)
        try:
            self._stream.jobs.create_job(job_id)
            self._app.send_task(PLAN_JOB, args=[job_id, collection, source], queue=INDEX_QUEUE)
        except Exception as exc:
            record.update(state="failed", error=f"could not enqueue: {exc!r}", updated_at=now_iso())
            self._persist(record)
            raise ClipsearchError(
                ErrorType.unavailable, "the job broker is unreachable", retry_after_s=5
            ) from exc
        record.update(state="submitted", updated_at=now_iso())
        self._persist(record)
        return job_id

    def status(self, job_id: str) -> dict[str, Any]:
        record = self._record(job_id)
        try:
            progress = self._stream.jobs.get(job_id) if record["state"] == "submitted" else None
        except redis.RedisError as exc:
            raise ClipsearchError(
                ErrorType.unavailable, f"job progress is unreachable: {exc}", retry_after_s=5
            ) from exc
        return job_state(record, progress)

    def cancel(self, job_id: str) -> dict[str, Any]:
        self._record(job_id)  # not_found first
        raise invalid("cancelling jobs is not supported with the Celery job queue yet")

    def retry_failed(self, job_id: str) -> str:
        self._record(job_id)
        raise invalid("retry-failed is not supported with the Celery job queue yet")

    def ready(self) -> bool:
        try:
            return bool(self._stream.redis.ping())
        except redis.RedisError:
            return False

    def close(self) -> None:
        self._app.close()
        self._stream.close()

    # -- internals ---------------------------------------------------------------------------
    def _checked_source(self, source: object) -> SourceSpec:
        try:
            spec = SourceSpec.model_validate(source)
        except ValidationError as exc:
            raise invalid(f"bad source: {exc.errors()[0]['msg']}") from exc
        roots = self._settings.sources.allowed_roots
        if spec.directory is not None:
            return SourceSpec(directory=str(resolve_local_dir(spec.directory, roots)))
        if spec.manifest is not None:
            path = Path(spec.manifest).expanduser().resolve()
            # The manifest's folder must be under a root (same check, same errors); the file
            # itself must be a file there. Entries in it are checked by the worker, one by one.
            resolve_local_dir(str(path.parent), roots)
            if not path.is_file():
                raise invalid(f"manifest {spec.manifest!r} does not exist or is not a file")
            return SourceSpec(manifest=str(path))
        return spec

    def _path(self, job_id: str) -> Path:
        return self._dir / f"{job_id}.json"

    def _record(self, job_id: str) -> dict[str, Any]:
        if not _JOB_ID.match(job_id):  # also keeps the id from naming any other file
            raise not_found(f"no job {job_id!r}")
        try:
            record: dict[str, Any] = json.loads(self._path(job_id).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise not_found(f"no job {job_id!r}") from None
        return record

    def _persist(self, record: dict[str, Any]) -> None:
        path = self._path(record["id"])
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record), encoding="utf-8")
        os.replace(tmp, path)
