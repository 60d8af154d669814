"""Tasks the broker lost: found by the gateway's job settler and sent again.

Celery's at-least-once delivery over Redis (``task_acks_late``, kombu's emulated acknowledgements)
covers a task from the moment kombu records it as unacknowledged. A worker killed in the instant
between popping a message off the queue (``BRPOP``) and recording it takes the message with it
(celery/celery#4354, celery/kombu#305): nothing is left to redeliver, and the job would wait for
those items forever.

So a job that makes no progress is checked for work still in flight: a message naming the job
in the index queue (any priority; with more than :data:`SCAN_QUEUED` queued, any message, as
reading them all would cost more than waiting), an unacknowledged message naming the job, an
entry in its collection's points stream (the writer has yet to count it). One Redis transaction
reads all of them, so a message moving from the queue to the unacknowledged hash is seen in one
place or the other. With none of those, seen twice a settle interval apart (a message in that
instant of its delivery is in neither place only for microseconds), the job's own work is lost —
also while other jobs' tasks keep the queue busy:

* a job still queued (its plan task lost): ``plan_job`` is sent again, which is harmless;
* a running job: each planned ``index_batch`` task (the planner keeps the plan in Redis,
  ``JobProgress.record_batch``) whose items are not all counted is sent again with only those
  items; a dataset unit's task, while its unit is not read. Items are idempotent (deterministic
  point ids, counting through sets), so a task that was only slow, not lost, costs work twice,
  never a wrong count.

One gateway replica does it per job at a time (a Redis lock); the job's ``redelivered`` counts the
tasks sent again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import redis

from indexer.distributed.progress import STALLED_MIN_S, JobProgress, job_key
from indexer.distributed.stream import stream_key
from service.core.tasks import INDEX_BATCH, INDEX_QUEUE, PLAN_JOB

log = logging.getLogger(__name__)

# kombu's Redis transport: a queue is one list per priority step (the base name for priority
# 0), and delivered, unacknowledged messages are kept in one hash.
_PRIORITY_STEPS = (0, 3, 6, 9)
_PRIORITY_SEP = "\x06\x16"
_UNACKED = "unacked"
# Up to this many queued messages are read for the job's id (a message is ~2 KB); beyond, any
# queued message may be the job's and the check waits for the queue to shorten.
SCAN_QUEUED = 2_000
# A queued job (its plan task not run) is checked once it has waited this long.
QUEUED_CHECK_S = STALLED_MIN_S
# How long one replica holds a job's redelivery: others leave the job alone meanwhile. Once
# sent, the tasks are in flight (queued, then held by a worker) and hold others off themselves.
LOCK_S = 10


def queue_names(queue: str = INDEX_QUEUE) -> list[str]:
    return [queue if p == 0 else f"{queue}{_PRIORITY_SEP}{p}" for p in _PRIORITY_STEPS]


def _queued(client: redis.Redis, names: list[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.llen(name)
    return sum(pipe.execute())


def in_flight(client: redis.Redis, job_id: str, collection: str) -> str | None:
    """What of the job may still be on its way, or None: a message of the job waiting in the
    index queue (any message, with more than :data:`SCAN_QUEUED` queued), an unacknowledged
    message of the job, an entry in the points stream of its collection (any job's: the writer
    may be behind or away)."""
    names = queue_names()
    queued = _queued(client, names)
    if queued > SCAN_QUEUED:  # reading them would cost more than waiting for them
        return f"{queued} tasks queued"
    pipe = client.pipeline(transaction=True)  # one snapshot: a delivery is seen on one side
    for name in names:
        pipe.llen(name)
    for name in names:
        pipe.lrange(name, 0, SCAN_QUEUED)
    pipe.hvals(_UNACKED)
    pipe.xlen(stream_key(collection))
    answers = pipe.execute()
    lengths, queues = answers[: len(names)], answers[len(names) : 2 * len(names)]
    unacked, backlog = answers[-2:]
    if sum(lengths) > SCAN_QUEUED:  # grew meanwhile: not all of it was read
        return f"{sum(lengths)} tasks queued"
    needle = job_id.encode()
    queued = sum(needle in message for messages in queues for message in messages)
    if queued:
        return f"{queued} of its tasks queued"
    held = sum(needle in message for message in unacked)
    if held:
        return f"{held} of its tasks held by workers"
    if backlog:
        return f"{backlog} entries in the points stream"
    return None


class LostTasks:
    """Kept by the job settler: ``check`` each open job on every pass."""

    def __init__(
        self,
        jobs: JobProgress,
        send: Callable[[str, list[Any], dict[str, Any]], None],
        task_kwargs: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> None:
        """``send(task name, args, kwargs)`` sends a task to the index queue; ``task_kwargs``
        gives a job record's ``collection_settings`` and ``bundles`` as its tasks carry them."""
        self._jobs = jobs
        self._send = send
        self._task_kwargs = task_kwargs
        # job id -> when it was first seen waiting with nothing in flight
        self._suspects: dict[str, float] = {}

    def check(
        self, record: dict[str, Any], progress: dict[str, Any], state: str, *, interval_s: float
    ) -> int:
        """Send the job's lost tasks again once it has been seen twice, ``interval_s`` apart,
        waiting with nothing in flight; returns how many were sent."""
        job_id = record["id"]
        if not self._waiting(progress, state) or in_flight(
            self._jobs.redis, job_id, record["params"]["collection"]
        ):
            self._suspects.pop(job_id, None)
            return 0
        first = self._suspects.get(job_id)
        if first is None:
            self._suspects[job_id] = time.monotonic()
            return 0
        if time.monotonic() - first < interval_s:
            return 0
        self._suspects.pop(job_id, None)
        lock = f"{job_key(job_id)}:redelivering"
        if not self._jobs.redis.set(lock, record["run"], nx=True, ex=LOCK_S):
            return 0  # another replica is at it
        return self._redeliver(record, progress)

    def forget(self, job_id: str) -> None:
        self._suspects.pop(job_id, None)

    @staticmethod
    def _waiting(progress: dict[str, Any], state: str) -> bool:
        if progress.get("cancelled") or progress.get("error"):
            return False
        if state == "queued" and not progress.get("total_known"):
            submitted = progress.get("submitted_at") or time.time()
            return time.time() - submitted > QUEUED_CHECK_S
        return state == "running" and bool(progress.get("stalled"))

    def _redeliver(self, record: dict[str, Any], progress: dict[str, Any]) -> int:
        job_id, params, run = record["id"], record["params"], record["run"]
        kwargs = {"run": run, **self._task_kwargs(params)}
        if not progress.get("total_known"):
            log.warning("job %s: its plan task was lost by the broker; sending it again", job_id)
            self._send(PLAN_JOB, [job_id, params["collection"], params["source"]], kwargs)
            self._jobs.mark_redelivered(job_id, 1)
            return 1
        missing = self._jobs.missing_batches(job_id)
        for entries in missing:
            self._send(INDEX_BATCH, [job_id, params["collection"], entries], kwargs)
        if missing:
            items = sum(len(b) for b in missing)
            log.warning(
                "job %s: %d tasks (%d items) were lost by the broker (a worker killed as it "
                "took them?); sent again",
                job_id,
                len(missing),
                items,
            )
            self._jobs.mark_redelivered(job_id, len(missing))
        return len(missing)
