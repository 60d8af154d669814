"""``python -m models.photo`` refuses bad settings as usage errors, before any model loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.photo.__main__ import main


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--top-k", "0"], "--top-k must be 1..1000"),
        (["--label-k", "1001"], "--label-k must be 1..1000"),
        (["--temperature", "-1"], "--temperature must be above 0"),
        (["--colour-weight", "-0.1"], "--colour-weight must be 0 or more"),
        (["--view-gate", "1"], "--view-gate must be in [0, 1)"),
        (["--wordnet", "/no/such/data.noun"], "is not a file (apt-get install wordnet-base)"),
        (["--variant", "lite9"], "invalid choice: 'lite9'"),
        (["--views", "6", "--crop-input", "224"], "--crop-input must be larger than"),
        (["--views", "6", "--crop-input", "500"], "--crop-input too large"),
        (["--views", "6", "--rule", "whole"], "invalid choice: 'whole'"),
    ],
)
def test_bad_settings_are_usage_errors_and_write_nothing(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bundle"
    with pytest.raises(SystemExit) as exit_:
        main(["--out", str(out), *args])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
