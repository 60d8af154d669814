"""eval-photos: clear errors and exit codes before any long run, through the real command."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clipsearch.cli.main import app
from clipsearch.cli.models_cmd import _photo_gateway
from models.eval.cli import EXIT_BUNDLE, EXIT_USAGE
from models.eval.photos.api import Api
from models.eval.photos.catalog import OPENCV
from models.eval.photos.cli import eval_photos_command
from models.eval.photos.corpus import ALL_SOURCES


def _run(
    bundle: Path, baselines: list[str], cache: Path, sources: tuple[str, ...] = ALL_SOURCES
) -> tuple[int, str]:
    stream = io.StringIO()
    code = eval_photos_command(
        bundle, baselines, None, cache, gateway=_photo_gateway, sources=sources, stream=stream
    )
    return code, stream.getvalue()


def test_malformed_baseline(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    code, text = _run(tiny_bundle_dir, ["scenes"], tmp_path)
    assert code == EXIT_USAGE
    assert "expected NAME=BUNDLE_DIR" in text


def test_missing_baseline_bundle(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    code, text = _run(tiny_bundle_dir, [f"top1={tmp_path / 'nope'}"], tmp_path)
    assert code == EXIT_BUNDLE
    assert "baseline 'top1'" in text and "does not exist" in text


def test_unavailable_corpus_is_a_message_not_a_traceback(
    tiny_bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    code, text = _run(tiny_bundle_dir, [], tmp_path / "cache", sources=(OPENCV,))
    assert code == EXIT_BUNDLE
    assert "error: the photo corpus is unavailable" in text and "apt-get" in text
    assert "Traceback" not in text


def test_the_command_is_wired(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["models", "eval-photos", str(tmp_path / "missing")])
    assert result.exit_code == EXIT_BUNDLE
    assert "does not exist" in result.output


def test_the_gateway_is_embedded_whatever_the_environment_says(
    tiny_bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens on these: a gateway that used them would never turn ready.
    monkeypatch.setenv("CLIPSEARCH_QDRANT__URL", "http://127.0.0.1:9")
    monkeypatch.setenv("CLIPSEARCH_BROKER__URL", "redis://127.0.0.1:9/0")
    monkeypatch.setenv("CLIPSEARCH_AUTH__API_KEYS", "secret:search+ingest")
    with _photo_gateway(tiny_bundle_dir, tmp_path / "gw") as client:
        ready = Api(client).wait_ready(timeout_s=120)
        assert ready["model"].startswith("tiny")
        assert client.post("/v1/search", json={"text": "a cat"}).status_code == 200
