"""``python -m loadtests.bench.fusion`` runs and reports both timings (the figures themselves
are the bench's, not asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_fusion_bench_writes_its_report(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "loadtests.bench.fusion", "--rounds", "5", "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads((tmp_path / "fusion.json").read_text())
    assert report["candidates"] == 150
    assert report["explain_ms"] > 0 and report["no_explain_ms"] > 0
    assert "ms with explain" in done.stdout
