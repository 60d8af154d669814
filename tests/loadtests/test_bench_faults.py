"""The faults benchmark: the command is wired, and one short real run of its scenarios on the tiny
bundle (real Redis, workers and gateway; the e2e tests' small steps; a 15-s worker freeze)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from clipsearch.cli.main import app
from loadtests.bench.faults import run_faults_bench
from tests.e2e.test_faults import SMALL_STEPS
from tests.redis_server import redis_binary


def test_the_command_is_wired_with_its_options() -> None:
    result = CliRunner().invoke(app, ["bench", "faults", "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--bundle", "--images", "--out"):
        assert option in result.output


@pytest.mark.slow
@pytest.mark.timeout(500)
def test_a_short_run_survives_every_fault_with_every_point_once(tiny_bundle_dir: Path) -> None:
    redis_binary()  # skips without redis-server
    report = run_faults_bench(tiny_bundle_dir, images=60, env=SMALL_STEPS, freeze_seconds=15)
    scenarios = report["scenarios"]
    assert set(scenarios) == {"worker_kill", "gateway_kill", "redis_restart", "worker_freeze"}
    frozen = scenarios.pop("worker_freeze")
    assert frozen["ok"] and frozen["fault"] == "SIGSTOP" and frozen["failed"] == 0, frozen
    assert frozen["ejections"] >= 1 and frozen["seconds_to_readmit"] <= 10, frozen
    for name, r in scenarios.items():
        assert r["ok"], (name, {k: v for k, v in r.items() if k != "logs"}, r.get("logs"))
        assert (r["done"], r["failed"], r["total"], r["points"]) == (60, 0, 60, 60), name
        assert 6 <= r["done_at_kill"] < 60 and r["seconds"] > 0, name
    assert scenarios["worker_kill"]["tasks_held_at_kill"] >= 0
    lost = scenarios["redis_restart"]
    assert not lost["completed_before_retry"] and lost["state_after_loss"] == "interrupted"
    assert 0 < lost["points_before_resume"] == lost["skipped"] < 60
    assert lost["created_at_unchanged"] and lost["attempt"] == 2
    assert report["ok"] and report["images"] == 60 and report["settings"] == SMALL_STEPS
