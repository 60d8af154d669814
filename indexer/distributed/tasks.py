"""Thin Celery tasks over ``indexer/distributed/batches.py``: retries, give-up, and the refusal of
a task whose collection records other cluster-wide settings than this indexer's (``refusal``).

Tasks are registered on the app that :func:`indexer.distributed.app.make_celery` builds, with names
from ``service.core.tasks`` so senders need neither this module nor Celery's registry.
"""

from __future__ import annotations

import itertools
import logging
import socket
from typing import Any

import redis
from celery import Celery, Task

from indexer.distributed import batches
from indexer.distributed.bundles import parse_task_bundles
from indexer.distributed.resources import IndexerResources
from indexer.pipeline.patience import RETRYABLE_TYPES
from service.core.contract import METADATA_KEY, CollectionSettings, check_settings
from service.core.errors import ClipsearchError
from service.core.tasks import INDEX_BATCH, INDEX_QUEUE, PLAN_JOB
from service.items.chunking import MAX_CHUNKS

log = logging.getLogger(__name__)

# The whole batch met a condition that passes (RETRYABLE_TYPES): a full points stream (the writer
# is behind), a busy or unreachable encoder; or a Redis blip.
MAX_COUNTDOWN_S = 10.0
# Retries (0.5 + 1 + 2 s) a task waits for encoder workers to serve a rollout's bundle before it
# embeds without it (``indexer.distributed.bundles.TaskBundles.ensure``).
BUNDLE_RETRIES = 3


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
        collection_settings: dict[str, Any] | None = None,
        bundles: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        try:
            # The bundles to embed with (``indexer.distributed.bundles``): served first, so the
            # check below knows them. Waiting for remote workers to serve one is retried.
            refs: list[str | None] = [None]
            refused = None
            try:
                waited = self.request.retries >= min(BUNDLE_RETRIES, broker.task_max_retries)
                refs = resources.bundles.ensure(parse_task_bundles(bundles), wait=not waited)
            except ClipsearchError as exc:
                if exc.type in RETRYABLE_TYPES:
                    raise
                refused = exc.message
            if refused is None:
                served = [r for r in refs if r is not None] or None
                refused = refusal(
                    resources, collection, collection_settings, embeds=True, served=served
                )
            if refused is not None:
                log.error("job %s: batch refused: %s", job_id, refused)
                _give_up(resources, job_id, collection, entries, refused, run)
                return {"entry": "", "sent": 0, "skipped": 0, "failed": [], "stopped": refused}
            outcome = batches.index_batch(
                job_id,
                collection,
                entries,
                embedder=resources.embedder(),
                stream=resources.stream(),
                settings=settings,
                run=run,
                bundles=refs,
                read_metrics=resources.read_metrics,
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
        self: Task,
        job_id: str,
        collection: str,
        source: dict[str, Any],
        run: str | None = None,
        collection_settings: dict[str, Any] | None = None,
        bundles: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        numbers = itertools.count()

        def send_batch(entries: list[dict[str, Any]]) -> None:
            kwargs: dict[str, Any] = {"run": run} if run else {}
            if collection_settings is not None:
                kwargs["collection_settings"] = collection_settings
            if bundles:
                kwargs["bundles"] = bundles
            # Kept before it is sent: a task the broker loses is sent again from the plan
            # (indexer.jobs.lost_tasks). Planning twice numbers the same batches the same.
            resources.stream().jobs.record_batch(job_id, next(numbers), entries)
            app.send_task(
                INDEX_BATCH, args=[job_id, collection, entries], kwargs=kwargs, queue=INDEX_QUEUE
            )

        try:
            # The bundle is checked per batch: planning embeds nothing (and needs no worker).
            # A cancelled job or another attempt's task is left to plan_job's own gate.
            refused = refusal(resources, collection, collection_settings, embeds=False)
            if refused is not None and resources.stream().jobs.gate(job_id, run).stop is None:
                log.error("job %s refused: %s", job_id, refused)
                resources.stream().jobs.mark_failed(job_id, refused)
                return {"total": 0, "failed": 0, "batches": 0, "error": refused}
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


def refusal(
    resources: IndexerResources,
    collection: str,
    recorded: dict[str, Any] | None,
    *,
    embeds: bool,
    served: list[str] | None = None,
) -> str | None:
    """Why this indexer refuses a task for ``collection`` (its settings disagree with those the
    collection records, which the task carries), or None. ``embeds``: the bundle is compared
    too, with ``served`` (the bundles the task embeds with), by default this indexer's default
    bundle."""
    found = CollectionSettings.from_metadata({METADATA_KEY: recorded} if recorded else None)
    if found is None:  # a task sent before settings were recorded
        return None
    here = CollectionSettings.of(resources.settings, bundle=None, max_chunks=MAX_CHUNKS)
    if embeds and served is None:
        served = [resources.embedder().info().bundle]
    elif not embeds:
        served = None
    try:
        check_settings(
            collection, found, here, served=served, where=f"in indexer {socket.gethostname()}"
        )
    except ClipsearchError as exc:
        return exc.message
    return None


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
