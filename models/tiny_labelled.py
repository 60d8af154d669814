"""The tiny test bundle with what a photo bundle adds, for tests of the serving side: a
``visual`` output (image→image features) and named classes with broader terms (``labels.json``).

The image tower is the tiny one (``models.tiny``) plus two outputs of the same graph:
``visual_embeds``, the 4x4 colour grid itself (so near-identical images have near-identical
features), and the top two of seven colour classes by the distance of the image's
mean colour to each class's colour (``label_ids``, ``label_scores``). Not a model of anything:
the class an image gets is its dominant colour.

Build from the shell: ``python -m models.tiny_labelled OUT_DIR``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.tiny import FILES, GRID, IMAGE_SIZE, _model, _value_info, build_tiny_bundle
from service.core.bundle.labels import ClassLabel, Labels, write_labels
from service.core.bundle.manifest import (
    CLIP_MEAN,
    CLIP_STD,
    LabelsSpec,
    Manifest,
    hash_files,
    load_bundle,
    write_manifest,
)

logger = logging.getLogger(__name__)

VISUAL_DIM = 3 * GRID * GRID
TOP_K = 2
SHARPNESS = 2.0  # logits are -SHARPNESS x squared distance in normalised colour space
COLOURS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (220, 30, 30)),
    ("green", (30, 170, 40)),
    ("blue", (30, 40, 220)),
    ("yellow", (235, 215, 40)),
    ("white", (245, 245, 245)),
    ("black", (15, 15, 15)),
    ("grey", (128, 128, 128)),
)


def colour_labels() -> Labels:
    return Labels(
        source="models.tiny_labelled: dominant colour classes (a test fixture)",
        classes=tuple(
            ClassLabel(id=name, name=f"{name} scene", broader=("coloured scene", "scene"))
            for name, _ in COLOURS
        ),
    )


def _prototypes() -> np.ndarray:
    """[3, classes]: each class colour in the tower's normalised pixel space."""
    rgb = np.asarray([c for _, c in COLOURS], dtype=np.float32) / 255.0
    normed = (rgb - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)
    return normed.T.astype(np.float32)


def build_labelled_image_graph(tiny_image: onnx.ModelProto) -> onnx.ModelProto:
    """The tiny image graph, plus ``visual_embeds`` and the colour-class outputs."""
    graph = tiny_image.graph
    protos = _prototypes()
    inits = [
        *graph.initializer,
        numpy_helper.from_array(protos, "class_colours"),
        numpy_helper.from_array((protos**2).sum(axis=0).astype(np.float32), "class_sq_norms"),
        numpy_helper.from_array(np.array(2.0 * SHARPNESS, np.float32), "two_sharp"),
        numpy_helper.from_array(np.array(SHARPNESS, np.float32), "sharp"),
        numpy_helper.from_array(np.array([TOP_K], np.int64), "top_k"),
    ]
    nodes = [
        *graph.node,
        # The uncentred grid: a plain image still has features (its colour), never a zero vector.
        helper.make_node("Flatten", ["grid"], ["visual_embeds"], axis=1),
        # -s * |m - p|^2 = 2s m.p - s |p|^2 - s |m|^2; the last term is the same for every class.
        helper.make_node("MatMul", ["colour", "class_colours"], ["dots"]),
        helper.make_node("Mul", ["dots", "two_sharp"], ["scaled_dots"]),
        helper.make_node("Mul", ["class_sq_norms", "sharp"], ["scaled_norms"]),
        helper.make_node("Sub", ["scaled_dots", "scaled_norms"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        helper.make_node("TopK", ["probs", "top_k"], ["label_scores", "label_ids"], axis=1),
    ]
    outputs = [
        *graph.output,
        _value_info("visual_embeds", TensorProto.FLOAT, ["batch", VISUAL_DIM]),
        _value_info("label_ids", TensorProto.INT64, ["batch", TOP_K]),
        _value_info("label_scores", TensorProto.FLOAT, ["batch", TOP_K]),
    ]
    new = helper.make_graph(nodes, "tiny_labelled_image_tower", list(graph.input), outputs, inits)
    return _model(new, "tiny image tower + colour-grid features + dominant-colour classes")


def build_tiny_labelled_bundle(out_dir: Path, *, seed: int = 0) -> Path:
    """The tiny bundle in ``out_dir`` with the labelled image tower, labels.json and a manifest
    that names them."""
    out_dir = build_tiny_bundle(Path(out_dir), seed=seed)
    image = build_labelled_image_graph(onnx.load(str(out_dir / "image.onnx")))
    (out_dir / "image.onnx").write_bytes(image.SerializeToString(deterministic=True))
    write_labels(out_dir / "labels.json", colour_labels())
    base = load_bundle(out_dir, verify=False).manifest
    tower = base.image_tower.model_copy(
        update={
            "visual_output_name": "visual_embeds",
            "visual_dim": VISUAL_DIM,
            "labels": LabelsSpec(file="labels.json", top_k=TOP_K),
        }
    )
    manifest = Manifest.model_validate(
        {
            **base.model_dump(),
            "name": "tiny-labelled",
            "summary": base.summary + " Its image tower also returns visual features and its "
            "dominant colour as a class, like a photo bundle.",
            "image_tower": tower.model_dump(),
            "spaces": {**base.spaces.model_dump(), "visual": VISUAL_DIM},
            "files": hash_files(out_dir, [*FILES, "labels.json"]),
        }
    )
    write_manifest(out_dir, manifest)
    logger.info("built the tiny labelled bundle in %s (image %d px)", out_dir, IMAGE_SIZE)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.tiny_labelled")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    build_tiny_labelled_bundle(args.out_dir, seed=args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
