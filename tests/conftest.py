"""Shared fixtures: a tiny real ONNX bundle built by code (no weights from a hub)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# `serve` opens the gRPC search port (50052) by default; a gateway a test starts listens there
# only when the test asks for it, so two gateways (or a developer's own) never clash.
os.environ.setdefault("CLIPSEARCH_GRPC_PORT", "0")


@pytest.fixture(scope="session")
def tiny_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models.tiny import build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_labelled_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle with a photo bundle's extras: visual features and named classes."""
    from models.tiny_labelled import build_tiny_labelled_bundle

    return build_tiny_labelled_bundle(tmp_path_factory.mktemp("bundle") / "labelled", seed=0)


def build_tiny_narrow_bundle(out_dir: Path, *, seed: int = 1) -> Path:
    """A second tiny bundle, ``tiny-narrow@0.1.0``: the tiny bundle's towers projected to a
    32-dim joint space (the tiny bundle's is 64), with a card naming its domain. For tests that
    serve two bundles of different dimensions at once."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from models.tiny import FILES, build_tiny_bundle
    from service.core.bundle.manifest import Card, Manifest, hash_files, load_bundle, write_manifest

    dim = 32
    out_dir = build_tiny_bundle(Path(out_dir), seed=seed)
    rng = np.random.default_rng(seed)
    text = onnx.load(str(out_dir / "text.onnx"))
    image = onnx.load(str(out_dir / "image.onnx"))

    def project(model: onnx.ModelProto, name: str, scale: float) -> None:
        [old] = [t for t in model.graph.initializer if t.name == name]
        rows = old.dims[0]
        new = scale * rng.standard_normal((rows, dim)) / np.sqrt(max(rows, dim))
        old.CopyFrom(numpy_helper.from_array(new.astype(np.float32), name))
        model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = dim

    project(text, "text_projection", 1.0)
    project(image, "layout_projection", 1.0)
    project(image, "colour_projection", 0.5)
    for model in (text, image):
        onnx.checker.check_model(model, full_check=True)
    (out_dir / "text.onnx").write_bytes(text.SerializeToString(deterministic=True))
    (out_dir / "image.onnx").write_bytes(image.SerializeToString(deterministic=True))
    base = load_bundle(out_dir, verify=False).manifest.model_dump()
    manifest = Manifest.model_validate(
        {
            **base,
            "name": "tiny-narrow",
            "image_tower": {**base["image_tower"], "output_dim": dim},
            "text_tower": {**base["text_tower"], "output_dim": dim},
            "spaces": {**base["spaces"], "image": dim, "caption": dim},
            "files": hash_files(out_dir, list(FILES)),
            "card": Card(domain="test colour layouts (32-dim tiny bundle)").model_dump(),
        }
    )
    write_manifest(out_dir, manifest)
    return out_dir


@pytest.fixture(scope="session")
def tiny_narrow_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny-narrow@0.1.0``: a second real tiny bundle, 32-dim joint space (tiny-test: 64)."""
    return build_tiny_narrow_bundle(tmp_path_factory.mktemp("bundle") / "narrow")
