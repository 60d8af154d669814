"""OpenCLIP checkpoints → clipsearch bundles; parity is checked before anything is written.

``export_openclip`` builds the model with open_clip (a pretrained tag, a local checkpoint, or
random weights for tests), exports both towers with the dynamo exporter (see
:mod:`models.export.openclip_onnx`), writes the CLIP tokenizer (see
:mod:`models.export.clip_tokenizer`), and runs the shared parity gate for batches 1, 8 and 32:
the reference is the PyTorch forward exactly as open_clip runs it (texts padded to the context
length, L2-normalised outputs); the candidate is ONNX Runtime on the exported files, fed the way
the encoder engine feeds them (the bundle's tokenizer, padded to each batch's longest text). A
bundle that fails is never written: everything goes to a staging folder beside ``out_dir`` that is
renamed into place only at the end, and removed on any failure.

A CLIP bundle has no separate sentence embedder: the text graph exposes its joint-space output a
second time (``sentence_embeds``, an Identity), so description search runs on CLIP text features.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import onnxruntime as ort
import torch

from models.export.clip_tokenizer import PAD_ID, write_clip_tokenizer
from models.export.openclip_onnx import (
    UnsupportedModel,
    dynamic_int8,
    export_image_tower,
    export_text_tower,
    fp16_weights,
    int8_weights,
    save_onnx,
)
from models.export.parity import ParityReport, Precision, require_parity
from models.export.parity_inputs import parity_pixels, parity_texts
from service.core.bundle.manifest import (
    DescriptionEmbedder,
    ImageTower,
    Manifest,
    Spaces,
    TextTower,
    hash_files,
    load_bundle,
    write_manifest,
)
from service.core.bundle.tokenize import TextTokenizer

logger = logging.getLogger(__name__)

IMAGE_FILE, TEXT_FILE, TOKENIZER_FILE, PARITY_FILE = (
    "image.onnx",
    "text.onnx",
    "tokenizer.json",
    "parity.json",
)
SENTENCE_OUTPUT = "sentence_embeds"
BUNDLE_VERSION = "1.0.0"
NAME_PATTERN = r"[a-z0-9][a-z0-9._-]*"  # the manifest's rule for names
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8")
_RESIZE = {"shortest": "shortest_edge_center_crop", "squash": "squash"}
Int8Method = Literal["weight_only", "dynamic"]


class UnknownArch(ValueError):
    """``arch`` is not an open_clip architecture."""


def resolve_arch(arch: str) -> str:
    """``arch`` if open_clip knows it (or it names a ``local-dir:``/``hf-hub:`` source)."""
    import open_clip

    if arch.startswith(("local-dir:", "hf-hub:")):
        return arch
    known = open_clip.list_models()
    if arch in known:
        return arch
    close = difflib.get_close_matches(arch, known, n=5, cutoff=0.5) or known[:5]
    raise UnknownArch(
        f"unknown open_clip architecture {arch!r}; did you mean one of: {', '.join(close)}? "
        f"({len(known)} known: python -c 'import open_clip; print(open_clip.list_models())')"
    )


def _check_pretrained(arch: str, pretrained: str | None) -> None:
    import open_clip

    if pretrained is None or Path(pretrained).is_file() or arch.startswith("local-dir:"):
        return
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if pretrained in tags:
        return
    if "/" in pretrained or "\\" in pretrained or Path(pretrained).suffix:
        raise FileNotFoundError(f"checkpoint file not found: {pretrained}")
    raise ValueError(
        f"{pretrained!r} is neither a pretrained tag of {arch} nor a checkpoint file; "
        f"tags: {', '.join(tags) or '(none)'}"
    )


def load_openclip(arch: str, pretrained: str | None, context_length: int | None) -> Any:
    """The open_clip model in fp32 eval mode (random weights, seeded, when ``pretrained`` is
    None), after checking that its tokenizer is OpenCLIP's BPE (the one this exporter ships)."""
    import open_clip

    arch = resolve_arch(arch)
    _check_pretrained(arch, pretrained)
    tokenizer = open_clip.get_tokenizer(arch, context_length=context_length)
    if not isinstance(tokenizer, open_clip.SimpleTokenizer):
        raise UnsupportedModel(
            f"{arch} uses {type(tokenizer).__name__}; only OpenCLIP's BPE tokenizer is exported"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = open_clip.create_model(
            arch,
            pretrained=pretrained,
            precision="fp32",
            device="cpu",
            force_context_length=context_length,
        )
    return model.eval()


def bundle_name(arch: str, pretrained: str | None, precision: Precision) -> str:
    base = arch.rstrip("/").rsplit("/", 1)[-1].split(":", 1)[-1]
    source = Path(pretrained).stem if pretrained and Path(pretrained).suffix else pretrained
    parts = [base, source or "random"] + ([] if precision == "fp32" else [precision])
    slug = re.sub(r"[^a-z0-9._-]+", "-", "-".join(parts).lower()).strip("-._")
    return slug or "openclip"


def _image_tower_spec(model: Any, output_dim: int) -> ImageTower:
    from open_clip.model import get_model_preprocess_cfg

    cfg: dict[str, Any] = get_model_preprocess_cfg(model)
    size = cfg.get("size", 224)
    sizes = (size, size) if isinstance(size, int) else tuple(size)
    if sizes[0] != sizes[1]:
        raise UnsupportedModel(f"non-square input size {sizes}")
    resize_mode = cfg.get("resize_mode", "shortest")
    if resize_mode not in _RESIZE:
        raise UnsupportedModel(f"resize mode {resize_mode!r} (the encoder crops or squashes)")
    return ImageTower(
        file=IMAGE_FILE,
        image_size=int(sizes[0]),
        resize=_RESIZE[resize_mode],  # type: ignore[arg-type]
        interpolation="bilinear" if cfg.get("interpolation") == "bilinear" else "bicubic",
        mean=tuple(float(v) for v in cfg["mean"]),  # type: ignore[arg-type]
        std=tuple(float(v) for v in cfg["std"]),  # type: ignore[arg-type]
        output_dim=output_dim,
        normalized=True,
    )


def write_graph(
    graph: onnx.ModelProto, path: Path, precision: Precision, int8_method: Int8Method
) -> list[str]:
    """Write one tower in ``precision``; returns the file names written."""
    if precision == "fp16":
        graph = fp16_weights(graph)
    elif precision == "int8" and int8_method == "dynamic":
        return dynamic_int8(graph, path)
    elif precision == "int8":
        graph = int8_weights(graph)
    return save_onnx(graph, path)


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _parity(
    model: Any, staging: Path, tower: ImageTower, text: TextTower, precision: Precision
) -> dict[str, ParityReport]:
    import open_clip

    size, ctx = tower.image_size, text.max_tokens
    reference_tokenizer = open_clip.SimpleTokenizer(context_length=ctx)
    serving_tokenizer = TextTokenizer(staging / TOKENIZER_FILE, max_tokens=ctx, pad_id=PAD_ID)
    image_session, text_session = _session(staging / IMAGE_FILE), _session(staging / TEXT_FILE)
    outputs = [text.output_name, SENTENCE_OUTPUT]

    @torch.no_grad()
    def image_reference(batch: int) -> dict[str, np.ndarray]:
        pixels = torch.from_numpy(parity_pixels(batch, size))
        return {tower.output_name: model.encode_image(pixels, normalize=True).numpy()}

    def image_candidate(batch: int) -> dict[str, np.ndarray]:
        [out] = image_session.run(
            [tower.output_name], {tower.input_name: parity_pixels(batch, size)}
        )
        return {tower.output_name: out}

    @torch.no_grad()
    def text_reference(batch: int) -> dict[str, np.ndarray]:
        ids = reference_tokenizer(parity_texts(batch, ctx))  # padded to the context length
        embeds = model.encode_text(ids, normalize=True).numpy()
        return dict.fromkeys(outputs, embeds)

    def text_candidate(batch: int) -> dict[str, np.ndarray]:
        ids = serving_tokenizer.encode(parity_texts(batch, ctx)).input_ids
        return dict(
            zip(outputs, text_session.run(outputs, {text.input_ids_name: ids}), strict=True)
        )

    return {
        "image": require_parity(image_reference, image_candidate, precision=precision),
        "text": require_parity(text_reference, text_candidate, precision=precision),
    }


def _parity_document(reports: dict[str, ParityReport], meta: dict[str, Any]) -> dict[str, Any]:
    return {
        **meta,
        "reference": f"open_clip {_version('open_clip')} / torch {torch.__version__}, fp32 CPU",
        "candidate": f"onnxruntime {ort.__version__} CPUExecutionProvider, ORT_ENABLE_ALL",
        "text_inputs": "reference padded to the context length; candidate tokenized by the "
        "bundle's tokenizer.json, padded to each batch's longest text",
        "towers": {tower: report.to_dict() for tower, report in reports.items()},
    }


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version({"open_clip": "open_clip_torch"}.get(module, module))
    except PackageNotFoundError:
        return "unknown"


def export_openclip(
    arch: str,
    pretrained: str | None,
    out_dir: Path,
    *,
    precision: Precision = "fp32",
    context_length: int | None = None,
    name: str | None = None,
    int8_method: Int8Method = "weight_only",
) -> Path:
    """Export an OpenCLIP model to a bundle at ``out_dir`` (which must not exist or be empty).

    ``int8`` stores weights in 8 bits and computes in float32 (``int8_method="weight_only"``);
    ``"dynamic"`` also quantises activations (faster on CPU, but typically below the gate).

    Raises ``ParityError`` (and writes nothing) when an exported tower does not reproduce the
    PyTorch forward within the gate for ``precision``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if name is not None and not re.fullmatch(NAME_PATTERN, name):
        raise ValueError(f"bundle name {name!r} must match {NAME_PATTERN} (lower case)")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} exists and is not an empty folder; choose another")
    started = time.monotonic()
    model = load_openclip(arch, pretrained, context_length)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        text_graph = export_text_tower(model, SENTENCE_OUTPUT)
        embed_dim = _output_dim(text_graph)
        tower = _image_tower_spec(model, embed_dim)
        image_graph = export_image_tower(model, tower.image_size)
        ctx = int(model.context_length)
        text = TextTower(
            file=TEXT_FILE,
            tokenizer=TOKENIZER_FILE,
            attention_mask_name=None,  # causal attention: padding needs no mask
            max_tokens=ctx,
            pad_id=PAD_ID,
            output_dim=embed_dim,
            normalized=True,
            sentence_output_name=SENTENCE_OUTPUT,
            sentence_dim=embed_dim,
        )
        files = write_graph(image_graph, staging / IMAGE_FILE, precision, int8_method)
        files += write_graph(text_graph, staging / TEXT_FILE, precision, int8_method)
        write_clip_tokenizer(staging / TOKENIZER_FILE)
        reports = _parity(model, staging, tower, text, precision)
        meta = {"arch": arch, "pretrained": pretrained, "precision": precision}
        if precision == "int8":
            meta["int8_method"] = int8_method
        document = _parity_document(reports, meta | {"context_length": ctx})
        (staging / PARITY_FILE).write_text(json.dumps(document, indent=2) + "\n")
        files += [TOKENIZER_FILE, PARITY_FILE]
        trained = pretrained is not None
        manifest = Manifest(
            name=name or bundle_name(arch, pretrained, precision),
            version=BUNDLE_VERSION,
            trained=trained,
            summary=(
                f"OpenCLIP {arch} ({pretrained or 'random weights, for tests only'}) exported "
                f"to ONNX in {precision}; context {ctx} tokens. Descriptions are embedded with "
                "the CLIP text tower (joint space)."
            ),
            image_tower=tower,
            text_tower=text,
            description_embedder=DescriptionEmbedder(
                source="text_tower", output_dim=embed_dim, normalized=True
            ),
            spaces=Spaces(image=embed_dim, caption=embed_dim, description=embed_dim),
            files=hash_files(staging, files),
        )
        write_manifest(staging, manifest)
        load_bundle(staging)  # the format check the serving side will run
        staging.chmod(0o755)  # mkdtemp made it private
        if out_dir.exists():
            out_dir.rmdir()
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info(
        "exported %s (%s, %s) to %s in %.1f s: %s; %s",
        arch,
        pretrained or "random weights",
        precision,
        out_dir,
        time.monotonic() - started,
        reports["image"].summary(),
        reports["text"].summary(),
    )
    return out_dir


def _output_dim(graph: onnx.ModelProto) -> int:
    dim = graph.graph.output[0].type.tensor_type.shape.dim[-1]
    if not dim.dim_value:
        raise UnsupportedModel("the text tower's output width is not static")
    return int(dim.dim_value)
