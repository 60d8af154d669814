"""The ingestion benchmark: one short real run on the tiny bundle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clipsearch.cli.main import app


@pytest.mark.slow
def test_a_short_real_run_ingests_every_image_and_writes_the_report(
    tiny_bundle_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bench"
    result = CliRunner().invoke(
        app,
        ["bench", "ingest", "--bundle", str(tiny_bundle_dir), "--images", "40", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "ingest.json").read_text())
    assert report["images"] == 40
    ref, got = report["reference"], report["ingest"]
    assert ref["decode_and_infer_items_per_s"] > 0 and ref["ort_only_items_per_s"] > 0
    assert got["state"] == "completed"
    assert got["done"] == 40 and got["failed"] == 0 and got["errors"] == []
    assert got["points"] == 40 and report["points_ok"]
    assert got["items_per_s"] > 0
    assert report["ratio_to_decode_and_infer"] == pytest.approx(
        got["items_per_s"] / ref["decode_and_infer_items_per_s"]
    )
    assert report["ratio_to_ort_only"] == pytest.approx(
        got["items_per_s"] / ref["ort_only_items_per_s"]
    )
    assert report["meets_target"] == (report["ratio_to_decode_and_infer"] >= 0.8)
    # The reference is the mean of one pass before the job and one after it.
    before, after = report["reference_before"], report["reference_after"]
    key = "decode_and_infer_items_per_s"
    assert ref[key] == pytest.approx((before[key] + after[key]) / 2)
    assert report["reference_drift"] == pytest.approx(after[key] / before[key])
    assert "reference drift" in result.output
    assert "ingest ratio" in result.output
