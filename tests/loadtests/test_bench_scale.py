"""``clipsearch bench scale`` at a tiny size: the report's figures come from real searches on
qdrant-edge (an index built out of process and swapped in) and on the server adapter."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from clipsearch.cli.main import app
from loadtests.bench.scale import run_scale_bench


def test_the_scale_report_grows_one_collection_and_measures_each_size(tmp_path: Path) -> None:
    lines: list[str] = []
    report = run_scale_bench(
        [1500, 4000],
        queries=20,
        server_max=1500,
        data_dir=tmp_path,
        dim=32,
        idle_s=1.0,
        swap_max_wait_s=0.5,
        log=lines.append,
    )
    sizes = [row["points"] for row in report["embedded"]]
    assert sizes == [1500, 4000]
    for row in report["embedded"]:
        # exact search finds exactly numpy's top 10: the generator regenerates what was written
        assert row["brute_force_recall_at_10"] == 1.0
        assert row["brute_force"]["n"] == 20 and row["indexed"]["n"] == 20
        build = row["build"]
        assert build["swapped"] and build["search_errors"] == 0
        assert build["searches"]["n"] > 0  # searched while the build ran
        assert build["state"]["indexed_points"] == row["points"]
        assert build["phases_s"]["load_s"] >= 0
        assert row["idle_under_load"]["searches"]["n"] > 0  # the baseline the build compares to
        slow = build["slow_searches_by_phase"]
        assert sum(p["n"] for p in slow.values()) == build["searches_over_50ms"]
    assert report["embedded"][1]["build"]["state"]["shard"] == "shard.2"
    (server,) = report["server_local_mode"]
    assert server["points"] == 1500 and server["recall_at_10"] == 1.0
    assert report["targets"]["search_p50_ms_at_1m_le_3"] is None  # 1M not measured
    assert not list(tmp_path.iterdir())  # the data dir is removed
    assert any("brute force" in line for line in lines)


def test_the_cli_refuses_a_size_below_its_minimum() -> None:
    result = CliRunner().invoke(app, ["bench", "scale", "--max-points", "10"])
    assert result.exit_code == 2
    assert "max-points" in result.output


def test_the_cli_refuses_sizes_it_cannot_read() -> None:
    for bad in ("ten", "100"):
        result = CliRunner().invoke(app, ["bench", "scale", "--sizes", bad])
        assert result.exit_code == 2, result.output
        assert "sizes" in result.output or "at least 1000" in result.output
