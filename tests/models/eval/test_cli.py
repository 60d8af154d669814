"""eval_command: clear errors and exit codes before any long run; a report after a good one."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from models.eval.cli import EXIT_BUNDLE, EXIT_USAGE, UsageError, eval_command, parse_baselines


def _run(bundle: Path, out: Path | None, baselines: list[str], n: int = 20) -> tuple[int, str]:
    stream = io.StringIO()
    code = eval_command(bundle, n, out, baselines, stream=stream)
    return code, stream.getvalue()


def test_missing_bundle(tmp_path: Path) -> None:
    code, text = _run(tmp_path / "nope", tmp_path / "out", [])
    assert code == EXIT_BUNDLE
    assert "error: bundle" in text and "does not exist" in text
    assert not (tmp_path / "out").exists()


def test_folder_without_a_manifest(tmp_path: Path) -> None:
    code, text = _run(tmp_path, None, [])
    assert code == EXIT_BUNDLE
    assert "invalid" in text and "manifest.json" in text


def test_corrupt_bundle_file(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    broken = shutil.copytree(tiny_bundle_dir, tmp_path / "broken")
    (broken / "image.onnx").write_bytes(b"not a graph")
    code, text = _run(broken, tmp_path / "out", [])
    assert code == EXIT_BUNDLE
    assert "checksum mismatch" in text


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("init", "expected NAME=BUNDLE_DIR"),
        ("=some/dir", "expected NAME=BUNDLE_DIR"),
        ("init=", "expected NAME=BUNDLE_DIR"),
        ("bad name=dir", "NAME may use only"),
    ],
)
def test_malformed_baseline(tiny_bundle_dir: Path, tmp_path: Path, spec: str, message: str) -> None:
    code, text = _run(tiny_bundle_dir, tmp_path / "out", [spec])
    assert code == EXIT_USAGE
    assert message in text and "error:" in text


def test_parse_baselines() -> None:
    assert parse_baselines(["init=a/b", "no-hn=c"]) == {"init": Path("a/b"), "no-hn": Path("c")}
    with pytest.raises(UsageError, match="twice"):
        parse_baselines(["x=a", "x=b"])


def test_missing_baseline_bundle(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    code, text = _run(tiny_bundle_dir, tmp_path / "out", [f"init={tmp_path / 'gone'}"])
    assert code == EXIT_BUNDLE
    assert "baseline 'init'" in text and "does not exist" in text


def test_bad_n(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    code, text = _run(tiny_bundle_dir, tmp_path / "out", [], n=0)
    assert code == EXIT_USAGE and "--n" in text


def test_good_run_writes_the_report(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    code, text = _run(tiny_bundle_dir, tmp_path / "out", [f"self={tiny_bundle_dir}"])
    assert code == 0, text
    payload = json.loads((tmp_path / "out" / "eval.json").read_text(encoding="utf-8"))
    assert payload["n"] == 20 and set(payload["baselines"]) == {"self"}
    assert (tmp_path / "out" / "EVAL.md").is_file()
    assert "wrote" in text
