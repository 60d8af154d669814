"""Job progress on a real private Redis: runs, skips, failed entries, the task gate."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from indexer.distributed.progress import JobProgress
from tests.redis_server import redis_server

JOB = "j"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


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
