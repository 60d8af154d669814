"""The Celery job queue without a worker: submit-time checks, records, and the state logic."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.clients.jobs_celery import CeleryJobQueue, job_state
from service.clients.stream import PointStream
from service.core.config import BrokerSettings, Settings, SourcesSettings
from service.core.errors import ClipsearchError, ErrorType
from service.core.tasks import INDEX_QUEUE
from tests.redis_server import redis_server

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
        (None, "interrupted"),
    ],
)
def test_job_state(live: dict[str, Any] | None, state: str) -> None:
    status = job_state(RECORD, live)
    assert status["state"] == state
    assert "params" not in status
    if live is not None:
        assert (status["done"], status["failed"]) == (live["done"], live["failed"])


def test_a_record_that_never_reached_the_broker_keeps_its_state() -> None:
    status = job_state({**RECORD, "state": "failed", "error": "could not enqueue"}, None)
    assert (status["state"], status["error"]) == ("failed", "could not enqueue")


@pytest.fixture()
def queue(tmp_path: Path) -> Iterator[tuple[CeleryJobQueue, PointStream, Path]]:
    root = tmp_path / "src"
    (root / "photos").mkdir(parents=True)
    with redis_server(tmp_path / "redis") as url:
        settings = Settings(
            data_dir=tmp_path / "data",
            broker=BrokerSettings(url=url),
            sources=SourcesSettings(allowed_roots=[root]),
        )
        stream = PointStream(url, settings.broker)
        jobs = CeleryJobQueue(settings, PointStream(url, settings.broker))
        try:
            yield jobs, stream, root
        finally:
            jobs.close()
            stream.close()


def test_status_follows_redis_progress(queue: tuple[CeleryJobQueue, PointStream, Path]) -> None:
    jobs, stream, root = queue
    assert jobs.ready()
    job_id = jobs.submit("ingest", {"source": {"directory": str(root / "photos")}})
    assert (jobs._dir / f"{job_id}.json").is_file()
    assert stream.redis.llen(INDEX_QUEUE) == 1  # the plan task, waiting for a worker
    assert jobs.status(job_id)["state"] == "queued"
    stream.jobs.init_job(job_id, total=2)
    assert jobs.status(job_id)["state"] == "running"
    stream.jobs.count(job_id, ["a"], [{"item": "b", "reason": "corrupt"}])
    status = jobs.status(job_id)
    assert (status["state"], status["done"], status["failed"]) == ("completed", 1, 1)
    assert status["errors"] == [{"item": "b", "reason": "corrupt"}]
    stream.redis.flushall()  # Redis restarted without persistence
    assert jobs.status(job_id)["state"] == "interrupted"


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
    assert not list(jobs._dir.glob("*.json"))


def test_a_missing_directory_under_the_roots_is_invalid(
    queue: tuple[CeleryJobQueue, PointStream, Path],
) -> None:
    jobs, _, root = queue
    with pytest.raises(ClipsearchError) as info:
        jobs.submit("ingest", {"source": {"directory": str(root / "missing")}})
    assert info.value.type is ErrorType.invalid_input
