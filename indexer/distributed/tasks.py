"""Thin Celery tasks over ``indexer/distributed/batches.py``: retries and give-up, nothing else.

Tasks are registered on the app that :func:`indexer.distributed.app.make_celery` builds, with names
from ``service.core.tasks`` so senders need neither this module nor Celery's registry.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import Celery, Task

from indexer.distributed import batches
from indexer.distributed.resources import IndexerResources
from service.core.errors import ClipsearchError, ErrorType
from service.core.tasks import INDEX_BATCH, INDEX_QUEUE, PLAN_JOB

log = logging.getLogger(__name__)

# The whole batch met a condition that passes: a full points stream (the writer is behind),
# a busy or unreachable encoder, a Redis blip.
RETRYABLE_TYPES = frozenset({ErrorType.overloaded, ErrorType.unavailable, ErrorType.timeout})
MAX_COUNTDOWN_S = 10.0


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, ClipsearchError):
        return exc.type in RETRYABLE_TYPES
    return isinstance(exc, redis.ConnectionError | redis.TimeoutError)


def register_tasks(app: Celery, resources: IndexerResources) -> None:
    settings = resources.settings
    broker = settings.broker
    # With Redis, a task waiting for its countdown sits unacknowledged in the worker; past the
    # visibility timeout it would be delivered a second time. Keep retries well inside it.
    max_countdown = min(MAX_COUNTDOWN_S, broker.visibility_timeout_s / 2)

    # shared=False: the task belongs to this app alone (a shared task would join every app
    # built later in the process, with this app's settings).
    @app.task(name=INDEX_BATCH, bind=True, shared=False, max_retries=broker.task_max_retries)
    def index_batch(
        self: Task,
        job_id: str,
        collection: str,
        entries: list[dict[str, Any]],
        run: str | None = None,
    ) -> dict[str, Any]:
        try:
            outcome = batches.index_batch(
                job_id,
                collection,
                entries,
                embedder=resources.embedder(),
                stream=resources.stream(),
                settings=settings,
                run=run,
            )
        except Exception as exc:
            if _retryable(exc) and self.request.retries < broker.task_max_retries:
                countdown = min(max_countdown, 0.5 * 2**self.request.retries)
                log.info("job %s: batch retries in %.1f s: %s", job_id, countdown, exc)
                raise self.retry(exc=exc, countdown=countdown) from exc
            reason = exc.message if isinstance(exc, ClipsearchError) else f"indexer error: {exc!r}"
            log.exception("job %s: batch of %d items failed", job_id, len(entries))
            _give_up(resources, job_id, collection, entries, reason, run)
            raise
        return {
            "entry": outcome.entry_id,
            "sent": len(outcome.sent),
            "skipped": len(outcome.skipped),
            "failed": [{"item": f["item"], "reason": f["reason"]} for f in outcome.failed],
            "stopped": outcome.stopped,
        }

    @app.task(name=PLAN_JOB, bind=True, shared=False, max_retries=broker.task_max_retries)
    def plan_job(
        self: Task, job_id: str, collection: str, source: dict[str, Any], run: str | None = None
    ) -> dict[str, Any]:
        def send_batch(entries: list[dict[str, Any]]) -> None:
            kwargs = {"run": run} if run else {}
            app.send_task(
                INDEX_BATCH, args=[job_id, collection, entries], kwargs=kwargs, queue=INDEX_QUEUE
            )

        try:
            outcome = batches.plan_job(
                job_id,
                collection,
                source,
                stream=resources.stream(),
                send_batch=send_batch,
                settings=settings,
                run=run,
            )
        except Exception as exc:
            # Only Redis blips reach here (a bad source marks the job failed): planning again
            # is harmless, it sends the same batches.
            if _retryable(exc) and self.request.retries < broker.task_max_retries:
                countdown = min(max_countdown, 0.5 * 2**self.request.retries)
                log.info("job %s: planning retries in %.1f s: %s", job_id, countdown, exc)
                raise self.retry(exc=exc, countdown=countdown) from exc
            log.exception("job %s: planning failed", job_id)
            try:
                resources.stream().jobs.mark_failed(job_id, f"planning failed: {exc!r}")
            except Exception:
                log.exception("job %s: could not mark the job failed", job_id)
            raise
        return {
            "total": outcome.total,
            "failed": outcome.failed,
            "batches": outcome.batches,
            "error": outcome.error,
        }


def _give_up(
    resources: IndexerResources,
    job_id: str,
    collection: str,
    entries: list[dict[str, Any]],
    reason: str,
    run: str | None,
) -> None:
    """Report the batch's items failed, so the job ends instead of waiting for them forever."""
    try:
        batches.report_failed(
            job_id, collection, entries, reason, stream=resources.stream(), run=run
        )
    except Exception:  # Redis itself is gone: the job shows it never completed
        log.exception("job %s: could not report %d failed items", job_id, len(entries))
