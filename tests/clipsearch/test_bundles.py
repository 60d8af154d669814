"""Which bundle a process serves: configured, the shipped default, or the tiny test bundle that
``make run`` builds offline. Serving never builds one."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clipsearch import bundles
from clipsearch.cli.main import app
from service.core.bundle.manifest import load_bundle
from service.core.config import Settings
from service.core.errors import ClipsearchError, ErrorType


def test_the_shipped_default_is_served_when_nothing_is_configured(tmp_path: Path) -> None:
    path = bundles.resolve_bundle(Settings(data_dir=tmp_path))
    assert path == bundles.ZOO_DIR / "photo"
    manifest = load_bundle(path).manifest  # checksums verified
    assert manifest.trained and manifest.name == "photo"
    assert manifest.image_tower.labels is not None and manifest.spaces.visual


def test_without_a_default_nothing_is_built_and_the_error_says_how(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bundles, "ZOO_DIR", tmp_path / "empty-zoo")
    settings = Settings(data_dir=tmp_path / "data")
    with pytest.raises(ClipsearchError) as err:
        bundles.resolve_bundle(settings)
    assert err.value.type is ErrorType.bundle_invalid
    assert "CLIPSEARCH_BUNDLE" in err.value.message
    assert f"clipsearch models tiny {bundles.tiny_bundle_dir(settings)}" in err.value.message
    assert not (tmp_path / "data").exists()  # the serve path wrote nothing


def test_without_a_default_the_tiny_bundle_built_offline_is_served_and_named_in_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(bundles, "ZOO_DIR", tmp_path / "empty-zoo")
    settings = Settings(data_dir=tmp_path / "data")
    target = bundles.tiny_bundle_dir(settings)
    built = CliRunner().invoke(app, ["models", "tiny", str(target)])  # what `make run` runs
    assert built.exit_code == 0, built.output
    with caplog.at_level(logging.WARNING):
        path = bundles.resolve_bundle(settings)
    assert path == tmp_path / "data" / "bundles" / "tiny-test"
    assert load_bundle(path).manifest.ref == "tiny-test@0.1.0"
    assert "tiny test bundle" in caplog.text
    # ... and by name, as `--bundle tiny-test`.
    named = settings.model_copy(update={"bundle": "tiny-test"})
    assert bundles.resolve_bundle(named) == path


def test_configured_bundles(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    assert bundles.resolve_bundle(Settings(bundle=str(tiny_bundle_dir))) == tiny_bundle_dir
    assert bundles.resolve_bundle(Settings(bundle="scenes")) == bundles.ZOO_DIR / "scenes"
    assert load_bundle(bundles.ZOO_DIR / "scenes").manifest.ref == "scenes@2.0.0"
    for missing in (str(tmp_path / "nope"), "no-such-bundle", "tiny-test"):
        with pytest.raises(ClipsearchError) as err:
            bundles.resolve_bundle(Settings(bundle=missing, data_dir=tmp_path / "data"))
        assert err.value.type is ErrorType.bundle_invalid
        assert "CLIPSEARCH_BUNDLE" in err.value.message
        assert {"photo", "scenes"} <= set(err.value.detail["zoo"])
