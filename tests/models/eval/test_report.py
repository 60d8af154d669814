"""The report: targets judged at thresholds, valid JSON, a markdown table with every target."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from models.eval.report import METRICS, TARGETS, check_targets, write_report


def fake_result(value: float = 0.5, held_out: float | None = 0.4, ref: str = "x@1") -> dict:
    keys = [k for k, _ in METRICS]
    held = {k: held_out for k in keys}
    return {
        "bundle": ref,
        "bundle_dir": "/b",
        "trained": True,
        "split": "test",
        "n": 10,
        "seed_offset": 0,
        "n_seen": 8,
        "n_held_out": 2 if held_out is not None else 0,
        "image_size": 32,
        "provider": "CPUExecutionProvider",
        "batch_size": 32,
        "wall_time_s": 1.5,
        "images_per_s": 100.0,
        "texts_per_s": 200.0,
        "negative_support": {"attribute": 10, "relation": 7, "count": 10},
        "description_query_fallbacks": 0,
        "metrics": {
            "all": dict.fromkeys(keys, value),
            "seen": dict.fromkeys(keys, value),
            "held_out": held,
        },
        "gap": {k: None if held_out is None else value - held_out for k in keys},
    }


def _by_id(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["id"]: t for t in check_targets(result)}


def test_targets_pass_at_their_threshold_and_fail_below() -> None:
    r = fake_result(0.5)
    r["metrics"]["all"].update(t2i_long_r1=0.60, t2i_long_r10=0.9499, count_accuracy=0.85)
    r["metrics"]["all"].update(attribute_accuracy=0.79, description_r1=0.95)
    r["gap"] = dict.fromkeys(r["gap"], 0.0) | {"attribute_accuracy": 0.10}
    got = _by_id(r)
    assert got["long_t2i_r1"]["passed"] is True
    assert got["long_t2i_r10"]["passed"] is False
    assert got["count_accuracy"]["passed"] is True
    assert got["attribute_binding"]["passed"] is False
    assert got["description_r1"]["passed"] is True
    assert got["held_out"]["passed"] is True
    assert got["held_out"]["value"] == pytest.approx(0.10)
    assert "attribute_accuracy" in got["held_out"]["detail"]


def test_held_out_gap_fails_above_the_threshold_and_is_na_without_held_out_scenes() -> None:
    assert _by_id(fake_result(0.9, held_out=0.7))["held_out"]["passed"] is False
    # A held-out set that does better than the seen one is no failure.
    assert _by_id(fake_result(0.5, held_out=0.9))["held_out"]["passed"] is True
    missing = _by_id(fake_result(0.9, held_out=None))["held_out"]
    assert missing["passed"] is None and missing["value"] is None


def test_write_report_writes_json_and_a_markdown_table_with_every_target(tmp_path: Path) -> None:
    result = fake_result(0.9, held_out=0.85, ref="main@2")
    baselines = {"init": fake_result(0.1, ref="init@0"), "no-hard-neg": fake_result(0.7)}
    json_path, md_path = write_report(result, tmp_path / "out", baselines=baselines)

    payload = json.loads(json_path.read_text(encoding="utf-8"))
    assert payload["bundle"] == "main@2"
    assert [t["id"] for t in payload["targets"]] == [t.id for t in TARGETS]
    assert set(payload["baselines"]) == {"init", "no-hard-neg"}
    assert payload["baselines"]["init"]["targets"][0]["passed"] is False

    md = md_path.read_text(encoding="utf-8")
    assert md_path.name == "EVAL.md"
    table = [line for line in md.splitlines() if line.startswith("|")]
    for target in TARGETS:
        [row] = [line for line in table if line.startswith(f"| {target.label} |")]
        assert f"{target.threshold:.2f}" in row
        assert "pass" in row or "fail" in row
    for _, label in METRICS:
        assert any(line.startswith(f"| {label} |") for line in table), label
    assert "baseline: init (`init@0`)" in md
    assert "baseline: no-hard-neg" in md
    header = next(line for line in table if line.startswith("| target |"))
    assert header.count("|") == 7  # target, threshold, value, result + two baselines


def test_missing_values_are_written_as_null_and_a_dash(tmp_path: Path) -> None:
    result = fake_result(0.9, held_out=None)
    json_path, md_path = write_report(result, tmp_path)
    payload = json.loads(json_path.read_text(encoding="utf-8"))
    assert payload["metrics"]["held_out"]["t2i_long_r1"] is None
    assert "n/a" in md_path.read_text(encoding="utf-8")
