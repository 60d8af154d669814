"""The Celery job queue: the gateway's side of distributed ingestion.

``submit`` checks the source (its shape, and for local sources the allowed roots, so a wrong one
is refused before any job exists), writes the job's definition under ``<data_dir>/jobs`` (the
same record shape as the in-process runner's) and sends ``clipsearch.plan_job`` by name: the
gateway never imports ``indexer``. An indexer worker reads the source and fans it out into
``index_batch`` tasks; the writer counts each item in Redis once its points are written.

Each attempt of a job has a ``run`` token, in the record and in the Redis progress hash (which is
created at submit). ``status`` merges the record with that live progress only while both name the
same run; a job whose hash is gone (Redis restarted without persistence) reads ``interrupted``,
never ``completed`` and never ``running`` forever. Once a job is seen ended, its final counts and
failed entries are kept in the record, so a later Redis restart does not undo a finished job. A
settler thread looks at every job not yet seen ended every ``SETTLE_INTERVAL_S``, so that this
holds also for a job nobody asked about before Redis lost it.

* ``cancel``: the record notes it and the hash gets ``cancelled``: tasks not yet started do
  nothing, what is indexed stays indexed.
* ``retry``: an interrupted, failed or cancelled job runs again under the same id with a new run
  (older tasks become no-ops) and skips every item already stored with the same content sha256:
  its tasks ask the writer (``indexer.distributed.lookups``), since the store may live in this
  gateway, out of the workers' reach.
* ``retry_failed``: a new job over the failed items' task entries (kept in Redis by the writer).

A task the broker lost (a worker killed in the instant it took it) is sent again by the settler
(``indexer.jobs.lost_tasks``); the job's ``redelivered`` counts such tasks.

Redis away: the settler's ping (every ``SETTLE_INTERVAL_S``) keeps whether Redis answers, which
``ready()`` returns without asking Redis. Meanwhile ``submit`` refuses at once with
(unavailable) naming Redis and its URL (no password), leaving no record of the refused job;
``status`` of a job still running answers the same 503 (an ended job's outcome is in its record);
search, which needs no Redis, goes on. Once Redis answers again a new job runs, and a job whose
progress Redis lost reads ``interrupted`` and resumes with ``retry``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from pydantic import ValidationError

from indexer.distributed.stream import PointStream
from indexer.jobs.lost_tasks import LostTasks
from indexer.jobs.records import (
    MirroredRecords,
    job_collection,
    new_job_record,
    newest_first,
    now_iso,
)
from indexer.sources.datasets import is_dataset, open_dataset
from indexer.sources.roots import resolve_local_dir
from service.core.config import Settings
from service.core.errors import ClipsearchError, ErrorType, invalid, not_found
from service.core.schemas.sources import SourceSpec
from service.core.tasks import INDEX_QUEUE, PLAN_JOB

log = logging.getLogger(__name__)

JOB_KINDS = frozenset({"ingest", "ingest_directory"})
JOBS_KEY = "clipsearch:jobs:records"  # the job records every gateway replica reads
RESUMABLE = frozenset({"interrupted", "failed", "cancelled"})
ENDED = frozenset({"completed", "failed", "cancelled"})
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
# Record fields that are the gateway's own bookkeeping, not the job's status.
_PRIVATE = frozenset({"params", "run", "final", "failed_entries"})
# What an ended job's record keeps of its status.
_FINAL = (
    *("state", "total", "done", "failed", "skipped", "errors", "error"),
    *("rate_per_s", "eta_s", "redelivered"),
)
# How often the settler looks at the jobs not yet seen ended (one Redis read each).
SETTLE_INTERVAL_S = 2.0
INTERRUPTED = (
    "the job's progress is gone from Redis (restarted without persistence?): "
    "POST /v1/jobs/{id}/retry resumes it, skipping what is already indexed"
)


def job_state(
    record: dict[str, Any], progress: dict[str, Any] | None, *, now: float | None = None
) -> dict[str, Any]:
    """The job as ``GET /v1/jobs/{id}`` shows it: the record, with the live counts and state."""
    status = {k: v for k, v in record.items() if k not in _PRIVATE}
    status["collection"] = job_collection(record)
    if record.get("state") != "submitted":  # never reached the broker: the record says why
        return status
    run = record.get("run")
    if progress is None or (run and progress.get("run") != run):
        if record.get("final"):
            return {**status, **record["final"]}
        if record.get("cancelled_at"):
            return {**status, "state": "cancelled"}
        return {**status, "state": "interrupted", "error": INTERRUPTED}
    total, done, failed = progress["total"], progress["done"], progress["failed"]
    status.update(
        total=total,
        done=done,
        failed=failed,
        skipped=progress.get("skipped", 0),
        errors=progress["errors"],
        waiting_for_writer=bool(progress.get("waiting_for_writer")),
        redelivered=progress.get("redelivered", 0),
    )
    if progress.get("units_total"):  # a dataset job: shards or row ranges
        status.update(
            shards_total=progress["units_total"],
            shards_done=progress["units_done"],
            shards_read=progress.get("units_read", 0),
            # Parquet states its rows: known at once, as the embedded runner says; otherwise
            # once every unit has been read.
            total_known=bool(progress.get("total_exact")) or not progress.get("units_pending"),
        )
    all_read = not progress.get("units_pending")
    finished = bool(progress.get("total_known")) and all_read and done + failed >= total
    if progress.get("error"):
        status.update(state="failed", error=progress["error"])
    elif finished:
        status["state"] = "completed"
    elif record.get("cancelled_at") or progress.get("cancelled"):
        status["state"] = "cancelled"
    elif not progress.get("total_known"):
        status["state"] = "queued"
    else:
        status["state"] = "running"
    started, processed = progress.get("started_at"), done + failed
    end = (progress.get("updated_at") if finished else None) or now or time.time()
    if status["state"] in ("running", "completed") and started and processed and end > started:
        rate = processed / (end - started)
        status["rate_per_s"] = rate
        # No ETA while the job waits (a task for its retry or redelivery, the writer for room
        # or a hand-over): the rate so far says nothing about when it goes on.
        waits = ("waiting_for_writer", "waiting_for_retry", "stalled")
        if finished:
            status["eta_s"] = 0.0
        elif any(progress.get(k) for k in waits):
            status["eta_s"] = None
        else:
            status["eta_s"] = max(0, total - processed) / rate
    return status


class CeleryJobQueue:
    def __init__(
        self,
        settings: Settings,
        stream: PointStream,
        recorded_settings: Callable[[str], Mapping[str, Any] | None] | None = None,
        write_bundles: Callable[[str], list[dict[str, str | None]]] | None = None,
        writes: Callable[[str], None] | None = None,
    ) -> None:
        """``recorded_settings``: a collection's recorded cluster-wide settings
        (``service.core.contract``), sent with each job so that an indexer that disagrees
        refuses it. ``write_bundles``: the bundles a write to a collection is embedded with
        (``indexer.distributed.bundles.task_bundles``: during a model rollout, both), sent with
        each job; without it indexers embed with their default bundle. ``writes``: told a
        job's collection before its tasks are sent (this gateway's writer then reads that
        collection's points stream too)."""
        if not settings.broker.url:
            raise invalid("the Celery job queue needs a broker: set CLIPSEARCH_BROKER__URL")
        self._settings = settings
        self._stream = stream
        self._recorded_settings = recorded_settings
        self._write_bundles = write_bundles
        self._writes = writes
        # Mirrored in Redis: every gateway replica answers for every job.
        self._files = MirroredRecords(settings.data_dir / "jobs", "job", stream.redis, JOBS_KEY)
        self._app = Celery("clipsearch-gateway", broker=settings.broker.url, set_as_current=False)
        self._app.conf.update(
            task_serializer="json",
            accept_content=["json"],
            broker_connection_retry_on_startup=True,
            # A send meets a Redis outage with a clear error within seconds, not a hang.
            broker_connection_timeout=5,
            task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2},
        )
        # One lock over every read-modify-write of a record: the settler keeping a job's final
        # outcome must not write back a record that a retry has just given a new run.
        self._lock = threading.RLock()
        self._open = {r["id"] for r in self._files.load_all() if _unsettled(r)}
        # Tasks the broker lost (a worker killed as it took them) are sent again.
        self._lost = LostTasks(stream.jobs, self._send, self._task_kwargs)
        self._stop = threading.Event()
        # Whether Redis answered the settler's last ping: readiness and submit read this, never
        # Redis itself on a request's path. A first ping now (a refused connection fails fast).
        self._redis_up = self._ping()
        if not self._redis_up:
            log.warning("%s", self._unreachable().message)
        self._settler = threading.Thread(target=self._settle_loop, name="job-settler", daemon=True)
        self._settler.start()

    # -- JobQueue protocol -------------------------------------------------------------------
    def submit(self, kind: str, params: dict[str, Any]) -> str:
        """``params``: ``source``, and ``collection`` (default: the configured one), which the
        caller has checked exists."""
        if kind not in JOB_KINDS:
            raise invalid(f"unknown job kind {kind!r}")
        spec = self._checked_source(params.get("source", ""))
        # Refused now: a location not allowed, a column not there (4xx). A manifest file's
        # lines are counted by the indexer that plans it, not here.
        if is_dataset(spec) and spec.manifest is None:
            open_dataset(spec, self._settings)
        if not self._redis_up:  # refused before any record exists: nothing half-accepted
            raise self._unreachable()
        job_id = uuid.uuid4().hex
        collection = str(params.get("collection") or self._settings.collection)
        record = new_job_record(job_id, spec.model_dump(exclude_none=True), collection)
        self._enqueue(record, resume=False)
        return job_id

    def status(self, job_id: str) -> dict[str, Any]:
        return self._status(job_id)[2]

    def _status(self, job_id: str) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any]]:
        """The job's record, its live progress (None once ended or lost) and its status."""
        with self._lock:
            record = self._record(job_id)
            try:
                live = record["state"] == "submitted"
                progress = self._stream.jobs.get(job_id) if live else None
                status = job_state(record, progress)
                if progress is not None and status["state"] in ENDED:
                    self._keep_final(record, status)
                elif progress is not None and progress.get("total_known"):
                    self._keep_seen(record, status)
            except redis.RedisError as exc:
                if record.get("final"):  # an ended job's outcome is in its record
                    return record, None, job_state(record, None)
                raise self._unreachable() from exc
            return record, progress, status

    def list_jobs(
        self, *, limit: int, offset: int, where: Callable[[str | None], bool] | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of the records, each merged with its live progress as ``status`` does (one
        Redis read per job on the page). A record deleted between listing and reading is left
        out."""
        ordered = newest_first(self._files.load_all())
        if where is not None:
            ordered = [r for r in ordered if where(job_collection(r))]
        page: list[dict[str, Any]] = []
        for record in ordered[offset : offset + limit]:
            try:
                page.append(self.status(record["id"]))
            except ClipsearchError as exc:
                if exc.type is not ErrorType.not_found:
                    raise
        return page, len(ordered)

    def settle(self) -> None:
        """Look at each job not yet seen ended (``status`` keeps an ended job's outcome in its
        record); one that reads interrupted is left until a retry opens it again."""
        with self._lock:
            todo = sorted(self._open)
        for job_id in todo:
            try:
                record, progress, status = self._status(job_id)
                state = status["state"]
                if progress is not None and state in ("queued", "running"):
                    self._lost.check(record, progress, state, interval_s=SETTLE_INTERVAL_S)
            except ClipsearchError as exc:
                if exc.type is ErrorType.not_found:
                    with self._lock:
                        self._open.discard(job_id)
                    continue
                return  # Redis is unreachable: try them all again next time
            except redis.RedisError:
                return
            if state in ENDED or state == "interrupted":
                with self._lock:
                    self._open.discard(job_id)
                self._lost.forget(job_id)

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Stop a queued or running job: tasks not yet started do nothing; what is indexed
        stays indexed."""
        with self._lock:
            state = self.status(job_id)["state"]
            if state not in ("queued", "running"):
                raise ClipsearchError(
                    ErrorType.conflict, f"job {job_id} is {state}; nothing to cancel"
                )
            record = self._record(job_id)
            record.update(cancelled_at=now_iso(), updated_at=now_iso())
            self._persist(record)
        try:
            self._stream.jobs.mark_cancelled(job_id)
        except redis.RedisError as exc:  # the record holds it: the job reads cancelled anyway
            log.warning("job %s: could not flag the cancel in Redis: %s", job_id, exc)
        return self.status(job_id)

    def retry(self, job_id: str) -> str:
        """Run an interrupted, failed or cancelled job again under the same id, skipping what
        is already indexed with the same content; returns the id."""
        with self._lock:
            state = self.status(job_id)["state"]
            if state not in RESUMABLE:
                raise ClipsearchError(
                    ErrorType.conflict,
                    f"job {job_id} is {state}; only {sorted(RESUMABLE)} jobs resume",
                )
            record = self._record(job_id)
            for stale in ("final", "failed_entries", "cancelled_at", "error"):
                record.pop(stale, None)
            record.update(
                state="queued",
                attempt=int(record.get("attempt", 1)) + 1,
                total=0,
                done=0,
                failed=0,
                skipped=0,
                errors=[],
                resumed_at=now_iso(),
            )
            self._enqueue(record, resume=True)
        return job_id

    def retry_failed(self, job_id: str) -> str:
        """A new job over this job's failed entries (lines that could not even be read are not
        retried: the source itself must be fixed)."""
        state = self.status(job_id)["state"]  # an ended job's entries are in its record now
        if state in ("queued", "running"):
            raise ClipsearchError(ErrorType.conflict, f"job {job_id} is still {state}")
        entries = self._record(job_id).get("failed_entries") or []
        if not entries:
            hint = (
                " (it was interrupted: POST /v1/jobs/{id}/retry)" if state == "interrupted" else ""
            )
            raise invalid(f"job {job_id} has no failed entries to retry{hint}")
        source = {"manifest_lines": entries}
        collection = job_collection(self._record(job_id))
        return self.submit("ingest", {"source": source, "collection": collection})

    def ready(self) -> bool:
        """Whether Redis answered the last ping (cached: asks nothing)."""
        return self._redis_up

    def close(self) -> None:
        self._stop.set()
        self._settler.join(timeout=10)
        self._app.close()
        self._stream.close()

    # -- internals ---------------------------------------------------------------------------
    def _enqueue(self, record: dict[str, Any], *, resume: bool) -> None:
        """Start an attempt: a new run in the record and in Redis, then the plan task."""
        job_id, params = record["id"], record["params"]
        kwargs = self._task_kwargs(params)
        if self._writes is not None:  # before any task can append to its stream
            self._writes(params["collection"])
        run = uuid.uuid4().hex
        record.update(run=run, updated_at=now_iso())
        self._persist(record)
        try:
            self._stream.jobs.start(job_id, run=run, resume=resume)
            self._app.send_task(
                PLAN_JOB,
                args=[job_id, params["collection"], params["source"]],
                kwargs={"run": run, **kwargs},
                queue=INDEX_QUEUE,
            )
        except Exception as exc:
            self._redis_up = False
            if resume:  # the job stays resumable: its record says why this attempt failed
                record.update(
                    state="failed", error=f"could not enqueue: {exc!r}", updated_at=now_iso()
                )
                self._persist(record)
            else:  # a new job refused with 503 was never accepted: no record is left of it
                self._files.remove(job_id)
            raise self._unreachable() from exc
        record.update(state="submitted", updated_at=now_iso())
        self._persist(record)
        with self._lock:
            self._open.add(job_id)

    def _task_kwargs(self, params: dict[str, Any]) -> dict[str, Any]:
        """What every task of a job carries besides its run: the collection's recorded
        settings and the bundles to embed with."""
        kwargs: dict[str, Any] = {}
        if self._recorded_settings is not None:  # read per job: a promote may change them
            recorded = self._recorded_settings(params["collection"])
            if recorded is not None:
                kwargs["collection_settings"] = dict(recorded)
        if self._write_bundles is not None:  # read per job: a rollout may have begun
            bundles = self._write_bundles(params["collection"])
            # One configured bundle: the indexers' own, as before (an indexer of an older
            # release knows no ``bundles`` and would fail the task).
            if len(bundles) > 1 or any(b.get("spec") for b in bundles):
                kwargs["bundles"] = bundles
        return kwargs

    def _send(self, task: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        self._app.send_task(task, args=args, kwargs=kwargs, queue=INDEX_QUEUE)

    def _ping(self) -> bool:
        try:
            return bool(self._stream.redis.ping())
        except redis.RedisError:
            return False

    def _unreachable(self) -> ClipsearchError:
        return ClipsearchError(
            ErrorType.unavailable,
            f"Redis (the job broker) at {self._settings.broker.safe_url} is unreachable: jobs "
            "cannot be started or read until it is back; search is unaffected",
            {"broker": self._settings.broker.safe_url},
            retry_after_s=5,
        )

    def _settle_loop(self) -> None:
        while not self._stop.wait(SETTLE_INTERVAL_S):
            up = self._ping()
            if up != self._redis_up:
                if up:
                    log.info("Redis at %s is back: jobs resume", self._settings.broker.safe_url)
                else:
                    log.warning("%s", self._unreachable().message)
                self._redis_up = up
            try:
                self.settle()
            except Exception:  # a bug here must not end the thread: the next pass may do
                log.exception("the job settler failed")

    def _keep_seen(self, record: dict[str, Any], status: dict[str, Any]) -> None:
        """Keep the planned total and the last counts seen in the record: a job whose progress
        Redis loses reads interrupted with them, not with ``total: 0``."""
        seen: dict[str, Any] = {
            k: status[k] for k in ("total", "done", "failed", "skipped") if k in status
        }
        if all(record.get(k) == v for k, v in seen.items()):
            return
        record.update(seen)
        self._persist(record)

    def _keep_final(self, record: dict[str, Any], status: dict[str, Any]) -> None:
        """Keep an ended job's outcome in its record: a later Redis restart must not turn a
        finished job into an interrupted one."""
        final = {k: status[k] for k in _FINAL if k in status}
        if record.get("final") == final:
            return
        record.update(
            final=final,
            failed_entries=self._stream.jobs.failed_entries(record["id"]),
            updated_at=now_iso(),
        )
        self._persist(record)
        self._stream.jobs.forget_plan(record["id"])  # no task of it is sent again

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

    def _record(self, job_id: str) -> dict[str, Any]:
        if not _JOB_ID.match(job_id):  # also keeps the id from naming any other file
            raise not_found(f"no job {job_id!r}")
        try:
            return self._files.read(job_id)
        except FileNotFoundError:
            raise not_found(f"no job {job_id!r}") from None

    def _persist(self, record: dict[str, Any]) -> None:
        self._files.write(record)


def _unsettled(record: dict[str, Any]) -> bool:
    """Sent to the broker and not yet seen ended (nor cancelled, which the record holds)."""
    return record.get("state") == "submitted" and not record.get("final")
