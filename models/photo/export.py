"""Export the photo bundle's towers to ONNX and hold them to the parity gate.

``image.onnx``: pixel_values -> image_embeds, visual_embeds, label_ids, label_scores (dynamic
batch), exported with ``torch.onnx.export(..., dynamo=True)`` and converted to opset 17.
``text.onnx``: input_ids, attention_mask -> text_embeds, sentence_embeds, exported by the
scenes bundle's :func:`models.export.scenes.export_text` (opset 20, as the scenes bundle's).

Parity (:mod:`models.export.parity`, batches 1/8/32, fp32 max abs diff <= 1e-4): each graph
against the PyTorch module it was exported from, run through the serving session options; a
compacted text tower is also held to the reduced-precision gate against the fp32 MiniLM.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import cast

import numpy as np
import onnx
import torch
from onnx import version_converter

from models.export.parity import Forward, ParityReport, Precision, require_parity
from models.export.parity_inputs import parity_pixels, parity_texts
from models.export.quantize import store_fp16
from models.export.scenes import export_text
from models.photo.tower import PhotoImageTower, SentenceTower
from models.train.minilm import MAX_TOKENS
from models.train.towers import TextTower
from service.core.bundle.tokenize import TextTokenizer

OPSET = 17
# IR 8 is what opset 17 shipped with; the graphs use no type that needs a later IR.
IR_VERSION = 8
IMAGE_OUTPUTS = ("image_embeds", "visual_embeds", "label_ids", "label_scores")
TEXT_OUTPUTS = ("text_embeds", "sentence_embeds")


def to_opset17(model: onnx.ModelProto) -> onnx.ModelProto:
    """The dynamo exporter writes opset 18+; ONNX's converter takes it down to 17.

    The converter moves the reduce ops' axes back to attributes but leaves
    ``noop_with_empty_axes`` on them, which only ReduceSum knows at 17; its default (0) is the
    only value these graphs use, so dropping it changes nothing.
    """
    converted = version_converter.convert_version(model, OPSET)
    for node in converted.graph.node:
        if node.op_type.startswith("Reduce") and node.op_type != "ReduceSum":
            kept = [a for a in node.attribute if a.name != "noop_with_empty_axes"]
            if any(a.i != 0 for a in node.attribute if a.name == "noop_with_empty_axes"):
                raise ValueError(f"{node.name}: noop_with_empty_axes=1 has no opset-17 form")
            del node.attribute[:]
            node.attribute.extend(kept)
    converted.ir_version = IR_VERSION
    onnx.checker.check_model(converted, full_check=True)
    return converted


def export_image(tower: PhotoImageTower, image_size: int, path: Path) -> None:
    from torch.export import Dim

    program = torch.onnx.export(
        tower,
        (torch.zeros(2, 3, image_size, image_size),),
        dynamo=True,
        input_names=["pixel_values"],
        output_names=list(IMAGE_OUTPUTS),
        dynamic_shapes={"pixel_values": {0: Dim("batch", min=1, max=4096)}},
        optimize=True,
        verbose=False,
    )
    if program is None:  # pragma: no cover - dynamo always returns a program
        raise RuntimeError("torch.onnx.export returned no program")
    proto = strip_node_metadata(to_opset17(program.model_proto))
    store_fp16(proto)  # lossless: only initializers that are exactly fp16 (none in fp32 weights)
    path.write_bytes(proto.SerializeToString())


def strip_node_metadata(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop the exporter's per-node notes (source paths, line numbers, FX names): they change
    with every edit of the Python that was traced, and with them the bundle's bytes."""
    for node in model.graph.node:
        del node.metadata_props[:]
    return model


def export_sentence(tower: SentenceTower, path: Path) -> None:
    """As the scenes bundle's text tower (opset 20: its Gelu has no opset-17 form)."""
    # export_text only needs a module mapping (input_ids, attention_mask) to the two outputs.
    export_text(cast(TextTower, tower), path)
    path.write_bytes(strip_node_metadata(onnx.load(str(path))).SerializeToString())


def session(path: Path) -> object:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # as served
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(sess: object, feeds: Mapping[str, np.ndarray], names: tuple[str, ...]) -> dict:
    outputs = sess.run(list(names), dict(feeds))  # type: ignore[attr-defined]
    return dict(zip(names, outputs, strict=True))


def image_forwards(
    tower: PhotoImageTower, sess: object, image_size: int
) -> tuple[Forward, Forward]:
    """(PyTorch, ONNX) forwards on the shared deterministic parity pixels."""

    @torch.inference_mode()
    def reference(batch: int) -> dict[str, np.ndarray]:
        outs = tower(torch.from_numpy(parity_pixels(batch, image_size)))
        return {name: t.numpy() for name, t in zip(IMAGE_OUTPUTS, outs, strict=True)}

    def candidate(batch: int) -> dict[str, np.ndarray]:
        return _run(sess, {"pixel_values": parity_pixels(batch, image_size)}, IMAGE_OUTPUTS)

    return reference, candidate


def text_forwards(
    towers: Mapping[str, SentenceTower], sess: object, tokenizer: TextTokenizer
) -> dict[str, Forward]:
    """PyTorch forwards by name, and ``onnx``, on the shared parity captions."""

    def feeds(batch: int) -> tuple[np.ndarray, np.ndarray]:
        enc = tokenizer.encode(parity_texts(batch, MAX_TOKENS))
        return enc.input_ids, enc.attention_mask

    def reference(tower: SentenceTower) -> Forward:
        @torch.inference_mode()
        def run(batch: int) -> dict[str, np.ndarray]:
            ids, mask = feeds(batch)
            outs = tower(torch.from_numpy(ids), torch.from_numpy(mask))
            return {name: t.numpy() for name, t in zip(TEXT_OUTPUTS, outs, strict=True)}

        return run

    def candidate(batch: int) -> dict[str, np.ndarray]:
        ids, mask = feeds(batch)
        return _run(sess, {"input_ids": ids, "attention_mask": mask}, TEXT_OUTPUTS)

    out: dict[str, Forward] = {name: reference(t) for name, t in towers.items()}
    out["onnx"] = candidate
    return out


def check_parity(
    root: Path,
    image: PhotoImageTower,
    image_size: int,
    text: SentenceTower,
    full_text: SentenceTower | None,
    tokenizer: TextTokenizer,
) -> dict[str, ParityReport]:
    """Every gate the bundle must pass; raises ParityError on the first failure."""
    ref, got = image_forwards(image, session(root / "image.onnx"), image_size)
    reports = {"image_fp32": require_parity(ref, got, precision="fp32")}
    towers = {"exact": text} | ({"full": full_text} if full_text is not None else {})
    fw = text_forwards(towers, session(root / "text.onnx"), tokenizer)
    reports["text_fp32"] = require_parity(fw["exact"], fw["onnx"], precision="fp32")
    if full_text is not None:
        reduced: Precision = "int8"  # the int8 word table is the coarsest part
        reports["text_vs_uncompressed"] = require_parity(fw["full"], fw["onnx"], precision=reduced)
    return reports
