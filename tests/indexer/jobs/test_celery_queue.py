"""The Celery job queue without a worker: submit-time checks, records, the state logic, cancel,
resume and retry-failed (what a worker would do is played on the Redis progress by hand)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from indexer.distributed.stream import PointStream
from indexer.jobs.celery_queue import SETTLE_INTERVAL_S, CeleryJobQueue, job_state
from service.core.errors import ClipsearchError, ErrorType
from service.core.tasks import INDEX_QUEUE
from tests.support import wait_until

RECORD: dict[str, Any] = {
    "id": "j",
    "kind": "ingest",
    "params": {"source": {"directory": "/x"}, "collection": "media"},
    "state": "submitted",
    "total": 0,
    "done": 0,
    "failed": 0,
    "errors": [],
    "created_at": "t",
    "updated_at": "t",
}


def progress(**values: Any) -> dict[str, Any]:
    base = {"total": 0, "total_known": False, "done": 0, "failed": 0, "errors": [], "error": None}
    return {**base, **values}


@pytest.mark.parametrize(
    ("live", "state"),
    [
        (progress(), "queued"),
        (progress(total=3, total_known=True, done=1), "running"),
        (progress(total=3, total_known=True, done=2, failed=1), "completed"),
        (progress(total=0, total_known=True), "completed"),
        (progress(total=3, total_known=True, error="outside the roots"), "failed"),
        (progress(total=3, total_known=True, done=1, cancelled=True), "cancelled"),
        (progress(total=3, total_known=True, done=3, cancelled=True), "completed"),
        (None, "interrupted"),
    ],
)
def test_job_state(live: dict[str, Any] | None, state: str) -> None:
    status = job_state(RECORD, live)
    assert status["state"] == state
    assert "params" not in status
    if live is not None:
        assert (status["done"], status["failed"]) == (live["done"], live["failed"])


def test_rate_and_eta_come_from_the_live_counts() -> None:
    live = progress(total=10, total_known=True, done=3, failed=1, started_at=100.0)
    status = job_state(RECORD, live, now=102.0)
    assert status["rate_per_s"] == pytest.approx(2.0)
    assert status["eta_s"] == pytest.approx(3.0)
    done = progress(total=4, total_known=True, done=4, started_at=100.0, updated_at=104.0)
    status = job_state(RECORD, done, now=500.0)  # the rate of the run, not of the wait since
    assert (status["rate_per_s"], status["eta_s"]) == (pytest.approx(1.0), 0.0)


def test_progress_of_another_run_is_not_this_job() -> None:
    """A stub of the hash (brought back by an entry in flight after Redis lost the job) or an
    older attempt's progress never stands for the record's run."""
    record = {**RECORD, "run": "r2"}
    assert job_state(record, progress(total=3, total_known=True, done=3))["state"] == (
        "interrupted"
    )
    assert job_state(record, progress(run="r1", done=3))["state"] == "interrupted"
    live = progress(run="r2", total=3, total_known=True, done=1)
    assert job_state(record, live)["state"] == "running"
    final = {**record, "final": {"state": "completed", "total": 3, "done": 3}}
    assert job_state(final, None)["state"] == "completed"
    cancelled = {**record, "cancelled_at": "t"}
    assert job_state(cancelled, None)["state"] == "cancelled"


def test_a_record_that_never_reached_the_broker_keeps_its_state() -> None:
    status = job_state({**RECORD, "state": "failed", "error": "could not enqueue"}, None)
    assert (status["state"], status["error"]) == ("failed", "could not enqueue")


def test_status_follows_redis_progress(queue: tuple[CeleryJobQueue, PointStream, Path]) -> None:
    jobs, stream, root = queue
    assert jobs.ready()
    job_id = jobs.submit("ingest", {"source": {"directory": str(root / "photos")}})
    assert (jobs._files.path(job_id)).is_file()
    assert stream.redis.llen(INDEX_QUEUE) == 1  # the plan task, waiting for a worker
    assert jobs.status(job_id)["state"] == "queued"
    stream.jobs.init_job(job_id, total=2)
    assert jobs.status(job_id)["state"] == "running"
    assert not jobs.status(job_id)["waiting_for_writer"]
    stream.jobs.mark_waiting(job_id)  # a task waits for room in the points stream
    assert jobs.status(job_id)["waiting_for_writer"]
    stream.jobs.count(job_id, ["a"])
    assert (jobs.status(job_id)["done"], jobs.status(job_id)["eta_s"]) == (1, None)
    stream.redis.flushall()  # Redis restarted without persistence, the job half done
    interrupted = jobs.status(job_id)
    # What was planned and last seen stays: not ``total: 0``.
    assert (interrupted["state"], interrupted["total"], interrupted["done"]) == (
        "interrupted",
        2,
        1,
    )


def test_an_ended_job_stays_ended_when_redis_restarts(
    queue: tuple[CeleryJobQueue, PointStream, Path],
) -> None:
    jobs, stream, root = queue
    job_id = submit_photos(jobs, root)
    stream.jobs.init_job(job_id, total=2)
    entry = {"uri": "file:///x/b.png", "id": "b"}
    stream.jobs.count(job_id, ["a"], [{"item": "b", "reason": "corrupt", "entry": entry}])
    status = jobs.status(job_id)
    assert (status["state"], status["done"], status["failed"]) == ("completed", 1, 1)
    assert status["errors"] == [{"item": "b", "reason": "corrupt"}]
    stream.redis.flushall()
    after = jobs.status(job_id)
    assert (after["state"], after["done"], after["failed"]) == ("completed", 1, 1)
    # The failed entries were kept with the record: retry-failed still works.
    new_id = jobs.retry_failed(job_id)
    assert new_id != job_id
    assert plan_messages(stream)[-1][0][2] == {"manifest_lines": [entry]}


def test_a_job_that_ended_unasked_stays_ended_when_redis_restarts(
    queue: tuple[CeleryJobQueue, PointStream, Path],
) -> None:
    """Nobody asks for the job between its end and the Redis loss: the settler has kept the
    outcome in the record anyway."""
    jobs, stream, root = queue
    job_id = submit_photos(jobs, root)
    assert job_id in jobs._open
    stream.jobs.init_job(job_id, total=2)
    stream.jobs.count(job_id, ["a", "b"], [])
    wait_until(lambda: job_id not in jobs._open, 5 * SETTLE_INTERVAL_S + 10)
    stream.redis.flushall()
    after = jobs.status(job_id)
    assert (after["state"], after["done"], after["failed"]) == ("completed", 2, 0)


def test_the_settler_picks_up_unsettled_jobs_after_a_restart_and_leaves_the_rest(
    queue: tuple[CeleryJobQueue, PointStream, Path], tmp_path: Path
) -> None:
    jobs, stream, root = queue
    running = submit_photos(jobs, root)
    stream.jobs.init_job(running, total=3)
    stream.jobs.count(running, ["a"], [])
    lost = submit_photos(jobs, root)
    stream.redis.delete(*stream.redis.keys(f"clipsearch:job:{lost}*"))  # Redis lost this one
    ended = submit_photos(jobs, root)
    stream.jobs.init_job(ended, total=0)
    assert jobs.status(ended)["state"] == "completed"  # seen ended: its record says so
    jobs.close()
    restarted = CeleryJobQueue(
        jobs._settings, PointStream(jobs._settings.broker.url or "", jobs._settings.broker)
    )
    try:
        assert restarted._open == {running, lost}
        restarted.settle()
        assert restarted._open == {running}  # interrupted is left until a retry reopens it
        assert restarted.status(lost)["state"] == "interrupted"
        restarted.retry(lost)
        assert lost in restarted._open
    finally:
        restarted.close()


def submit_photos(jobs: CeleryJobQueue, root: Path) -> str:
    return jobs.submit("ingest", {"source": {"directory": str(root / "photos")}})


def plan_messages(stream: PointStream) -> list[tuple[list[Any], dict[str, Any]]]:
    """The (args, kwargs) of the tasks waiting in the queue, oldest first (Celery protocol 2)."""
    raw = stream.redis.lrange(INDEX_QUEUE, 0, -1)
    bodies = [json.loads(base64.b64decode(json.loads(m)["body"])) for m in raw]  # type: ignore[union-attr]
    return [(b[0], b[1]) for b in reversed(bodies)]  # LPUSH: the newest is first


def test_cancel_flags_the_job_and_its_tasks_stop(
    queue: tuple[CeleryJobQueue, PointStream, Path],
) -> None:
    jobs, stream, root = queue
    job_id = submit_photos(jobs, root)
    ((_, kwargs),) = plan_messages(stream)
    run = kwargs["run"]
    stream.jobs.init_job(job_id, total=5)
    stream.jobs.count(job_id, ["a"], run=run)
    assert stream.jobs.gate(job_id, run).stop is None
    status = jobs.cancel(job_id)
    assert (status["state"], status["done"]) == ("cancelled", 1)  # what is indexed stays
    assert stream.jobs.gate(job_id, run).stop == "the job was cancelled"
    with pytest.raises(ClipsearchError) as info:
        jobs.cancel(job_id)
    assert info.value.type is ErrorType.conflict
    stream.redis.flushall()  # the record alone still knows it was cancelled
    assert jobs.status(job_id)["state"] == "cancelled"


def test_retry_resumes_under_the_same_id_with_a_new_run(
    queue: tuple[CeleryJobQueue, PointStream, Path],
) -> None:
    jobs, stream, root = queue
    job_id = submit_photos(jobs, root)
    ((_, first),) = plan_messages(stream)
    stream.jobs.init_job(job_id, total=5)
    with pytest.raises(ClipsearchError) as info:
        jobs.retry(job_id)  # running: nothing to resume
    assert info.value.type is ErrorType.conflict
    stream.redis.flushall()
    assert jobs.status(job_id)["state"] == "interrupted"
    assert jobs.retry(job_id) == job_id
    ((args, second),) = plan_messages(stream)
    assert args == [job_id, "media", {"directory": str(root / "photos")}]
    assert second["run"] != first["run"]
    status = jobs.status(job_id)
    assert (status["state"], status["attempt"], status["done"]) == ("queued", 2, 0)
    assert stream.jobs.gate(job_id, second["run"]).resume  # its tasks skip what is indexed
    assert stream.jobs.gate(job_id, first["run"]).stop == "a newer attempt of the job runs"
    # An entry of the old attempt still in flight counts nothing into the new one.
    stream.jobs.init_job(job_id, total=2)
    stream.jobs.count(job_id, ["a"], run=first["run"])
    stream.jobs.count(job_id, ["b"], skipped=["c"], run=second["run"])
    status = jobs.status(job_id)
    assert (status["state"], status["done"], status["skipped"]) == ("completed", 2, 1)
    with pytest.raises(ClipsearchError) as info:
        jobs.retry(job_id)
    assert info.value.type is ErrorType.conflict


@pytest.mark.parametrize("job_id", ["nope", "0" * 32, "../../etc/passwd"])
def test_unknown_job_is_not_found(
    queue: tuple[CeleryJobQueue, PointStream, Path], job_id: str
) -> None:
    with pytest.raises(ClipsearchError) as info:
        queue[0].status(job_id)
    assert info.value.type is ErrorType.not_found


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ({"directory": "/"}, ErrorType.forbidden),
        ({"manifest": "/etc/hosts"}, ErrorType.forbidden),
        ({"directory": "missing"}, ErrorType.forbidden),
        ({"nothing": 1}, ErrorType.invalid_input),
    ],
)
def test_bad_sources_are_refused_before_any_job(
    queue: tuple[CeleryJobQueue, PointStream, Path], source: dict[str, Any], error: ErrorType
) -> None:
    jobs, stream, _ = queue
    with pytest.raises(ClipsearchError) as info:
        jobs.submit("ingest", {"source": source})
    assert info.value.type is error
    assert stream.redis.llen(INDEX_QUEUE) == 0
    assert not list(jobs._files.folder.glob("*.json"))


def test_a_missing_directory_under_the_roots_is_invalid(
    queue: tuple[CeleryJobQueue, PointStream, Path],
) -> None:
    jobs, _, root = queue
    with pytest.raises(ClipsearchError) as info:
        jobs.submit("ingest", {"source": {"directory": str(root / "missing")}})
    assert info.value.type is ErrorType.invalid_input


def test_list_jobs_pages_newest_first_with_live_progress(
    queue: tuple[CeleryJobQueue, PointStream, Path],
) -> None:
    jobs, stream, root = queue
    ids = [submit_photos(jobs, root) for _ in range(3)]
    stream.jobs.init_job(ids[0], total=4)  # the oldest is running, per Redis
    page, total = jobs.list_jobs(limit=2, offset=0)
    assert total == 3
    assert [j["id"] for j in page] == [ids[2], ids[1]]
    assert [j["state"] for j in page] == ["queued", "queued"]
    assert not {"params", "run", "final", "failed_entries"} & set(page[0])
    rest, _ = jobs.list_jobs(limit=2, offset=2)
    assert [(j["id"], j["state"], j["total"]) for j in rest] == [(ids[0], "running", 4)]
    assert jobs.list_jobs(limit=5, offset=3) == ([], 3)
