"""TensorRT engines for a bundle's towers, verified against ONNX Runtime before they are kept.

``build_engines`` parses each tower's ONNX file with TensorRT's ONNX parser, builds one
optimisation profile (batch MIN:OPT:MAX, and for text inputs a sequence range up to the
manifest's ``max_tokens``), and runs the engine on the shared parity inputs against ONNX
Runtime's CPU result on the same file: row cosine >= 0.999 for fp16 engines, max abs diff
<= 1e-4 for fp32 ones (built with TF32 off). Engines that fail are never written: all towers are
built and verified first, then written together into ``out_dir`` (default ``BUNDLE/tensorrt``)
with ``engines.json`` (TensorRT version, GPU, profiles, parity figures).

Written against the TensorRT 10 Python API (name-based I/O tensors, ``execute_async_v3``).
TensorRT 11 removed the weak-typing precision flags: there, fp16 engines are built from a copy
of the graph converted to fp16 (I/O kept in fp32) instead of with ``BuilderFlag.FP16``. Device
buffers come from torch (the export venv has a CUDA build).

Engines are specific to the GPU model and the TensorRT version that built them.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from models.export.parity import PARITY_BATCHES, ParityError, ParityReport, compare
from models.export.parity_inputs import parity_pixels, parity_texts
from service.core.bundle.manifest import Manifest, load_bundle
from service.core.bundle.tokenize import TextTokenizer

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "TensorRT's Python package is not installed: pip install 'tensorrt-cu13>=10' (or "
    "tensorrt-cu12 for a CUDA 12 driver) into the export venv, on a machine with an NVIDIA GPU"
)
ENGINES_FILE = "engines.json"
WORKSPACE_BYTES = 4 << 30
_UNSUPPORTED_OPS = frozenset({"MatMulInteger", "DynamicQuantizeLinear", "MatMulNBits"})

Feeds = Callable[[int], dict[str, np.ndarray]]
Shape = tuple[int, ...]


@dataclass(frozen=True)
class Profile:
    """min/opt/max of every dynamic input of one tower."""

    shapes: Mapping[str, tuple[Shape, Shape, Shape]]


@dataclass(frozen=True)
class TowerPlan:
    name: str  # "image", "text" or "description"
    onnx_file: str
    outputs: list[str]
    profile: Profile
    feeds: Feeds  # batch size -> inputs
    batches: tuple[int, ...]


def import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as exc:
        raise ModuleNotFoundError(INSTALL_HINT, name="tensorrt") from exc
    return tensorrt


def parse_batch(spec: str) -> tuple[int, int, int]:
    """``"MIN:OPT:MAX"`` → three ints with 1 <= MIN <= OPT <= MAX."""
    parts = spec.split(":")
    try:
        lo, opt, hi = (int(p) for p in parts)
    except ValueError:
        raise ValueError(
            f"--batch must be MIN:OPT:MAX, three whole numbers such as 1:16:64, not {spec!r}"
        ) from None
    if not 1 <= lo <= opt <= hi:
        raise ValueError(f"--batch needs 1 <= MIN <= OPT <= MAX, got {lo}:{opt}:{hi}")
    return lo, opt, hi


def verification_batches(batch: tuple[int, int, int]) -> tuple[int, ...]:
    """The parity batch sizes inside the profile, plus its two ends."""
    lo, _, hi = batch
    return tuple(sorted({b for b in PARITY_BATCHES if lo <= b <= hi} | {lo, hi}))


def plan_towers(
    bundle_root: Path, manifest: Manifest, batch: tuple[int, int, int], seq_opt: int = 16
) -> list[TowerPlan]:
    """What to build for each tower: files, profiles and verification inputs."""
    lo, opt, hi = batch
    batches = verification_batches(batch)
    it, tt, de = manifest.image_tower, manifest.text_tower, manifest.description_embedder
    size = it.image_size

    def image_feeds(n: int) -> dict[str, np.ndarray]:
        return {it.input_name: parity_pixels(n, size)}

    pixels = Profile(
        {it.input_name: ((lo, 3, size, size), (opt, 3, size, size), (hi, 3, size, size))}
    )
    plans = [TowerPlan("image", it.file, [it.output_name], pixels, image_feeds, batches)]
    text = _TextSpec(tt.file, tt.tokenizer, tt.input_ids_name, tt.attention_mask_name,
                     tt.max_tokens, tt.pad_id)  # fmt: skip
    text_outputs = [tt.output_name] + ([tt.sentence_output_name] if tt.sentence_output_name else [])
    specs = [("text", text, text_outputs)]
    if de.source == "onnx" and de.file and de.tokenizer:
        desc = _TextSpec(de.file, de.tokenizer, de.input_ids_name, de.attention_mask_name,
                         de.max_tokens, de.pad_id)  # fmt: skip
        specs.append(("description", desc, [de.output_name]))
    for name, spec, outputs in specs:
        tokenizer = TextTokenizer(
            bundle_root / spec.tokenizer, max_tokens=spec.max_tokens, pad_id=spec.pad_id
        )
        seq = (1, min(seq_opt, spec.max_tokens), spec.max_tokens)
        shape = ((lo, seq[0]), (opt, seq[1]), (hi, seq[2]))
        shapes = {spec.ids_name: shape} | ({spec.mask_name: shape} if spec.mask_name else {})
        feeds = _text_feeds(tokenizer, spec.ids_name, spec.mask_name)
        plans.append(TowerPlan(name, spec.file, outputs, Profile(shapes), feeds, batches))
    return plans


@dataclass(frozen=True)
class _TextSpec:
    file: str
    tokenizer: str
    ids_name: str
    mask_name: str | None
    max_tokens: int
    pad_id: int


def _text_feeds(tokenizer: TextTokenizer, ids_name: str, mask_name: str | None) -> Feeds:
    def feeds(n: int) -> dict[str, np.ndarray]:
        tokens = tokenizer.encode(parity_texts(n, tokenizer.max_tokens))
        out = {ids_name: tokens.input_ids}
        if mask_name:
            out[mask_name] = tokens.attention_mask
        return out

    return feeds


def check_supported(path: Path) -> None:
    """Refuse graphs TensorRT cannot parse: ONNX Runtime's int8 formats are CPU-only."""
    model = onnx.load(str(path), load_external_data=False)
    found = {n.op_type for n in model.graph.node} & _UNSUPPORTED_OPS
    if found:
        raise ValueError(
            f"{path.name} uses {', '.join(sorted(found))} (an ONNX Runtime int8 format); build "
            "engines from an fp32 or fp16 bundle"
        )


