"""Job records of two gateway replicas (each its own data dir) on one real Redis: a job
submitted on one answers the same on the other, lists there, and is cancelled from there
(``indexer.jobs.records.MirroredRecords``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from indexer.distributed.stream import PointStream
from indexer.jobs.celery_queue import CeleryJobQueue
from indexer.jobs.records import MirroredRecords
from service.core.config import BrokerSettings, Settings, SourcesSettings
from service.core.errors import ClipsearchError, ErrorType
from tests.redis_server import redis_server


@pytest.fixture()
def replicas(tmp_path: Path) -> Iterator[tuple[CeleryJobQueue, CeleryJobQueue, PointStream, Path]]:
    root = tmp_path / "src"
    (root / "photos").mkdir(parents=True)
    with redis_server(tmp_path / "redis") as url:

        def queue(name: str) -> CeleryJobQueue:
            settings = Settings(
                data_dir=tmp_path / name,
                broker=BrokerSettings(url=url),
                sources=SourcesSettings(allowed_roots=[root]),
            )
            return CeleryJobQueue(settings, PointStream(url, settings.broker))

        a, b = queue("a"), queue("b")
        stream = PointStream(url, BrokerSettings(url=url))
        try:
            yield a, b, stream, root
        finally:
            a.close()
            b.close()
            stream.close()


def _fixed(status: dict[str, Any]) -> dict[str, Any]:
    """A status without what the clock makes (rate and ETA are computed when asked)."""
    return {k: v for k, v in status.items() if k not in ("rate_per_s", "eta_s")}


def test_a_job_answers_alike_on_either_replica(
    replicas: tuple[CeleryJobQueue, CeleryJobQueue, PointStream, Path],
) -> None:
    a, b, stream, root = replicas
    job_id = a.submit("ingest", {"source": {"directory": str(root / "photos")}})
    assert not (b._files.path(job_id)).exists()  # b's own disk never saw it
    assert b.status(job_id) == a.status(job_id) and b.status(job_id)["state"] == "queued"
    stream.jobs.init_job(job_id, total=4)
    stream.jobs.count(job_id, ["x"])
    assert _fixed(b.status(job_id)) == _fixed(a.status(job_id))
    assert (b.status(job_id)["state"], b.status(job_id)["done"]) == ("running", 1)
    assert [j["id"] for j in b.list_jobs(limit=10, offset=0)[0]] == [job_id]
    cancelled = b.cancel(job_id)
    assert cancelled["state"] == "cancelled"
    assert a.status(job_id)["state"] == "cancelled"
    with pytest.raises(ClipsearchError) as again:
        a.cancel(job_id)  # already cancelled, whichever replica was asked
    assert again.value.type is ErrorType.conflict
    with pytest.raises(ClipsearchError) as unknown:
        b.status("0" * 32)
    assert unknown.value.type is ErrorType.not_found


def test_the_record_updated_last_wins_and_redis_away_leaves_the_files(
    tmp_path: Path,
) -> None:
    with redis_server(tmp_path / "redis") as url:
        stream = PointStream(url, BrokerSettings(url=url))
        try:
            mine = MirroredRecords(tmp_path / "a", "job", stream.redis, "k")
            theirs = MirroredRecords(tmp_path / "b", "job", stream.redis, "k")
            mine.write({"id": "j", "state": "queued", "updated_at": "2026-01-01T00:00:01"})
            theirs.write({"id": "j", "state": "cancelled", "updated_at": "2026-01-01T00:00:02"})
            assert mine.read("j")["state"] == "cancelled"  # newer in Redis than on mine's disk
            theirs.remove("j")
            assert mine.read("j")["state"] == "queued"  # its own file is left
        finally:
            stream.close()
    # Redis gone: what this replica wrote still answers; anything else is a 503, not a 404.
    assert mine.read("j")["state"] == "queued"
    assert [r["id"] for r in mine.load_all()] == ["j"]
    with pytest.raises(ClipsearchError) as away:
        mine.read("other")
    assert away.value.type is ErrorType.unavailable
