"""The ingest-under-search benchmark: one short real run on a real gateway (figures are not
asserted: no timed tests; only that every phase ran and was measured)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.bench.ingest_search import run_ingest_search_bench, table


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_short_run_measures_every_phase(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    r = run_ingest_search_bench(
        tiny_bundle_dir, tmp_path, images=40, clients=1, think_ms=20.0, idle_s=1.0, rounds=2
    )
    assert r["points"] == 40  # each ingest rewrote the same 40 items
    assert len(r["rounds_detail"]) == 2
    for one in r["rounds_detail"]:
        assert one["idle"]["n"] > 0 and one["idle"]["failed"] == 0, one
        assert one["during_ingest"]["failed"] == 0, one
        for run in (one["ingest_with_searchers"], one["ingest_alone_after"]):
            assert (run["state"], run["done"], run["failed"]) == ("completed", 40, 0), run
            assert run["items_per_s"] > 0
        # The search service and the text tower's interactive lane were seen in /metrics.
        stages = one["mean_stage_ms"]["idle"]
        assert any(k.startswith("search_seconds") for k in stages), stages
        assert any('stage="inference",tower="text"' in k for k in stages), stages
    assert r["p99_ratio"] > 0 and r["ingest_rate_ratio"] > 0
    assert "p99 during / idle" in table(r)
