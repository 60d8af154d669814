"""TensorRT engine building: input handling everywhere, the build itself on a GPU machine only.

The ``gpu`` tests need the ``tensorrt`` package, torch with CUDA and a GPU; they skip without.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from models.export import tensorrt
from models.export.cli import build_engine_command
from models.export.parity import ParityError
from models.export.tensorrt import (
    ENGINES_FILE,
    build_engines,
    check_supported,
    import_tensorrt,
    parse_batch,
    plan_towers,
    verification_batches,
)
from service.core.bundle.manifest import load_bundle


def test_parse_batch() -> None:
    assert parse_batch("1:16:64") == (1, 16, 64)
    for bad in ("16", "1:16", "a:b:c", "1:16:64:128", "8:4:16", "0:1:2", ""):
        with pytest.raises(ValueError, match="MIN"):
            parse_batch(bad)


def test_verification_batches_stay_inside_the_profile() -> None:
    assert verification_batches((1, 16, 64)) == (1, 8, 32, 64)
    assert verification_batches((4, 8, 16)) == (4, 8, 16)
    assert verification_batches((1, 1, 1)) == (1,)


def test_profiles_cover_batch_and_sequence(tiny_bundle_dir: Path) -> None:
    bundle = load_bundle(tiny_bundle_dir)
    plans = {p.name: p for p in plan_towers(bundle.root, bundle.manifest, (1, 8, 32))}
    assert set(plans) == {"image", "text"}
    size = bundle.manifest.image_tower.image_size
    assert plans["image"].profile.shapes == {
        "pixel_values": ((1, 3, size, size), (8, 3, size, size), (32, 3, size, size))
    }
    text = plans["text"]
    max_tokens = bundle.manifest.text_tower.max_tokens
    expected = ((1, 1), (8, 16), (32, max_tokens))
    assert text.profile.shapes == {"input_ids": expected, "attention_mask": expected}
    assert text.outputs == ["text_embeds", "sentence_embeds"]
    feeds = text.feeds(8)
    assert feeds["input_ids"].shape == feeds["attention_mask"].shape
    assert feeds["input_ids"].shape[0] == 8 and feeds["input_ids"].shape[1] <= max_tokens


def test_onnx_runtime_int8_graphs_are_refused(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
        "int8",
        [
            helper.make_tensor_value_info("a", TensorProto.UINT8, [1, 2]),
            helper.make_tensor_value_info("b", TensorProto.INT8, [2, 2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 2])],
    )
    path = tmp_path / "int8.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ValueError, match="fp32 or fp16 bundle"):
        check_supported(path)


def test_missing_tensorrt_gives_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(ModuleNotFoundError, match="pip install"):
        import_tensorrt()


def test_cli_rejects_bad_input(
    tiny_bundle_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert build_engine_command(bundle=tiny_bundle_dir, batch="1-8-32") == 2
    assert "MIN:OPT:MAX" in capsys.readouterr().err
    assert build_engine_command(bundle=tmp_path / "nowhere", batch="1:8:32") == 2
    assert "not found" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert build_engine_command(bundle=tiny_bundle_dir, batch="1:8:32") == 2
    assert "pip install" in capsys.readouterr().err
    assert not (tiny_bundle_dir / "tensorrt").exists()


class _StubTensorRT:
    """Just enough of the tensorrt module for the orchestration: the "engine" is the ONNX file."""

    __version__ = "stub"

    class Logger:
        WARNING = 0

        def __init__(self, level: int) -> None:
            self.level = level

    class BuilderFlag:
        FP16, TF32 = "fp16", "tf32"

    class MemoryPoolType:
        WORKSPACE = "workspace"

    class _Config:
        def __init__(self) -> None:
            self.flags: set[str] = set()
            self.profiles: list[object] = []

        def set_memory_pool_limit(self, pool: str, size: int) -> None: ...
        def set_flag(self, flag: str) -> None:
            self.flags.add(flag)

        def clear_flag(self, flag: str) -> None:
            self.flags.discard(flag)

        def add_optimization_profile(self, profile: object) -> None:
            self.profiles.append(profile)

    class _Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple[object, ...]] = {}

        def set_shape(self, name: str, lo: object, opt: object, hi: object) -> None:
            self.shapes[name] = (lo, opt, hi)

    class _Network:
        onnx_bytes = b""

    class Builder:
        built: list[tuple[set[str], dict[str, tuple[object, ...]]]] = []

        def __init__(self, logger: object) -> None: ...
        def create_network(self, flags: int) -> object:
            return _StubTensorRT._Network()

        def create_builder_config(self) -> object:
            return _StubTensorRT._Config()

        def create_optimization_profile(self) -> object:
            return _StubTensorRT._Profile()

        def build_serialized_network(self, network: Any, config: Any) -> bytes:
            self.built.append((set(config.flags), config.profiles[0].shapes))
            return bytes(network.onnx_bytes)

    class OnnxParser:
        num_errors = 0

        def __init__(self, network: Any, logger: object) -> None:
            self.network = network

        def parse_from_file(self, path: str) -> bool:
            self.network.onnx_bytes = Path(path).read_bytes()
            return True


class _OrtRunner:
    """Runs the stub "engine" (ONNX bytes) with ONNX Runtime, drifting by ``noise``."""

    noise = 0.0

    def __init__(self, trt: object, engine: bytes) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(engine, providers=["CPUExecutionProvider"])

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        outputs = self.session.run(names, feeds)
        return {n: o + self.noise for n, o in zip(names, outputs, strict=True)}


@pytest.fixture
def stub_tensorrt(monkeypatch: pytest.MonkeyPatch) -> type[_StubTensorRT]:
    monkeypatch.setitem(sys.modules, "tensorrt", _StubTensorRT)
    monkeypatch.setattr(tensorrt, "EngineRunner", _OrtRunner)
    monkeypatch.setattr(tensorrt, "gpu_name", lambda: "stub GPU")
    monkeypatch.setattr(_StubTensorRT.Builder, "built", [])
    return _StubTensorRT


def test_engines_are_built_per_tower_and_written_together(
    tiny_bundle_dir: Path, tmp_path: Path, stub_tensorrt: type[_StubTensorRT]
) -> None:
    out = build_engines(tiny_bundle_dir, fp16=True, batch=(1, 8, 32), out_dir=tmp_path / "trt")
    assert sorted(p.name for p in out.iterdir()) == ["engines.json", "image.engine", "text.engine"]
    report = json.loads((out / ENGINES_FILE).read_text())
    assert (report["gpu"], report["precision"], report["batch"]) == ("stub GPU", "fp16", [1, 8, 32])
    assert all(e["parity"]["passed"] for e in report["engines"].values())
    flags = [f for f, _ in stub_tensorrt.Builder.built]
    assert flags == [{"fp16"}, {"fp16"}]
    build_engines(tiny_bundle_dir, fp16=False, batch=(1, 8, 32), out_dir=tmp_path / "trt")
    assert [f for f, _ in stub_tensorrt.Builder.built][-1] == set()  # fp32: TF32 off


def test_an_engine_that_drifts_is_not_kept(
    tiny_bundle_dir: Path,
    tmp_path: Path,
    stub_tensorrt: type[_StubTensorRT],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_OrtRunner, "noise", 0.05)
    with pytest.raises(ParityError, match="fp16 parity FAILED"):
        build_engines(tiny_bundle_dir, fp16=True, batch=(1, 8, 32), out_dir=tmp_path / "trt")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(_OrtRunner, "noise", 1e-3)  # within the fp16 gate, not the fp32 one
    build_engines(tiny_bundle_dir, fp16=True, batch=(1, 8, 32), out_dir=tmp_path / "trt")
    with pytest.raises(ParityError, match="fp32 parity FAILED"):
        build_engines(tiny_bundle_dir, fp16=False, batch=(1, 8, 32), out_dir=tmp_path / "trt")
    assert json.loads((tmp_path / "trt" / ENGINES_FILE).read_text())["precision"] == "fp16"


def _require_gpu() -> None:
    pytest.importorskip("tensorrt", reason="TensorRT is not installed")
    torch = pytest.importorskip("torch", reason="verification uses torch CUDA buffers")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")


@pytest.mark.gpu
@pytest.mark.parametrize("fp16", [True, False])
def test_engines_for_the_tiny_bundle(tiny_bundle_dir: Path, tmp_path: Path, fp16: bool) -> None:
    _require_gpu()
    out = build_engines(tiny_bundle_dir, fp16=fp16, batch=(1, 8, 32), out_dir=tmp_path / "trt")
    report = json.loads((out / ENGINES_FILE).read_text())
    assert report["precision"] == ("fp16" if fp16 else "fp32")
    for name in ("image", "text"):
        assert (out / f"{name}.engine").stat().st_size > 0
        assert report["engines"][name]["parity"]["passed"]


@pytest.mark.gpu
def test_engines_for_an_openclip_bundle(tmp_path: Path) -> None:
    _require_gpu()
    pytest.importorskip("open_clip", reason="needs the export venv")
    from models.export.openclip import export_openclip

    folder = tmp_path / "arch"
    folder.mkdir()
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 64,
            "heads": 2,
            "layers": 2,
        },
    }
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    bundle = export_openclip(f"local-dir:{folder}", None, tmp_path / "bundle", precision="fp16")
    out = build_engines(bundle, fp16=True, batch=(1, 8, 32))
    assert out == bundle / "tensorrt"
    report = json.loads((out / ENGINES_FILE).read_text())
    assert report["engines"]["text"]["profile"]["input_ids"] == [[1, 1], [8, 16], [32, 77]]
    assert all(e["parity"]["passed"] for e in report["engines"].values())
    load_bundle(bundle)  # the engines folder does not disturb the bundle's checksums
