"""Live job progress in Redis, moved only by the writer once an item's points are written.

``clipsearch:job:<id>`` is a hash (``total``, ``done``, ``failed``, ``skipped``, ``run``,
``started_at``, ``updated_at``, ``counts`` (how many counts moved it), ``waiting_for_writer_at``,
``retrying_until``, ``cancelled``, ``resume``, ``redelivered``); beside it
the sets of items counted done and failed, a capped hash of failure reasons, a capped hash of
the failed entries themselves (for ``retry-failed``) and the plan: every ``index_batch`` task the
planner sent, by number (``record_batch``), so that a task the broker lost can be sent again
(``indexer.jobs.lost_tasks``). The plan costs about what the tasks' messages cost while queued; the
gateway deletes it once the job has ended. Counting goes through the sets, so a
redelivered stream entry adds nothing, and an item that failed once and then succeeds (a retry)
moves from failed to done. The sets cost about (item id length + 50) bytes an item.

``run`` names one attempt of a job (a resume starts another). Tasks and stream entries carry it:
counts and tasks of another attempt are ignored. After Redis lost a job, a task or entry still
in flight may write a field and so bring back a stub of the hash; it has no ``run``, so the
gateway does not take it for the job's progress and tasks of the job's attempt stop.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

# A producer that marked the job this recently is still waiting for room in the points stream.
WAITING_FRESH_S = 5.0
# No count for this long (and for 3 usual gaps between counts) reads as stalled: tasks wait
# for a redelivery (a killed indexer) or the writer (stopped, or handing over): no ETA.
STALLED_MIN_S = 10.0

# KEYS: job hash, done set, failed set, errors hash, failed entries hash. ARGV: errors cap, now,
# run ('' = any), number of done items, the done item ids, number of skipped items, their ids,
# then (failed item, reason, entry JSON or '') triples. One script, so a crash never leaves a
# set updated without its counter. A count for another attempt of the job is left out: the
# attempt that runs now counts its items itself.
_COUNT = """
if ARGV[3] ~= '' then
  local run = redis.call('HGET', KEYS[1], 'run')
  if run and run ~= ARGV[3] then return {0, 0, 0} end
end
local cap = tonumber(ARGV[1])
local done, failed, skipped = 0, 0, 0
local function add_done(item)
  if redis.call('SADD', KEYS[2], item) == 1 then
    done = done + 1
    if redis.call('SREM', KEYS[3], item) == 1 then
      failed = failed - 1
      redis.call('HDEL', KEYS[4], item)
      redis.call('HDEL', KEYS[5], item)
    end
    return true
  end
  return false
end
local i = 4
local n = tonumber(ARGV[i])
for j = i + 1, i + n do add_done(ARGV[j]) end
i = i + n + 1
n = tonumber(ARGV[i])
for j = i + 1, i + n do
  if add_done(ARGV[j]) then skipped = skipped + 1 end
end
for j = i + n + 1, #ARGV, 3 do
  local item = ARGV[j]
  if redis.call('SISMEMBER', KEYS[2], item) == 0 and redis.call('SADD', KEYS[3], item) == 1
  then
    failed = failed + 1
    if redis.call('HLEN', KEYS[4]) < cap then redis.call('HSET', KEYS[4], item, ARGV[j + 1]) end
    if ARGV[j + 2] ~= '' and redis.call('HLEN', KEYS[5]) < cap then
      redis.call('HSET', KEYS[5], item, ARGV[j + 2])
    end
  end
end
redis.call('HINCRBY', KEYS[1], 'done', done)
redis.call('HINCRBY', KEYS[1], 'failed', failed)
redis.call('HINCRBY', KEYS[1], 'skipped', skipped)
if done + failed ~= 0 then redis.call('HINCRBY', KEYS[1], 'counts', 1) end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[2])
return {done, failed, skipped}
"""


# KEYS: job hash, units-read set. ARGV: the unit's name, how far its items move the total (items
# read minus the rows planned for it). A unit read twice (a redelivered task) counts once.
_UNIT_READ = """
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'total', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'units_pending', -1)
  redis.call('HSET', KEYS[1], 'updated_at', ARGV[3])
  return 1
