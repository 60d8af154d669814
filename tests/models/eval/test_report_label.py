"""``--label``: the evaluated bundle is named for what it is in EVAL.md, beside its baselines
(the shipped scenes bundle: "with the conjunction channel", next to the no-conjunction ablation)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from models.eval.cli import EXIT_USAGE, eval_command, main
from models.eval.report import to_markdown
from tests.models.eval.test_report import fake_result

LABEL = (
    "scenes (with the conjunction channel, which encodes the eval's own colour x shape vocabulary)"
)


def test_the_label_names_the_bundle_line_and_its_columns() -> None:
    baselines = {"no-conjunction": fake_result(0.4, ref="scenes@2.0.0")}
    md = to_markdown(fake_result(0.5, ref="scenes@2.0.0"), baselines, label=LABEL)
    lines = md.splitlines()
    assert any(line.startswith("- bundle: `scenes@2.0.0`") and LABEL in line for line in lines)
    headers = [
        line for line in lines if line.startswith("| target |") or line.startswith("| metric")
    ]
    assert len(headers) == 2
    assert f"| value: {LABEL} |" in headers[0] and f"| all: {LABEL} |" in headers[1]
    assert all("baseline: no-conjunction (`scenes@2.0.0`)" in h for h in headers)
    # Without a label the report reads as before.
    plain = to_markdown(fake_result(0.5), baselines)
    assert LABEL not in plain and "| target | threshold | value | result |" in plain


def test_a_labelled_run_writes_the_label_into_both_files(
    tiny_bundle_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code = main([str(tiny_bundle_dir), "--n", "20", "--out", str(out), "--label", LABEL])
    assert code == 0
    assert json.loads((out / "eval.json").read_text(encoding="utf-8"))["label"] == LABEL
    assert f"value: {LABEL}" in (out / "EVAL.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("label", ["", "  ", "a | b", "two\nlines"])
def test_a_label_that_cannot_be_a_table_cell_is_refused(
    tiny_bundle_dir: Path, tmp_path: Path, label: str
) -> None:
    stream = io.StringIO()
    code = eval_command(tiny_bundle_dir, 20, tmp_path / "out", [], label=label, stream=stream)
    assert code == EXIT_USAGE and "--label" in stream.getvalue()
    assert not (tmp_path / "out").exists()  # nothing evaluated, nothing written
