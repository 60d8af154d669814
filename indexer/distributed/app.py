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

Probes: with ``broker.probe_port`` set (``clipsearch indexer --probe-port``), the worker process
serves ``/health/live``, ``/health/ready`` and ``/metrics`` (``indexer/distributed/probes.py``)
from the moment Celery initialises the worker; a process that only imports the app (``celery
inspect ping``) starts none. Ready = Celery's consumer runs and Redis answered the last
background ping (every ``PING_INTERVAL_S``; ``clipsearch indexer`` builds the embedder before it
consumes, so a broken bundle never gets that far); live = the probe answers and that ping loop
still runs.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import Celery, signals

from indexer.distributed.probes import ProbeServer
from indexer.distributed.resources import IndexerResources
from indexer.distributed.tasks import MAX_COUNTDOWN_S, register_tasks
from service.core.collector import freeze_started
from service.core.config import Settings
from service.core.errors import invalid
from service.core.tasks import INDEX_BATCH, INDEX_QUEUE

log = logging.getLogger(__name__)

PING_INTERVAL_S = 2.0


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
        _count_tasks(app, resources)
        if resources.settings.startup.gc_freeze:
            _freeze_when_ready(app)
        if broker.probe_port:
            _serve_probes_with_the_worker(app, resources, broker.probe_host, broker.probe_port)
    return app


def _freeze_when_ready(app: Celery) -> None:
    """Once the worker consumes, what it keeps for life leaves the garbage collector's scans
    (service.core.collector; pools ``solo`` and ``threads``: the tasks run in this process)."""

    def ready(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is app:
            freeze_started("indexer worker started")

    signals.worker_ready.connect(ready, weak=False)


def _count_tasks(app: Celery, resources: IndexerResources) -> None:
    """Task metrics from Celery's task signals (the tasks themselves stay thin), and a job
    whose task waits for a retry is marked so (no ETA meanwhile)."""
    metrics = resources.metrics
    started: dict[str, float] = {}
    max_countdown = min(MAX_COUNTDOWN_S, resources.settings.broker.visibility_timeout_s / 2)

    def prerun(sender: Any = None, task_id: str = "", **_: Any) -> None:
        if getattr(sender, "app", None) is app:
            started[task_id] = time.monotonic()

    def postrun(
        sender: Any = None,
        task_id: str = "",
        args: Any = None,
        retval: Any = None,
        state: str | None = None,
        **_: Any,
    ) -> None:
        if getattr(sender, "app", None) is not app:
            return
        name = str(sender.name)
        began = started.pop(task_id, None)
        if began is not None:
            metrics.task_seconds.labels(name).observe(time.monotonic() - began)
        outcome = {"SUCCESS": "ok", "RETRY": "retry"}.get(state or "", "failed")
        metrics.tasks.labels(name, outcome).inc()
        if name != INDEX_BATCH:
            return
        if outcome == "ok" and isinstance(retval, dict):
            metrics.items.labels("sent").inc(int(retval.get("sent") or 0))
            metrics.items.labels("skipped").inc(int(retval.get("skipped") or 0))
            metrics.items.labels("failed").inc(len(retval.get("failed") or []))
        elif outcome == "failed" and args and len(args) > 2:
            metrics.items.labels("failed").inc(len(args[2]))

    def retrying(sender: Any = None, request: Any = None, **_: Any) -> None:
        job_id = (getattr(request, "args", None) or [None])[0]
        if getattr(sender, "app", None) is not app or not isinstance(job_id, str):
            return
        # The countdown tasks.py chose for this retry (request.retries: tries before it).
        countdown = min(max_countdown, 0.5 * 2 ** int(getattr(request, "retries", 0) or 0))
        try:
            resources.stream().jobs.mark_retrying(job_id, countdown)
        except Exception as exc:  # Redis may be what failed: the mark only withholds an ETA
            log.debug("job %s: could not mark the retry: %s", job_id, exc)

    signals.task_prerun.connect(prerun, weak=False)
    signals.task_postrun.connect(postrun, weak=False)
    signals.task_retry.connect(retrying, weak=False)


def _serve_probes_with_the_worker(
    app: Celery, resources: IndexerResources, host: str, port: int
) -> None:
    def on_init(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is not app:
            return
        try:
            probes = IndexerProbes(resources, host, port)
        except OSError as exc:
            # Celery logs and forgets a handler's Exception: a worker that cannot serve the
            # probes it was asked for would be restarted by them forever. Stop, saying why.
            log.error(
                "the indexer cannot start: cannot serve its probes on %s:%d: %s (set "
                "CLIPSEARCH_BROKER__PROBE_PORT or --probe-port to a free port)",
                host,
                port,
                exc.strerror or exc,
            )
            raise SystemExit(2) from exc
        signals.worker_ready.connect(lambda **_: probes.consuming(True), weak=False)
        signals.worker_shutting_down.connect(lambda **_: probes.consuming(False), weak=False)
        signals.worker_shutdown.connect(lambda **_: probes.close(), weak=False)

    signals.worker_init.connect(on_init, weak=False)


class IndexerProbes:
    """The indexer's probe server and the state it answers from (a Redis ping kept fresh on a
    thread of its own: a probe never waits for Redis)."""

    def __init__(self, resources: IndexerResources, host: str, port: int) -> None:
        self._resources = resources
        self._consuming = False
        self._redis: str | None = "Redis not checked yet"
        self._stop = threading.Event()
        self._pinger = threading.Thread(target=self._ping_loop, name="probe-ping", daemon=True)
        self._pinger.start()
        metrics = resources.metrics
        metrics.ready.set_function(lambda: 1.0 if self.ready()[0] else 0.0)
        try:
            self.server = ProbeServer(
                host, port, metrics.registry, live=self.live, ready=self.ready
            )
        except OSError:
            self._stop.set()
            raise

    def consuming(self, on: bool) -> None:
        self._consuming = on

    def live(self) -> tuple[bool, str | None]:
        if not self._pinger.is_alive() and not self._stop.is_set():
            return False, "the Redis check stopped"
        return True, None

    def ready(self) -> tuple[bool, str | None]:
        if not self._consuming:
            return False, "the Celery worker is not consuming tasks"
        if self._redis:
            return False, self._redis
        return True, None

    def _ping_loop(self) -> None:
        while True:
            try:
                self._resources.stream().redis.ping()
                self._redis = None
            except Exception as exc:  # any failure reads as not ready, with the reason
                self._redis = f"Redis does not answer: {exc}"
            if self._stop.wait(PING_INTERVAL_S):
                return

    def close(self) -> None:
        self._stop.set()
        self.server.close()
