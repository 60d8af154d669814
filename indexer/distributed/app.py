"""The Celery app of the indexer workers: Redis broker, tasks that survive a killed worker.

``make_celery(settings, resources)`` builds it, with the tasks registered over ``resources``
(the embedder and points stream the composition root wires: ``clipsearch indexer``, or
``celery -A clipsearch.celery_app worker``); without resources it is an app for control commands
only (ping, inspect: the container probe).

Redelivery (kombu's Redis transport emulates acknowledgements): a delivered message is kept in
an "unacked" sorted set until the worker acknowledges it. Any worker's event loop sweeps that set
every ``unacked_restore_interval`` seconds and puts back messages older than
``visibility_timeout``. So a task held by a worker killed with SIGKILL runs again after at most
about visibility_timeout + restore_interval (25 + 5 s by default, settings ``broker.*``).
"""

from __future__ import annotations

from celery import Celery

from indexer.distributed.resources import IndexerResources
from indexer.distributed.tasks import register_tasks
from service.core.config import Settings
from service.core.errors import invalid
from service.core.tasks import INDEX_QUEUE


def make_celery(settings: Settings, resources: IndexerResources | None = None) -> Celery:
    """``resources``: the embedder and stream the tasks share; ``None`` registers no task."""
    url = settings.broker.url
    if not url:
        raise invalid("the Celery indexer needs a broker: set CLIPSEARCH_BROKER__URL")
    broker = settings.broker
    app = Celery("clipsearch", broker=url, set_as_current=False)
    app.conf.update(
        task_default_queue=INDEX_QUEUE,
        task_serializer="json",
        accept_content=["json"],
        # Progress lives in Redis (indexer/distributed/progress.py): no result backend to fill.
        task_ignore_result=True,
        # Acknowledge after the task ran: a worker that dies mid-task leaves it unacknowledged,
        # hence redelivered. Safe because tasks are idempotent (deterministic point ids).
        task_acks_late=True,
        # A pool child killed mid-task (prefork, OOM kill) requeues its task instead of
        # acknowledging it as failed.
        task_reject_on_worker_lost=True,
        # A worker holds only the task it runs: a kill strands one batch, not a prefetched pile,
        # and a busy worker does not sit on batches an idle one could run.
        worker_prefetch_multiplier=1,
        # On a broker connection loss the unacknowledged tasks are redelivered anyway: stop
        # running them rather than run every one twice.
        worker_cancel_long_running_tasks_on_connection_loss=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            # Seconds a delivered, unacknowledged task may stay so before it is redelivered. It
            # must exceed the longest task (a batch, including its wait for room in the points
            # stream): a longer task is delivered twice (harmless, wasted work).
            "visibility_timeout": broker.visibility_timeout_s,
            # Seconds between the sweeps that redeliver such tasks (kombu default 10).
            "unacked_restore_interval": broker.restore_interval_s,
            # Scan on every sweep, not every 10th (the default), so the interval above is the
            # whole delay: kombu's effective period is interval x throttle.
            "unacked_restore_throttle": 1,
            # The sweep's mutex outlives a worker killed while holding it (kombu default 300 s,
            # which would stall redelivery for minutes); a sweep takes milliseconds.
            "unacked_mutex_expire": 30,
        },
    )
    if resources is not None:
        register_tasks(app, resources)
    return app
