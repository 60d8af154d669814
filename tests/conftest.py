"""Shared fixtures: a tiny real ONNX bundle built by code (no weights from a hub)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# `serve` opens the gRPC search port (50052) by default; a gateway a test starts listens there
# only when the test asks for it, so two gateways (or a developer's own) never clash.
os.environ.setdefault("CLIPSEARCH_GRPC_PORT", "0")
# A service started inside the test process would freeze the whole test session's objects
# (service.core.collector); the tests that start real processes ask for it where they check it.
os.environ.setdefault("CLIPSEARCH_STARTUP__GC_FREEZE", "false")


@pytest.fixture(scope="session")
def tiny_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models.tiny import build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_labelled_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle with a photo bundle's extras: visual features and named classes."""
    from models.tiny_labelled import build_tiny_labelled_bundle

    return build_tiny_labelled_bundle(tmp_path_factory.mktemp("bundle") / "labelled", seed=0)


@pytest.fixture(scope="session")
def tiny_narrow_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny-narrow@0.1.0``: a second real tiny bundle, 32-dim joint space (tiny-test: 64)."""
    from models.tiny import build_tiny_narrow_bundle

    return build_tiny_narrow_bundle(tmp_path_factory.mktemp("bundle") / "narrow")
