"""Shared fixtures: a tiny real ONNX bundle built by code (no weights from a hub)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models.tiny import build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_labelled_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle with a photo bundle's extras: visual features and named classes."""
    from models.tiny_labelled import build_tiny_labelled_bundle

    return build_tiny_labelled_bundle(tmp_path_factory.mktemp("bundle") / "labelled", seed=0)
