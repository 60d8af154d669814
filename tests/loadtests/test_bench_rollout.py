"""The rollout benchmark: one short real run, tiny → tiny-narrow on a real gateway."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.bench.rollout import run_rollout_bench


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_short_rollout_is_timed_and_promoted(
    tmp_path: Path, tiny_bundle_dir: Path, tiny_narrow_bundle_dir: Path
) -> None:
    r = run_rollout_bench(
        tiny_bundle_dir, tiny_narrow_bundle_dir, tmp_path, images=30, clients=1, baseline_s=1.0
    )
    assert r["ok"], r
    assert (r["from"], r["to"], r["points"], r["rebuilt"]) == (
        "tiny-test@0.1.0",
        "tiny-narrow@0.1.0",
        30,
        30,
    ), r
    assert r["failed_searches"] == 0 and r["searches_idle"] > 0, r
    assert r["model_after_promote"] == "tiny-narrow@0.1.0"
    assert r["current_after_promote"].startswith("media__tiny-narrow@0.1.0__"), r
    assert 0 < sum(r["phase_s"].values()) <= r["build_and_compare_s"], r
    assert r["search_idle_p50_ms"] > 0 and r["promote_s"] > 0, r
