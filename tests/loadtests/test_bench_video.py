"""The video benchmark runs and writes its report (figures are not asserted: no timed tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_video_writes_a_report(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "loadtests.bench.video", "--seconds", "2",
         "--fps", "10", "--repeats", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "video.json").read_text())
    assert report["x_realtime"] > 0 and report["target_x_realtime"] == 20.0
    assert report["modes"]["fixed"]["segments"] == 1
