"""Which bundle the service serves: configured, the shipped default, or the tiny fallback."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from service.cli import bootstrap
from service.core.config import Settings
from service.core.errors import ClipsearchError, ErrorType
from service.core.manifest import load_bundle


def test_the_shipped_default_is_served_when_nothing_is_configured(tmp_path: Path) -> None:
    path = bootstrap.resolve_bundle(Settings(data_dir=tmp_path))
    assert path == bootstrap.ZOO_DIR / "default"
    manifest = load_bundle(path).manifest  # checksums verified
    assert manifest.trained and manifest.name == "default"


def test_without_a_default_the_tiny_bundle_is_built_and_named_in_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(bootstrap, "ZOO_DIR", tmp_path / "empty-zoo")
    with caplog.at_level(logging.WARNING):
        path = bootstrap.resolve_bundle(Settings(data_dir=tmp_path / "data"))
    assert path == tmp_path / "data" / "bundles" / "tiny-test"
    assert load_bundle(path).manifest.ref == "tiny-test@0.1.0"
    assert "tiny test bundle" in caplog.text


def test_configured_bundles(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    assert bootstrap.resolve_bundle(Settings(bundle=str(tiny_bundle_dir))) == tiny_bundle_dir
    assert bootstrap.resolve_bundle(Settings(bundle="default")) == bootstrap.ZOO_DIR / "default"
    with pytest.raises(ClipsearchError) as err:
        bootstrap.resolve_bundle(Settings(bundle=str(tmp_path / "nope")))
    assert err.value.type is ErrorType.bundle_invalid
    assert "default" in err.value.detail["zoo"]