def _onnx_reference(path: Path, outputs: list[str]) -> Callable[[dict[str, np.ndarray]], dict]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda feeds: dict(zip(outputs, session.run(outputs, feeds), strict=True))


def build_engine(trt: Any, path: Path, profile: Profile, *, fp16: bool) -> bytes:
    """Parse ``path`` and build a serialized engine with one optimisation profile."""
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    weak_fp16 = hasattr(trt.BuilderFlag, "FP16")  # TensorRT 10; removed in 11
    flags = 0
    if fp16 and not weak_fp16:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt_logger)
    if fp16 and not weak_fp16:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        half = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
        parsed = parser.parse(half.SerializeToString(), str(path))
    else:
        parsed = parser.parse_from_file(str(path))
    if not parsed:
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f"TensorRT cannot parse {path.name}: {'; '.join(errors)}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if fp16 and weak_fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if not fp16 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # fp32 engines are held to the fp32 gate
    optimisation = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile.shapes.items():
        optimisation.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(optimisation)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build an engine for {path.name} (see its log)")
    return bytes(serialized)


class EngineRunner:
    """Runs a serialized engine on numpy inputs, with torch CUDA tensors as device buffers."""

    def __init__(self, trt: Any, engine: bytes) -> None:
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("verifying TensorRT engines needs torch with CUDA and a GPU")
        self._trt, self._torch = trt, torch
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self._runtime.deserialize_cuda_engine(engine)
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.inputs = [n for n in names if is_input[n]]
        self.outputs = [n for n in names if not is_input[n]]

    def _dtype(self, name: str) -> np.dtype:
        return np.dtype(self._trt.nptype(self.engine.get_tensor_dtype(name)))

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        buffers = {}
        for name in self.inputs:
            array = np.ascontiguousarray(feeds[name], dtype=self._dtype(name))
            buffers[name] = torch.from_numpy(array).cuda()
            self.context.set_input_shape(name, tuple(array.shape))
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = torch.from_numpy(np.empty(0, self._dtype(name))).dtype
            buffers[name] = torch.empty(shape, dtype=dtype, device="cuda")
        for name, tensor in buffers.items():
            self.context.set_tensor_address(name, tensor.data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        stream.synchronize()
        return {n: buffers[n].cpu().numpy().astype(np.float32) for n in self.outputs}


def verify_engine(
    trt: Any, engine: bytes, onnx_path: Path, plan: TowerPlan, *, fp16: bool
) -> ParityReport:
    """The parity gate between ONNX Runtime (fp32, CPU) and the engine; raises ParityError."""
    reference = _onnx_reference(onnx_path, plan.outputs)
    runner = EngineRunner(trt, engine)
    report = compare(
        lambda n: reference(plan.feeds(n)),
        lambda n: {k: v for k, v in runner(plan.feeds(n)).items() if k in plan.outputs},
        precision="fp16" if fp16 else "fp32",
        batches=plan.batches,
    )
    if not report.passed:
        raise ParityError(report)
    return report


def build_engines(
    bundle_dir: Path, *, fp16: bool, batch: tuple[int, int, int], out_dir: Path | None = None
) -> Path:
    """Build, verify and write one engine per tower; returns the folder holding them."""
    lo, opt, hi = batch
    if not 1 <= lo <= opt <= hi:
        raise ValueError(f"batch needs 1 <= MIN <= OPT <= MAX, got {lo}:{opt}:{hi}")
    bundle = load_bundle(Path(bundle_dir))
    plans = plan_towers(bundle.root, bundle.manifest, batch)
    for plan in plans:
        check_supported(bundle.path(plan.onnx_file))
    trt = import_tensorrt()
    out_dir = Path(out_dir) if out_dir else bundle.root / "tensorrt"
    precision = "fp16" if fp16 else "fp32"
    built: dict[str, bytes] = {}
    reports: dict[str, ParityReport] = {}
    for plan in plans:
        path = bundle.path(plan.onnx_file)
        logger.info("building the %s engine (%s, batch %d:%d:%d)", plan.name, precision, *batch)
        built[plan.name] = build_engine(trt, path, plan.profile, fp16=fp16)
        reports[plan.name] = verify_engine(trt, built[plan.name], path, plan, fp16=fp16)
        logger.info("%s engine: %s", plan.name, reports[plan.name].summary())
    _write(out_dir, built, _document(trt, bundle.manifest, plans, reports, precision, batch))
    return out_dir


def gpu_name() -> str:
    import torch

    return str(torch.cuda.get_device_name())


def _document(
    trt: Any,
    manifest: Manifest,
    plans: list[TowerPlan],
    reports: dict[str, ParityReport],
    precision: str,
    batch: tuple[int, int, int],
) -> dict[str, Any]:
    return {
        "bundle": manifest.ref,
        "tensorrt": trt.__version__,
        "gpu": gpu_name(),
        "precision": precision,
        "batch": list(batch),
        "engines": {
            p.name: {
                "file": f"{p.name}.engine",
                "onnx": p.onnx_file,
                "profile": {k: [list(s) for s in v] for k, v in p.profile.shapes.items()},
                "parity": reports[p.name].to_dict(),
            }
            for p in plans
        },
    }


def _write(out_dir: Path, engines: dict[str, bytes], document: dict[str, Any]) -> None:
    """All engines or none: written to a staging folder, then swapped in."""
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / ENGINES_FILE).is_file():
        raise FileExistsError(f"{out_dir} is not empty and holds no {ENGINES_FILE}; not replacing")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for name, data in engines.items():
            (staging / f"{name}.engine").write_bytes(data)
        (staging / ENGINES_FILE).write_text(json.dumps(document, indent=2) + "\n")
        staging.chmod(0o755)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