end
return 0
"""


def job_key(job_id: str) -> str:
    return f"clipsearch:job:{job_id}"


def finished_units_key(job_id: str) -> str:
    """Units of a dataset job read to the end, kept across attempts (not in ``_keys``)."""
    return f"{job_key(job_id)}:finished-units"


def _keys(job_id: str) -> list[str]:
    base = job_key(job_id)
    return [
        base,
        f"{base}:done",
        f"{base}:failed",
        f"{base}:errors",
        f"{base}:entries",
        f"{base}:units",
        plan_key(job_id),
    ]


def plan_key(job_id: str) -> str:
    """The job's plan: ``{batch number: JSON list of the task's entries}``."""
    return f"{job_key(job_id)}:plan"


@dataclass(frozen=True)
class Gate:
    """What a task of one attempt learns from the job hash before it works."""

    stop: str | None  # why the task must do nothing (cancelled, another attempt, job lost)
    resume: bool = False  # skip items already indexed with the same content hash


class JobProgress:
    def __init__(self, client: redis.Redis, *, max_errors_kept: int) -> None:
        self.redis = client
        self.max_errors_kept = max_errors_kept
        self._count = client.register_script(_COUNT)
        self._unit_read = client.register_script(_UNIT_READ)

    def start(self, job_id: str, *, run: str | None = None, resume: bool = False) -> None:
        """Begin an attempt before its total is known: the hash marks the job submitted, so a
        hash that is gone later (Redis restarted without persistence) reads as lost, not as
        still queued. A resumed attempt starts from nothing (its skips count what is done)."""
        pipe = self.redis.pipeline(transaction=True)
        if run is not None:
            pipe.delete(*_keys(job_id))
        pipe.hset(job_key(job_id), "submitted_at", time.time())
        if run is not None:
            pipe.hset(job_key(job_id), "run", run)
        if resume:
            pipe.hset(job_key(job_id), "resume", 1)
        pipe.execute()

    def init_job(self, job_id: str, total: int) -> None:
        """Set the job's total; done and failed are kept, so calling it again is harmless."""
        now = time.time()
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(job_key(job_id), mapping={"total": total, "updated_at": now})
        for name, value in (("started_at", now), ("done", 0), ("failed", 0), ("skipped", 0)):
            pipe.hsetnx(job_key(job_id), name, value)
        pipe.execute()

    def init_units(self, job_id: str, *, total: int, units: int, exact: bool = False) -> None:
        """A dataset job's plan (``indexer.distributed.units``): ``units`` shards or row
        ranges, ``total`` the rows the files state (parquet), each unit still to report what it
        read (``unit_read``); ``exact``: the files stated every unit's rows, so ``total`` is the
        job's total before any unit is read (as the embedded runner says). Set once: planning
        again (a redelivered task) changes nothing."""
        now = time.time()
        key = job_key(job_id)
        pipe = self.redis.pipeline(transaction=True)
        for name, value in (
            ("total", total),
            ("units_total", units),
            ("units_pending", units),
            ("total_exact", int(exact)),
            ("started_at", now),
            ("done", 0),
            ("failed", 0),
            ("skipped", 0),
        ):
            pipe.hsetnx(key, name, value)
        pipe.hset(key, "updated_at", now)
        pipe.execute()

    def unit_read(self, job_id: str, unit: str, delta: int) -> bool:
        """A unit was read to its end: the total moves by ``delta`` (items read minus rows
        planned for it), once per unit; whether this call counted it."""
        keys = _keys(job_id)
        return bool(self._unit_read(keys=[keys[0], keys[5]], args=[unit, delta, time.time()]))

    def gate(self, job_id: str, run: str | None) -> Gate:
        """Whether a task of attempt ``run`` should work now (None: a task of old, no run)."""
        found: list[bytes | None] = self.redis.hmget(  # type: ignore[assignment]
            job_key(job_id), ["submitted_at", "run", "cancelled", "resume", "total"]
        )
        submitted, current, cancelled, resume, total = found
        if cancelled:
            return Gate("the job was cancelled")
        if run is None:
            return Gate(None, bool(resume))
        if submitted is None and total is None:
            return Gate("the job's progress is gone from Redis: it is interrupted")
        if current is not None and current.decode() != run:
            return Gate("a newer attempt of the job runs")
        return Gate(None, bool(resume))

    def count(
        self,
        job_id: str,
        done: Sequence[str],
        failed: Sequence[Mapping[str, Any]] = (),
        *,
        skipped: Sequence[str] = (),
        run: str | None = None,
        client: Any = None,
    ) -> tuple[int, int] | None:
        """Count items once each; returns how far done and failed moved. ``skipped`` items
        (already indexed) count done and skipped. A failure may carry its ``entry`` (the task
        entry, for ``retry-failed``). With a pipeline as ``client`` the count joins its
        transaction and the pipeline's result holds it."""
        args: list[Any] = [self.max_errors_kept, time.time(), run or "", len(done), *done]
        args += [len(skipped), *skipped]
        for f in failed:
            entry = f.get("entry")
            args += [f["item"], f["reason"], json.dumps(entry) if entry is not None else ""]
        moved = self._count(keys=_keys(job_id), args=args, client=client or self.redis)
        if client is not None:
            return None
        return int(moved[0]), int(moved[1])

    def record_batch(self, job_id: str, number: int, entries: Sequence[Mapping[str, Any]]) -> None:
        """Keep one task of the plan before it is sent (a plan run twice writes the same)."""
        self.redis.hset(plan_key(job_id), str(number), json.dumps(list(entries)))

    def forget_plan(self, job_id: str) -> None:
        """The job has ended: no task of it will be sent again."""
        self.redis.delete(plan_key(job_id))

    def missing_batches(self, job_id: str) -> list[list[dict[str, Any]]]:
        """The planned tasks whose items are not all counted, each with just its uncounted
        entries; a dataset unit's task is missing while its unit is not read to the end."""
        keys = _keys(job_id)
        raw: dict[bytes, bytes] = self.redis.hgetall(keys[6])  # type: ignore[assignment]
        planned = [json.loads(raw[n]) for n in sorted(raw, key=int)]
        names = [item_id(e) for batch in planned for e in batch]
        if not names:
            return []
        pipe = self.redis.pipeline(transaction=False)
        pipe.smismember(keys[1], names)
        pipe.smismember(keys[2], names)
        pipe.smismember(keys[5], names)
        done, failed, units_read = pipe.execute()
        counted = iter(
            (bool(d) or bool(f), bool(u)) for d, f, u in zip(done, failed, units_read, strict=True)
        )
        missing: list[list[dict[str, Any]]] = []
        for batch in planned:
            left = []
            for entry in batch:
                item_counted, unit_read = next(counted)
                unit = isinstance(entry, dict) and "unit" in entry
                if not (unit_read if unit else item_counted):
                    left.append(entry)
            if left:
                missing.append(left)
        return missing

    def mark_redelivered(self, job_id: str, tasks: int) -> None:
        self.redis.hincrby(job_key(job_id), "redelivered", tasks)

    def mark_failed(self, job_id: str, reason: str) -> None:
        """The job as a whole could not run (its source could not be read)."""
        self.redis.hset(job_key(job_id), "error", reason)

    def mark_cancelled(self, job_id: str) -> None:
        """Tasks not yet started do nothing; what is indexed stays indexed."""
        self.redis.hset(job_key(job_id), "cancelled", 1)

    def mark_waiting(self, job_id: str) -> None:
        self.redis.hset(job_key(job_id), "waiting_for_writer_at", time.time())

    def mark_retrying(self, job_id: str, countdown_s: float) -> None:
        """A task of the job waits ``countdown_s`` for its retry: no ETA until then."""
        self.redis.hset(job_key(job_id), "retrying_until", time.time() + countdown_s)

    def get(self, job_id: str) -> dict[str, Any] | None:
        """``{"total", "total_known", "done", "failed", "skipped", "errors",
        "waiting_for_writer", "waiting_for_retry", "stalled", "error", "run", "cancelled",
        "started_at", "updated_at"}``, or None if unknown. ``total`` is never below
        ``done + failed`` (planned items are counted once each; the floor only guards it)."""
        raw: dict[bytes, bytes] = self.redis.hgetall(job_key(job_id))  # type: ignore[assignment]
        if not raw:
            return None
        values = {k.decode(): v.decode() for k, v in raw.items()}
        errors: dict[bytes, bytes] = self.redis.hgetall(_keys(job_id)[3])  # type: ignore[assignment]
        now = time.time()
        waiting_at = float(values.get("waiting_for_writer_at", 0))
        started = values.get("started_at")
        done, failed = int(values.get("done", 0)), int(values.get("failed", 0))
        total = int(values.get("total", 0))
        if "total" in values:
            total = max(total, done + failed)
        units = int(values.get("units_total", 0))
        pending = int(values.get("units_pending", 0))
        return {
            "total": total,
            "total_known": "total" in values,
            # A dataset job: its total is final once every unit has been read.
            "units_total": units or None,
            "units_done": units - pending if units else None,
            "units_pending": pending,
            "total_exact": values.get("total_exact") == "1",
            "units_read": int(values.get("units_read", 0)),
            "done": done,
            "failed": failed,
            "skipped": int(values.get("skipped", 0)),
            "errors": [
                {"item": k.decode(), "reason": v.decode()} for k, v in sorted(errors.items())
            ],
            "waiting_for_writer": now - waiting_at < WAITING_FRESH_S,
            "waiting_for_retry": now < float(values.get("retrying_until", 0)),
            "stalled": _stalled(values, now),
            "error": values.get("error"),
            "run": values.get("run"),
            "cancelled": bool(values.get("cancelled")),
            "started_at": float(started) if started else None,
            "updated_at": float(values.get("updated_at", 0)) or None,
            "submitted_at": float(values.get("submitted_at", 0)) or None,
            "redelivered": int(values.get("redelivered", 0)),
        }

    def failed_entries(self, job_id: str) -> list[dict[str, Any]]:
        """The task entries of the failed items (up to the errors cap), in item order."""
        raw: dict[bytes, bytes] = self.redis.hgetall(_keys(job_id)[4])  # type: ignore[assignment]
        return [json.loads(v) for _, v in sorted(raw.items())]

    def delete(self, job_id: str) -> None:
        self.redis.delete(*_keys(job_id), finished_units_key(job_id))

    def unit_finished(self, job_id: str, unit: str, read: int, failed: int) -> None:
        """Every item of ``unit`` is in the points stream (durable there; the writer counts
        it): kept across attempts, so that a resumed job does not read the unit again."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(finished_units_key(job_id), unit, f"{read},{failed}")
        pipe.hincrby(job_key(job_id), "units_read", 1)
        pipe.execute()

    def finished_units(self, job_id: str) -> dict[str, tuple[int, int]]:
        """Units that an earlier attempt read to the end: ``{unit: (items read, failed)}``."""
        raw: dict[bytes, bytes] = self.redis.hgetall(finished_units_key(job_id))  # type: ignore[assignment]
        out: dict[str, tuple[int, int]] = {}
        for unit, value in raw.items():
            read, failed = value.decode().split(",")
            out[unit.decode()] = (int(read), int(failed))
        return out

    def resume_units(self, job_id: str, units: dict[str, tuple[int, int, int]]) -> None:
        """Count units finished by an earlier attempt into this one, unread: each ``{unit:
        (items read, failed, rows planned)}`` moves the total like ``unit_read`` and counts its
        items done (as skipped) or failed by number (they are in no set of this attempt)."""
        for unit, (read, failed, rows) in units.items():
            if self.unit_read(job_id, unit, read - rows):
                pipe = self.redis.pipeline(transaction=True)
                pipe.hincrby(job_key(job_id), "done", read - failed)
                pipe.hincrby(job_key(job_id), "skipped", read - failed)
                pipe.hincrby(job_key(job_id), "failed", failed)
                pipe.execute()


def item_id(entry: object) -> str:
    """A task entry's name in job progress: its ``id``, else its ``uri`` (a malformed entry: its
    text, so that it still fails by name instead of failing its whole batch). A dataset unit's
    entry is named by its unit, which is its ``id``."""
    if isinstance(entry, Mapping):
        return str(entry.get("id") or entry.get("uri") or "")
    return repr(entry)[:200]


def _stalled(values: dict[str, str], now: float) -> bool:
    """No count for ``STALLED_MIN_S`` and for three times the usual gap between counts."""
    started, updated = float(values.get("started_at", 0)), float(values.get("updated_at", 0))
    if not started or not updated:
        return False
    counts = int(values.get("counts", 0))
    usual_gap = (updated - started) / counts if counts else 0.0
    return now - updated > max(STALLED_MIN_S, 3 * usual_gap)
