"""Tasks the broker lost, found and sent again (``indexer.jobs.lost_tasks``), on a real Redis and
the real Celery job queue; the loss is played by hand: a message taken off the queue and dropped,
as a worker killed right after its ``BRPOP`` drops it. The same on real processes (a gateway, an
indexer): ``tests/faults/test_lost_tasks.py``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from indexer.distributed.stream import PointStream, stream_key
from indexer.jobs import lost_tasks
from indexer.jobs.celery_queue import CeleryJobQueue
from indexer.jobs.lost_tasks import in_flight, queue_names
from service.core.tasks import INDEX_QUEUE
from tests.indexer.jobs.test_celery_queue import plan_messages, submit_photos

Queue = tuple[CeleryJobQueue, PointStream, Path]


def check(jobs: CeleryJobQueue, job_id: str) -> int:
    """One pass of the settler's check for ``job_id`` (no wait between sightings)."""
    record, progress, status = jobs._status(job_id)
    assert progress is not None
    return jobs._lost.check(record, progress, status["state"], interval_s=0.0)


def age(stream: PointStream, job_id: str, seconds: float) -> None:
    """The job was submitted, started and last counted ``seconds`` ago."""
    then = time.time() - seconds
    key = f"clipsearch:job:{job_id}"
    stream.redis.hset(key, mapping={"submitted_at": then, "updated_at": then})
    if stream.redis.hexists(key, "started_at"):
        stream.redis.hset(key, "started_at", then)


def sent_again(stream: PointStream) -> list[tuple[list[Any], dict[str, Any]]]:
    found = plan_messages(stream)
    stream.redis.delete(INDEX_QUEUE)
    return found


def test_a_lost_plan_task_is_sent_again_with_the_same_run(queue: Queue) -> None:
    jobs, stream, root = queue
    job_id = submit_photos(jobs, root)
    ((_, kwargs),) = sent_again(stream)  # taken off the queue and lost
    age(stream, job_id, 5.0)
    assert check(jobs, job_id) == 0 and check(jobs, job_id) == 0  # queued 5 s: not yet
    age(stream, job_id, 60.0)
    assert check(jobs, job_id) == 0  # seen once with nothing in flight: not yet
    assert check(jobs, job_id) == 1  # twice: its plan goes out again
    ((args, again),) = plan_messages(stream)
    assert args[0] == job_id and again["run"] == kwargs["run"]
    assert jobs.status(job_id)["redelivered"] == 1
    # Now in the queue: in flight, nothing more is sent.
    assert in_flight(stream.redis, job_id, "media") == "1 of its tasks queued"
    assert check(jobs, job_id) == 0 and check(jobs, job_id) == 0


