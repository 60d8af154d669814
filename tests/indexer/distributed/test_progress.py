"""Job progress on a real private Redis: runs, skips, failed entries, the task gate."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from indexer.distributed.progress import JobProgress

JOB = "j"


@pytest.fixture()
def jobs(redis_url: str) -> Iterator[JobProgress]:
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield JobProgress(client, max_errors_kept=10)
    client.close()


def test_skipped_items_count_done_once_and_failures_keep_their_entries(jobs: JobProgress) -> None:
    jobs.start(JOB, run="r1", resume=True)
    jobs.init_job(JOB, total=4)
    entry = {"uri": "file:///x/c.png", "id": "c"}
    assert jobs.count(JOB, ["a"], [{"item": "c", "reason": "corrupt", "entry": entry}], run="r1")
    jobs.count(JOB, [], skipped=["b", "a"], run="r1")  # "a" was counted already
    status = jobs.get(JOB)
    assert status is not None
    assert (status["done"], status["failed"], status["skipped"]) == (2, 1, 1)
    assert jobs.failed_entries(JOB) == [entry]
    jobs.count(JOB, ["c"], run="r1")  # a retry of "c" worked: it moves to done
    status = jobs.get(JOB)
    assert status is not None
    assert (status["done"], status["failed"], status["errors"]) == (3, 0, [])
    assert jobs.failed_entries(JOB) == []
    assert status["run"] == "r1" and status["started_at"]


def test_a_count_of_another_run_is_left_out(jobs: JobProgress) -> None:
    jobs.start(JOB, run="r2")
    assert jobs.count(JOB, ["a"], run="r1") == (0, 0)
    assert jobs.count(JOB, ["a"], run="r2") == (1, 0)
    assert jobs.count(JOB, ["b"]) == (1, 0)  # an entry without a run (a task of old) counts


def test_a_new_attempt_starts_from_nothing(jobs: JobProgress) -> None:
    jobs.start(JOB, run="r1")
    jobs.init_job(JOB, total=2)
    jobs.count(JOB, ["a"], [{"item": "b", "reason": "x"}], run="r1")
    jobs.mark_cancelled(JOB)
    jobs.start(JOB, run="r2", resume=True)
    status = jobs.get(JOB)
    assert status is not None
    assert (status["total_known"], status["done"], status["failed"]) == (False, 0, 0)
    assert not status["cancelled"] and status["errors"] == []


def test_the_gate_stops_tasks_of_cancelled_lost_or_older_attempts(jobs: JobProgress) -> None:
    assert jobs.gate(JOB, "r1").stop == "the job's progress is gone from Redis: it is interrupted"
    assert jobs.gate(JOB, None).stop is None  # a task of old, without a run: runs as before
    jobs.start(JOB, run="r1")
    assert jobs.gate(JOB, "r1") == jobs.gate(JOB, "r1")
    assert jobs.gate(JOB, "r1").stop is None and not jobs.gate(JOB, "r1").resume
    jobs.start(JOB, run="r2", resume=True)
    assert jobs.gate(JOB, "r1").stop == "a newer attempt of the job runs"
    assert jobs.gate(JOB, "r2").resume
    jobs.mark_cancelled(JOB)
    assert jobs.gate(JOB, "r2").stop == "the job was cancelled"
    jobs.redis.flushdb()
    jobs.count(JOB, ["late"], run="r2")  # an entry in flight brings back a stub of the hash
    assert jobs.gate(JOB, "r2").stop is not None


def test_total_known_once_planned_and_never_below_the_counted(jobs: JobProgress) -> None:
    jobs.start(JOB, run="r1")
    status = jobs.get(JOB)
    assert status is not None and not status["total_known"]
    jobs.init_job(JOB, total=2)
    jobs.count(JOB, ["a", "b"], run="r1")
    jobs.count(JOB, ["a"], run="r1")  # a redelivered entry: nothing moves
    status = jobs.get(JOB)
    assert status is not None and (status["total"], status["done"]) == (2, 2)
    # An item outside the plan (a task of a source that changed under a re-plan) still never
    # shows done above total.
    jobs.count(JOB, [], [{"item": "c", "reason": "gone"}], run="r1")
    status = jobs.get(JOB)
    assert status is not None and (status["total"], status["done"], status["failed"]) == (3, 2, 1)


def test_no_eta_while_the_job_waits_for_a_retry_or_nothing_moves(
    jobs: JobProgress, redis_url: str
) -> None:
    import time

    import redis

    from indexer.distributed.progress import job_key
    from indexer.jobs.celery_queue import job_state

    record = {"id": JOB, "state": "submitted", "run": "r1"}
    jobs.start(JOB, run="r1")
    jobs.init_job(JOB, total=10)
    client = redis.Redis.from_url(redis_url)
    try:
        now = time.time()
        # Four counts over the last 40 s, the last one 30 s ago: usual gap 10 s, so 30 s
        # without one means the tasks wait (a killed indexer's batch for its redelivery).
        jobs.count(JOB, ["a", "b", "c", "d"], run="r1")
        client.hset(
            job_key(JOB), mapping={"started_at": now - 40, "updated_at": now - 30, "counts": 4}
        )
        stalled = job_state(record, jobs.get(JOB))
        assert stalled["state"] == "running" and stalled["eta_s"] is None
        assert stalled["rate_per_s"] > 0
        jobs.count(JOB, ["e"], run="r1")  # it moves again: an ETA again
        moving = job_state(record, jobs.get(JOB))
        assert moving["eta_s"] is not None and moving["eta_s"] > 0
        jobs.mark_retrying(JOB, 5.0)  # a task waits 5 s for its retry
        waiting = job_state(record, jobs.get(JOB))
        assert waiting["state"] == "running" and waiting["eta_s"] is None
        client.hset(job_key(JOB), "retrying_until", now - 1)  # the retry is due: ETA again
        assert job_state(record, jobs.get(JOB))["eta_s"] is not None
        jobs.count(JOB, ["f", "g", "h", "i", "j"], run="r1")
        assert job_state(record, jobs.get(JOB))["eta_s"] == 0.0
    finally:
        client.close()


@pytest.mark.parametrize("exact", [True, False])
def test_a_dataset_total_is_known_at_once_only_when_the_files_state_it(
    jobs: JobProgress, exact: bool
) -> None:
    """Parquet states its rows: the distributed job says ``total_known`` before any unit is read,
    as the embedded runner does; a CSV or shard job only once every unit has been read."""
    from indexer.jobs.celery_queue import job_state

    record = {"id": JOB, "kind": "ingest", "state": "submitted", "errors": []}
    jobs.start(JOB, run="r1", resume=False)
    jobs.init_units(JOB, total=1_000 if exact else 0, units=2, exact=exact)
    jobs.init_units(JOB, total=5, units=9, exact=not exact)  # a redelivered plan changes nothing
    status = job_state(record, jobs.get(JOB))
    assert (status["shards_total"], status["shards_done"]) == (2, 0)
    assert status["total_known"] is exact and status["total"] == (1_000 if exact else 0)
    for unit in ("u0", "u1"):
        jobs.unit_read(JOB, unit, 0 if exact else 3)
    status = job_state(record, jobs.get(JOB))
    assert status["total_known"] is True and status["total"] == (1_000 if exact else 6)
