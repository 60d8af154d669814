"""The HTTP fault benchmark (issue 19's first acceptance bullet), one short real run on the tiny
bundle: a gateway, two encoder workers, two Celery indexers and Redis, one worker frozen for half
of 12 s. The strict figures belong to the 40-s run; this checks what no load can excuse."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.bench.faults_http import run_http_freeze, table
from tests.redis_server import redis_binary

pytestmark = [pytest.mark.slow, pytest.mark.faults]


@pytest.mark.timeout(400)
def test_a_short_run_through_the_gateway_loses_no_search(
    tmp_path: Path, tiny_bundle_dir: Path
) -> None:
    redis_binary()  # skips without redis-server
    r = run_http_freeze(tiny_bundle_dir, tmp_path, seconds=12.0, clients=2, images=40)
    assert r["failed_searches"] == 0 and r["searches_during_fault"] > 0, r["errors"]
    assert r["ready_statuses"] == [200] and r["live_statuses"] == [200], r
    assert r["removed_as"] == "ejected" and r["seconds_to_eject"] is not None, r
    assert r["seconds_to_readmit"] is not None and r["seconds_to_readmit"] <= 10, r
    assert r["ingest_items_per_s_two_workers"] > 0 and r["ingest_items_per_s_during_fault"] > 0
    assert all(j["state"] == "completed" for j in r["ingest_jobs_finished"]), r
    assert "failed searches" in table(r)
