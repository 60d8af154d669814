"""Export clipsearch's scenes variant (trained CNN + MiniLM text tower) as a model bundle.

Files: ``image.onnx`` (pixel_values -> image_embeds, dynamic batch), ``text.onnx`` (input_ids,
attention_mask, dynamic batch and sequence -> text_embeds, sentence_embeds), ``tokenizer.json``
(MiniLM's, without its fixed 128 padding/truncation: serving sets 256 and pad-to-longest) and
``manifest.json``. Weights are stored compactly (see :mod:`models.export.quantize`).

Two parity gates per tower, batches 1/8/32, on real scenes and queries through the serving
preprocessing and tokenizer, with the serving session options:

* fp32 gate: the graph vs the PyTorch forward with the very weights the files store;
* fidelity gate (reduced-precision cosine): the graph vs the uncompressed fp32 model.

The bundle is assembled in a temporary folder and moved into place only when both pass.
"""

from __future__ import annotations

import copy
import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, cast

import numpy as np
import onnx
import torch
from tokenizers import Tokenizer
from torch import nn

from models.data.scenes import generate_split
from models.export.parity import ParityReport, require_parity
from models.export.quantize import compact_minilm, round_fp16_, store_fp16
from models.train.minilm import (
    MAX_TOKENS,
    PAD_ID,
    SENTENCE_DIM,
    MiniLM,
    description_embedder_spec,
    text_tower_spec,
    tokenizer_path,
)
from models.train.towers import ClipModel, ImageEncoder, ImageTower, TextTower
from service.core.bundle.manifest import (
    CLIP_MEAN,
    CLIP_STD,
    Card,
    Manifest,
    Spaces,
    hash_files,
    write_manifest,
)
from service.core.bundle.manifest import ImageTower as ImageTowerSpec
from service.core.bundle.preprocess import image_to_tensor
from service.core.bundle.tokenize import TextTokenizer

logger = logging.getLogger(__name__)

FILES = ("image.onnx", "text.onnx", "tokenizer.json")
# 2.0.0: the conjunction channel (joint space 256 -> 312 dims); a collection indexed with 1.x
# must be reindexed, and the payload's `model` says which bundle made each point.
VERSION = "2.0.0"
PARITY_QUERIES = (
    "a red circle",
    "two blue squares and a yellow star",
    "a small green hexagon at the top left of the picture",
    "the number of objects is four",
    "a purple diamond to the left of an orange cross on a noisy grey background",
    "A picture of three objects on a black background. At the top there is a large striped "
    "cyan triangle. In the centre there is a small dotted pink square. At the bottom right "
    "there is a medium solid red circle.",
    "sunset",
)
M = TypeVar("M", bound=nn.Module)
Forward = Callable[[int], Mapping[str, np.ndarray]]


@dataclass
class ExportReport:
    parity: dict[str, ParityReport]
    sizes: dict[str, int]

    def to_dict(self) -> dict[str, object]:
        return {"parity": {k: v.to_dict() for k, v in self.parity.items()}, "sizes": self.sizes}


def _session(path: Path) -> object:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # as served
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _fold_batchnorm(features: nn.Sequential) -> nn.Sequential:
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused: list[nn.Module] = []
    for mod in features:
        if isinstance(mod, nn.Sequential):
            conv, bn, act = mod
            fused += [fuse_conv_bn_eval(cast(nn.Conv2d, conv), cast(nn.BatchNorm2d, bn)), act]
        elif isinstance(mod, nn.BatchNorm2d):
            fused[-1] = fuse_conv_bn_eval(cast(nn.Conv2d, fused[-1]), mod)
        else:
            fused.append(mod)
    return nn.Sequential(*fused)


def fuse_and_round(encoder: ImageEncoder) -> ImageEncoder:
    """Eval copy of the image encoder with BatchNorm folded into the convs, matrices in fp16."""
    model = copy.deepcopy(encoder).eval()
    model.low = _fold_batchnorm(model.low)
    model.high = _fold_batchnorm(model.high)
    round_fp16_(model)
    return model


def _save(program: object, path: Path) -> None:
    proto: onnx.ModelProto = program.model_proto  # type: ignore[attr-defined]
    store_fp16(proto)
    onnx.checker.check_model(proto)
    path.write_bytes(proto.SerializeToString())


