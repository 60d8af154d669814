"""Live job progress in Redis, moved only by the writer once an item's points are written.

``clipsearch:job:<id>`` is a hash (``total``, ``done``, ``failed``, ``updated_at``,
``waiting_for_writer_at``); beside it the sets of items counted done and failed and a capped
hash of failure reasons. Counting goes through the sets, so a redelivered stream entry adds
nothing, and an item that failed once and then succeeds (a retry) moves from failed to done.
The sets cost about (item id length + 50) bytes an item.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis

# A producer that marked the job this recently is still waiting for room in the points stream.
WAITING_FRESH_S = 5.0

# KEYS: job hash, done set, failed set, errors hash. ARGV: errors cap, now, number of done
# items, the done item ids, then (failed item, reason) pairs. One script, so a crash never
# leaves a set updated without its counter.
_COUNT = """
local cap, n_done = tonumber(ARGV[1]), tonumber(ARGV[3])
local done, failed = 0, 0
for i = 4, 3 + n_done do
  if redis.call('SADD', KEYS[2], ARGV[i]) == 1 then
    done = done + 1
    if redis.call('SREM', KEYS[3], ARGV[i]) == 1 then
      failed = failed - 1
      redis.call('HDEL', KEYS[4], ARGV[i])
    end
  end
end
for i = 4 + n_done, #ARGV, 2 do
  if redis.call('SISMEMBER', KEYS[2], ARGV[i]) == 0 and redis.call('SADD', KEYS[3], ARGV[i]) == 1
  then
    failed = failed + 1
    if redis.call('HLEN', KEYS[4]) < cap then redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1]) end
  end
end
redis.call('HINCRBY', KEYS[1], 'done', done)
redis.call('HINCRBY', KEYS[1], 'failed', failed)
redis.call('HSET', KEYS[1], 'updated_at', ARGV[2])
return {done, failed}
"""


def job_key(job_id: str) -> str:
    return f"clipsearch:job:{job_id}"


def _keys(job_id: str) -> list[str]:
    base = job_key(job_id)
    return [base, f"{base}:done", f"{base}:failed", f"{base}:errors"]


class JobProgress:
    def __init__(self, client: redis.Redis, *, max_errors_kept: int) -> None:
        self.redis = client
        self.max_errors_kept = max_errors_kept
        self._count = client.register_script(_COUNT)

    def init_job(self, job_id: str, total: int) -> None:
        """Set the job's total; done and failed are kept, so calling it again is harmless."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(job_key(job_id), mapping={"total": total, "updated_at": time.time()})
        pipe.hsetnx(job_key(job_id), "done", 0)
        pipe.hsetnx(job_key(job_id), "failed", 0)
        pipe.execute()

    def count(
        self,
        job_id: str,
        done: Sequence[str],
        failed: Sequence[Mapping[str, str]] = (),
        *,
        client: Any = None,
    ) -> tuple[int, int] | None:
        """Count items once each; returns how far done and failed moved. With a pipeline as
        ``client`` the count joins its transaction and the pipeline's result holds it."""
        args: list[Any] = [self.max_errors_kept, time.time(), len(done), *done]
        for f in failed:
            args += [f["item"], f["reason"]]
        moved = self._count(keys=_keys(job_id), args=args, client=client or self.redis)
        if client is not None:
            return None
        return int(moved[0]), int(moved[1])

    def create_job(self, job_id: str) -> None:
        """Mark the job as submitted before its total is known: a job whose hash is gone later
        (Redis restarted without persistence) then reads as lost, not as still queued."""
        self.redis.hsetnx(job_key(job_id), "submitted_at", time.time())

    def mark_failed(self, job_id: str, reason: str) -> None:
        """The job as a whole could not run (its source could not be read)."""
        self.redis.hset(job_key(job_id), "error", reason)

    def mark_waiting(self, job_id: str) -> None:
        self.redis.hset(job_key(job_id), "waiting_for_writer_at", time.time())

    def get(self, job_id: str) -> dict[str, Any] | None:
        """``{"total", "total_known", "done", "failed", "errors", "waiting_for_writer",
        "error"}``, or None if unknown."""
        raw: dict[bytes, bytes] = self.redis.hgetall(job_key(job_id))  # type: ignore[assignment]
        if not raw:
            return None
        values = {k.decode(): v.decode() for k, v in raw.items()}
        errors: dict[bytes, bytes] = self.redis.hgetall(_keys(job_id)[3])  # type: ignore[assignment]
        waiting_at = float(values.get("waiting_for_writer_at", 0))
        return {
            "total": int(values.get("total", 0)),
            "total_known": "total" in values,
            "done": int(values.get("done", 0)),
            "failed": int(values.get("failed", 0)),
            "errors": [
                {"item": k.decode(), "reason": v.decode()} for k, v in sorted(errors.items())
            ],
            "waiting_for_writer": time.time() - waiting_at < WAITING_FRESH_S,
            "error": values.get("error"),
        }

    def delete(self, job_id: str) -> None:
        self.redis.delete(*_keys(job_id))
