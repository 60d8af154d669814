"""The bundle benchmark runs and writes its report (figures are not asserted: no timed tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_bundle_writes_a_report(
    tmp_path: Path, tiny_bundle_dir: Path, tiny_labelled_bundle_dir: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "loadtests.bench.bundle", str(tiny_labelled_bundle_dir),
         str(tiny_bundle_dir), "--seconds", "0.05", "--threads", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "bundle.json").read_text())
    refs = [b["bundle"] for b in report["bundles"]]
    assert refs == ["tiny-labelled@0.1.0", "tiny-test@0.1.0"]
    for bundle in report["bundles"]:
        assert bundle["provider"] == "CPUExecutionProvider"
        for key in ("image_core_per_s", "image_e2e_per_s", "text_per_s"):
            assert bundle[key] > 0
            assert bundle[key.replace("_per_s", "_vs_target")] == bundle[key] / 300.0
    first, second = report["bundles"]
    assert report["image_e2e_ratio"] == first["image_e2e_per_s"] / second["image_e2e_per_s"]
    assert (
        "short text queries" in result.stdout and "tiny-labelled@0.1.0 / tiny-test" in result.stdout
    )