def export_image(model: ImageTower, size: int, path: Path) -> None:
    from torch.export import Dim

    example = torch.zeros(2, 3, size, size)
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        input_names=["pixel_values"],
        output_names=["image_embeds"],
        dynamic_shapes={"pixel_values": {0: Dim("batch", min=1, max=4096)}},
        optimize=True,
        verbose=False,
    )
    _save(program, path)


def export_text(tower: TextTower, path: Path) -> None:
    from torch.export import Dim

    batch, seq = Dim("batch", min=1, max=4096), Dim("seq", min=1, max=MAX_TOKENS)
    ids = torch.tensor([[101, 1037, 2417, 4418, 102], [101, 2048, 102, 0, 0]], dtype=torch.int64)
    mask = (ids != 0).to(torch.int64)
    program = torch.onnx.export(
        tower,
        (ids, mask),
        dynamo=True,
        input_names=["input_ids", "attention_mask"],
        output_names=["text_embeds", "sentence_embeds"],
        dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
        optimize=True,
        verbose=False,
    )
    _save(program, path)


def write_tokenizer(path: Path) -> None:
    tok = Tokenizer.from_file(str(tokenizer_path()))
    tok.no_padding()  # the package's file pads and truncates to 128; serving sets both itself
    tok.no_truncation()
    tok.save(str(path), pretty=False)


def _text_forwards(
    tokenizer: TextTokenizer, towers: dict[str, TextTower], session: object
) -> dict[str, Forward]:
    def feeds(batch: int) -> tuple[np.ndarray, np.ndarray]:
        texts = [PARITY_QUERIES[i % len(PARITY_QUERIES)] for i in range(batch)]
        enc = tokenizer.encode(texts)
        return enc.input_ids, enc.attention_mask

    def torch_forward(tower: TextTower) -> Forward:
        @torch.inference_mode()
        def run(batch: int) -> dict[str, np.ndarray]:
            ids, mask = feeds(batch)
            joint, sentence = tower(torch.from_numpy(ids), torch.from_numpy(mask))
            return {"text_embeds": joint.numpy(), "sentence_embeds": sentence.numpy()}

        return run

    def onnx_forward(batch: int) -> dict[str, np.ndarray]:
        ids, mask = feeds(batch)
        joint, sentence = session.run(None, {"input_ids": ids, "attention_mask": mask})  # type: ignore[attr-defined]
        return {"text_embeds": joint, "sentence_embeds": sentence}

    out = {name: torch_forward(t) for name, t in towers.items()}
    out["onnx"] = onnx_forward
    return out


def _image_forwards(
    spec: ImageTowerSpec, models: dict[str, nn.Module], session: object
) -> dict[str, Forward]:
    scenes = generate_split("test", 32, offset=5000)
    pixels = np.stack([image_to_tensor(s.render(spec.image_size), spec) for s in scenes])

    def torch_forward(model: nn.Module) -> Forward:
        @torch.inference_mode()
        def run(batch: int) -> dict[str, np.ndarray]:
            return {"image_embeds": model(torch.from_numpy(pixels[:batch])).numpy()}

        return run

    def onnx_forward(batch: int) -> dict[str, np.ndarray]:
        [out] = session.run(None, {"pixel_values": pixels[:batch]})  # type: ignore[attr-defined]
        return {"image_embeds": out}

    out = {name: torch_forward(m) for name, m in models.items()}
    out["onnx"] = onnx_forward
    return out


# What the scenes bundle is for (the manifest's card: shown at start-up, by /health/ready,
# GET /v1/collections and the admin dashboard); a retrain writes it again.
SCENES_CARD = Card(
    domain=(
        "demo only: synthetic rendered scenes of coloured shapes (circles, squares, triangles...)"
        " and their captions; it does not understand photographs"
    ),
    intended_use=(
        "Trying clipsearch end to end on its demo scenes (`clipsearch demo`, `make run`). Not for"
        " real photographs: on photos it ranks the right image at about chance. For real media "
        "export an OpenCLIP checkpoint (`clipsearch models export`) and roll the collection onto "
        'it (POST /v1/admin/reindex {"bundle": ...}, then promote).'
    ),
    limitations=(
        "Trained from scratch on rendered shape scenes: its vocabulary is colours, shapes, counts"
        " and positions. A 56-dim colour x shape conjunction channel votes for toy-vocabulary "
        "pairs on any input, so real photographs get confident but meaningless scores."
    ),
)