def test_only_the_uncounted_items_of_a_lost_batch_go_out_again(queue: Queue) -> None:
    jobs, stream, root = queue
    job_id = submit_photos(jobs, root)
    ((_, kwargs),) = sent_again(stream)  # the plan task ran: what it planned is below
    a, b, c = ({"uri": f"file:///x/{n}.png", "id": n} for n in "abc")
    unit = {"unit": {"shard": "s-0.tar"}, "source": {"webdataset": ["s-0.tar"]}, "id": "s-0.tar"}
    stream.jobs.init_job(job_id, total=4)
    for number, batch in enumerate([[a, b], [c], [unit]]):
        stream.jobs.record_batch(job_id, number, batch)
    stream.jobs.count(job_id, ["a", "c"])  # b (half a batch) and the unit never came back
    age(stream, job_id, 60.0)
    # Anything that may still be on its way holds it back: a queued message, an unacknowledged
    # one of this job, an entry the writer has not counted yet.
    mine = json.dumps({"headers": {"argsrepr": f"('{job_id}', 'media', [...])"}, "body": "..."})
    stream.redis.lpush(queue_names()[2], mine)  # a message of the job, at a priority step
    assert in_flight(stream.redis, job_id, "media") == "1 of its tasks queued"
    assert check(jobs, job_id) == 0 and check(jobs, job_id) == 0
    stream.redis.delete(queue_names()[2])
    held = json.dumps([{"headers": {"argsrepr": f"('{job_id}', 'media', [...])"}}, "", "x"])
    stream.redis.hset("unacked", "tag", held)
    assert in_flight(stream.redis, job_id, "media") == "1 of its tasks held by workers"
    assert check(jobs, job_id) == 0 and check(jobs, job_id) == 0
    stream.redis.hset("unacked", "tag", held.replace(job_id, "another-job"))  # not this job's
    stream.redis.xadd(stream_key("media"), {"v": "1"})
    assert check(jobs, job_id) == 0 and check(jobs, job_id) == 0
    stream.redis.delete(stream_key("media"))
    assert in_flight(stream.redis, job_id, "media") is None

    assert check(jobs, job_id) == 0
    assert check(jobs, job_id) == 2
    messages = sent_again(stream)
    assert sorted(m[0][2][0]["id"] for m in messages) == ["b", "s-0.tar"]
    assert [len(m[0][2]) for m in messages if m[0][2][0]["id"] == "b"] == [1]  # b alone
    assert all(m[1]["run"] == kwargs["run"] for m in messages)
    # Another replica does not send them a second time while the first one's lock holds.
    assert check(jobs, job_id) == 0 and check(jobs, job_id) == 0
    stream.redis.delete(f"clipsearch:job:{job_id}:redelivering")
    stream.jobs.unit_read(job_id, "s-0.tar", 0)  # the unit is read: only b is left
    age(stream, job_id, 60.0)
    assert check(jobs, job_id) == 0 and check(jobs, job_id) == 1
    ((args, _),) = sent_again(stream)
    assert args[2] == [b]
    assert jobs.status(job_id)["redelivered"] == 3


def test_other_jobs_queued_tasks_do_not_hide_a_lost_one_unless_too_many_to_read(
    queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job whose task was lost while other jobs keep the queue busy is found without waiting
    for the queue to drain; a queue longer than the scan limit is taken as in flight."""
    jobs, stream, root = queue
    job_id = submit_photos(jobs, root)
    sent_again(stream)  # its plan task: lost
    other = json.dumps({"headers": {"argsrepr": "('another-job', 'media', [...])"}})
    for _ in range(3):
        stream.redis.lpush(INDEX_QUEUE, other)
    assert in_flight(stream.redis, job_id, "media") is None
    age(stream, job_id, 60.0)
    assert check(jobs, job_id) == 0 and check(jobs, job_id) == 1  # sent again meanwhile
    assert stream.redis.llen(INDEX_QUEUE) == 4
    assert in_flight(stream.redis, job_id, "media") == "1 of its tasks queued"
    monkeypatch.setattr(lost_tasks, "SCAN_QUEUED", 2)
    assert in_flight(stream.redis, job_id, "media") == "4 tasks queued"  # too many to read


def test_a_job_that_moves_or_ended_is_left_alone_and_its_plan_goes(queue: Queue) -> None:
    jobs, stream, root = queue
    job_id = submit_photos(jobs, root)
    sent_again(stream)
    stream.jobs.init_job(job_id, total=2)
    stream.jobs.record_batch(job_id, 0, [{"uri": "file:///x/a.png", "id": "a"}])
    stream.jobs.count(job_id, [])  # counted just now: not stalled
    assert check(jobs, job_id) == 0 and check(jobs, job_id) == 0
    stream.jobs.mark_cancelled(job_id)
    age(stream, job_id, 60.0)
    assert jobs.status(job_id)["state"] == "cancelled"
    jobs.settle()
    assert plan_messages(stream) == []  # nothing sent for a cancelled job
    other = submit_photos(jobs, root)
    sent_again(stream)
    stream.jobs.init_job(other, total=1)
    stream.jobs.record_batch(other, 0, [{"uri": "file:///x/a.png", "id": "a"}])
    stream.jobs.count(other, ["a"])
    assert jobs.status(other)["state"] == "completed"
    assert not stream.redis.exists(f"clipsearch:job:{other}:plan")  # the plan goes with it
