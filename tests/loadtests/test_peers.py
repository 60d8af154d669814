"""The peer comparison's parts that run without infinity's venv: the ONNX Runtime ceiling script on
a real model file, the report's arithmetic and its refusal to run without the peers venv."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.loadtest import LocustRun
from loadtests.peers import compare

CEILING = Path(compare.__file__).with_name("ceiling.py")


def _ceiling(bundle: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    max_tokens = json.loads((bundle / "manifest.json").read_text())["text_tower"]["max_tokens"]
    return subprocess.run(
        [sys.executable, str(CEILING), str(bundle / "text.onnx"), str(bundle / "tokenizer.json"),
         str(compare.SENTENCES), "--seconds", "0.6", "--max-tokens", str(max_tokens), *extra],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("spin", [True, False])
def test_the_ceiling_runs_the_model_at_batch_32(tiny_bundle_dir: Path, spin: bool) -> None:
    done = _ceiling(tiny_bundle_dir, *([] if spin else ["--no-spin"]))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["batch"] == 32 and result["sentences"] == 256 and result["spinning"] is spin
    assert len(result["windows_items_per_s"]) == 3
    assert result["items_per_s"] == max(result["windows_items_per_s"]) > 0


def test_the_ceiling_names_an_input_it_cannot_fill(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(tiny_bundle_dir / "text.onnx"))
    model.graph.input.append(helper.make_tensor_value_info("pixel_mask", TensorProto.INT64, [1]))
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    onnx.save(model, str(bundle / "text.onnx"))
    for name in ("tokenizer.json", "manifest.json"):
        (bundle / name).write_bytes((tiny_bundle_dir / name).read_bytes())
    done = _ceiling(bundle)
    assert done.returncode != 0 and "pixel_mask" in done.stderr


def _run(tmp: Path, per_s: float, p50: float, p99: float) -> LocustRun:
    row = {"requests": per_s * 30, "failures": 0, "requests_per_s": per_s, "avg_ms": p50,
           "p50_ms": p50, "p99_ms": p99}  # fmt: skip
    return LocustRun(0, tmp, {compare.EMBED_ROW: row})


def test_the_summary_pairs_each_run_with_its_own_ceiling(tmp_path: Path) -> None:
    runs = [_run(tmp_path, 100, 80, 200), _run(tmp_path, 60, 120, 400), _run(tmp_path, 90, 90, 300)]
    got = compare._summary(runs, [125.0, 50.0, 300.0])
    assert got["embeddings_per_s"] == 90 and got["embeddings_per_s_range"] == [60, 100]
    assert got["p50_ms"] == 90 and got["p99_ms"] == 300 and got["p99_ms_range"] == [200, 400]
    assert got["ceiling_per_s"] == 125 and got["ceiling_per_s_range"] == [50, 300]
    # Per run: 0.8, 1.2, 0.3 -> their median, 0.8 (median / median would say 0.72).
    assert got["served_over_ceiling"] == pytest.approx(0.8)
    assert got["served_over_ceiling_range"] == pytest.approx([0.3, 1.2])


def test_it_refuses_to_run_without_the_peers_venv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compare, "PEERS_VENV", tmp_path / "no-venv")
    with pytest.raises(SystemExit, match=r"loadtests/peers/setup\.sh"):
        compare.main(["--out", str(tmp_path / "out")])