# The ablation baseline (`models.train --no-conjunction`): the same recipe without the channel.
NO_CONJUNCTION_CARD = SCENES_CARD.model_copy(
    update={
        "limitations": (
            "Ablation baseline of the scenes recipe without its colour x shape conjunction "
            "channel; trained from scratch on rendered shape scenes, for the scenes EVAL.md only."
        )
    }
)


def build_manifest(
    root: Path,
    *,
    image_size: int,
    embed_dim: int,
    trained: bool,
    summary: str,
    version: str,
    card: Card | None = SCENES_CARD,
) -> Manifest:
    """Both towers end in :func:`models.train.towers.joint_embedding`: unit-length outputs."""
    return Manifest(
        name="scenes",
        version=version,
        summary=summary,
        trained=trained,
        image_tower=ImageTowerSpec(
            file="image.onnx",
            image_size=image_size,
            resize="shortest_edge_center_crop",
            interpolation="bicubic",
            mean=CLIP_MEAN,
            std=CLIP_STD,
            output_dim=embed_dim,
            normalized=True,
        ),
        text_tower=text_tower_spec(embed_dim),
        description_embedder=description_embedder_spec(),
        spaces=Spaces(image=embed_dim, caption=embed_dim, description=SENTENCE_DIM),
        files=hash_files(root, list(FILES)),
        card=card,
    )


def export_scenes_bundle(
    out_dir: Path,
    *,
    minilm: MiniLM,
    model: ClipModel,
    trained: bool,
    summary: str,
    version: str = VERSION,
) -> ExportReport:
    """Export, check parity, and only then replace ``out_dir`` (raises ParityError on failure).

    ``minilm`` is the original fp32 MiniLM; ``model`` the trained fp32 variant.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    scale = float(model.conj_scale.detach())
    image_size = model.cfg.image_size
    exact_text = TextTower(compact_minilm(minilm), round_fp16_copy(model.text), scale).eval()
    full_text = TextTower(minilm, model.text, scale).eval()
    exact_image = ImageTower(fuse_and_round(model.image), scale).eval()
    full_image = ImageTower(model.image, scale).eval()
    with tempfile.TemporaryDirectory(prefix="export-", dir=out_dir.parent) as tmp:
        root = Path(tmp)
        write_tokenizer(root / "tokenizer.json")
        export_text(exact_text, root / "text.onnx")
        export_image(exact_image, image_size, root / "image.onnx")
        manifest = build_manifest(
            root,
            image_size=image_size,
            embed_dim=model.cfg.joint_dim,
            trained=trained,
            summary=summary,
            version=version,
            # The shipped card describes the conjunction channel; the ablation without it
            # (`models.train --no-conjunction`) says what it is instead.
            card=SCENES_CARD if model.cfg.conjunction else NO_CONJUNCTION_CARD,
        )
        tokenizer = TextTokenizer(root / "tokenizer.json", max_tokens=MAX_TOKENS, pad_id=PAD_ID)
        text_fw = _text_forwards(
            tokenizer, {"exact": exact_text, "full": full_text}, _session(root / "text.onnx")
        )
        image_fw = _image_forwards(
            manifest.image_tower,
            {"exact": exact_image, "full": full_image},
            _session(root / "image.onnx"),
        )
        parity = {
            "text_fp32": require_parity(text_fw["exact"], text_fw["onnx"], precision="fp32"),
            "text_vs_uncompressed": require_parity(
                text_fw["full"], text_fw["onnx"], precision="int8"
            ),
            "image_fp32": require_parity(image_fw["exact"], image_fw["onnx"], precision="fp32"),
            "image_vs_uncompressed": require_parity(
                image_fw["full"], image_fw["onnx"], precision="fp16"
            ),
        }
        for name, report in parity.items():
            logger.info("%s: %s", name, report.summary())
        write_manifest(root, manifest)
        sizes = {p.name: p.stat().st_size for p in sorted(root.iterdir())}
        if out_dir.exists():
            shutil.rmtree(out_dir)
        shutil.copytree(root, out_dir)
    logger.info("wrote %s (%.1f MB)", out_dir, sum(sizes.values()) / 1e6)
    return ExportReport(parity=parity, sizes=sizes)


def round_fp16_copy(module: M) -> M:
    clone = copy.deepcopy(module)
    round_fp16_(clone)
    return clone
