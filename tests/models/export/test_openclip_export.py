"""OpenCLIP → bundle export on a tiny, randomly initialised architecture (no weights downloaded).

Runs in the export venv (``.venv-export``: torch, open_clip). Every bundle must pass the shared
parity gate, load with ``load_bundle`` and embed with ``EncoderEngine`` — in this process and, where
the main venv exists, in a subprocess of the main venv's interpreter.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

open_clip = pytest.importorskip(
    "open_clip", reason="needs open_clip: run in .venv-export (scripts/export-venv.sh)"
)
import onnx  # noqa: E402
import torch  # noqa: E402
from onnx import numpy_helper  # noqa: E402

from models.export import openclip  # noqa: E402
from models.export.clip_tokenizer import EOT_ID, SOT_ID  # noqa: E402
from models.export.openclip import UnknownArch, export_openclip  # noqa: E402
from models.export.parity import ParityError  # noqa: E402
from service.core.bundle.manifest import load_bundle  # noqa: E402
from service.core.bundle.tokenize import TextTokenizer  # noqa: E402
from service.core.config import Settings  # noqa: E402
from service.encoder.engine import EncoderEngine  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
MAIN_PYTHON = REPO / ".venv" / "bin" / "python"
TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TEXTS = ["a photo of a cat", "two dogs playing in the snow at night", "x"]


def _arch(root: Path, name: str, model_cfg: dict[str, object]) -> str:
    """An open_clip ``local-dir:`` architecture holding only a config: random weights."""
    folder = root / name
    folder.mkdir()
    config = {"model_cfg": model_cfg, "preprocess_cfg": {}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    return f"local-dir:{folder}"


@pytest.fixture(scope="module")
def arch(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _arch(tmp_path_factory.mktemp("arch"), "tiny-clip", TINY)


@pytest.fixture(scope="module")
def bundles(arch: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundles")
    return {p: export_openclip(arch, None, root / p, precision=p) for p in ("fp32", "fp16", "int8")}


def _png(size: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size * 2, size), (200, 30, 60)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_export_passes_parity_and_serves(bundles: dict[str, Path], precision: str) -> None:
    bundle = load_bundle(bundles[precision])
    m = bundle.manifest
    assert m.name == f"tiny-clip-random{'' if precision == 'fp32' else '-' + precision}"
    assert (m.text_tower.max_tokens, m.text_tower.pad_id, m.spaces.image) == (77, 0, 32)
    assert m.description_embedder.source == "text_tower"
    assert set(m.files) == {"image.onnx", "text.onnx", "tokenizer.json", "parity.json"}
    report = json.loads(bundle.path("parity.json").read_text())
    assert report["precision"] == precision
    for tower in ("image", "text"):
        assert report["towers"][tower]["passed"]
        assert {k.split("/")[0] for k in report["towers"][tower]["min_cosine"]} == {"1", "8", "32"}

    engine = EncoderEngine(bundle, Settings())
    engine.warmup()
    texts = engine.embed_texts(TEXTS)
    assert texts.joint.shape == (3, 32)
    np.testing.assert_allclose(texts.joint, texts.sentence)  # description space = CLIP text
    [image] = engine.embed_images([_png(m.image_tower.image_size)])
    assert isinstance(image, np.ndarray) and image.shape == (32,)


def test_reduced_precision_files_are_smaller(bundles: dict[str, Path]) -> None:
    size = {p: (b / "text.onnx").stat().st_size + (b / "image.onnx").stat().st_size
            for p, b in bundles.items()}  # fmt: skip
    assert size["fp16"] < 0.6 * size["fp32"]
    assert size["int8"] < 0.6 * size["fp32"]


def test_serving_engine_in_the_main_venv_embeds_like_the_reference(
    bundles: dict[str, Path], arch: str
) -> None:
    if not MAIN_PYTHON.exists():
        pytest.fail(f"{MAIN_PYTHON} is missing: create the main venv first (make venv)")
    script = (
        "import json, sys; from pathlib import Path;"
        "from service.core.config import Settings;"
        "from service.core.bundle.manifest import load_bundle;"
        "from service.encoder.engine import EncoderEngine;"
        "e = EncoderEngine(load_bundle(Path(sys.argv[1])), Settings()); e.warmup();"
        "print(json.dumps(e.embed_texts(json.loads(sys.argv[2])).joint.tolist()))"
    )
    out = subprocess.run(
        [str(MAIN_PYTHON), "-c", script, str(bundles["fp32"]), json.dumps(TEXTS)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    served = np.asarray(json.loads(out.stdout.strip().splitlines()[-1]), dtype=np.float32)
    model = openclip.load_openclip(arch, None, None)
    with torch.no_grad():
        reference = model.encode_text(open_clip.tokenize(TEXTS), normalize=True).numpy()
    np.testing.assert_allclose(served, reference, atol=1e-4)


def test_batch_padding_does_not_change_embeddings(bundles: dict[str, Path]) -> None:
    """The text graph's sequence axis is dynamic: padding to the batch's longest text gives
    what padding to the full context gives."""
    import onnxruntime as ort

    root = bundles["fp32"]
    session = ort.InferenceSession(str(root / "text.onnx"), providers=["CPUExecutionProvider"])
    ids = TextTokenizer(root / "tokenizer.json", max_tokens=77, pad_id=0).encode(TEXTS).input_ids
    assert ids.shape[1] < 77
    full = np.zeros((len(TEXTS), 77), dtype=np.int64)
    full[:, : ids.shape[1]] = ids
    [short] = session.run(["text_embeds"], {"input_ids": ids})
    [padded] = session.run(["text_embeds"], {"input_ids": full})
    np.testing.assert_allclose(short, padded, atol=1e-6)
    inputs = {i.name: i.shape for i in session.get_inputs()}
    assert inputs == {"input_ids": ["batch", "seq"]}


def test_tower_without_causal_mask_pads_inside_the_graph(tmp_path: Path) -> None:
    """MobileCLIP-style text towers attend to padding: the graph pads to the context itself."""
    cfg = json.loads(json.dumps(TINY))
    cfg["custom_text"] = True
    cfg["text_cfg"]["no_causal_mask"] = True
    arch = _arch(tmp_path, "bidir", cfg)
    root = export_openclip(arch, None, tmp_path / "bundle")  # parity feeds batch-longest padding
    engine = EncoderEngine(load_bundle(root), Settings())
    one = engine.embed_texts(TEXTS[:1]).joint
    mixed = engine.embed_texts(TEXTS).joint[:1]  # padded to a longer text in this batch
    np.testing.assert_allclose(one, mixed, atol=1e-5)


def test_long_context_export_truncates_at_248(arch: str, tmp_path: Path) -> None:
    root = export_openclip(arch, None, tmp_path / "long", context_length=248)
    bundle = load_bundle(root)
    assert bundle.manifest.text_tower.max_tokens == 248
    assert json.loads(bundle.path("parity.json").read_text())["context_length"] == 248
    long_text = " ".join(["a long caption about a mountain lake at dawn"] * 40)
    tokens = TextTokenizer(root / "tokenizer.json", max_tokens=248, pad_id=0).encode([long_text])
    assert tokens.input_ids.shape == (1, 248)
    assert (tokens.input_ids[0, 0], tokens.input_ids[0, -1]) == (SOT_ID, EOT_ID)
    reference = open_clip.tokenize([long_text], context_length=248).numpy()
    np.testing.assert_array_equal(tokens.input_ids, reference)
    assert EncoderEngine(bundle, Settings()).embed_texts([long_text]).joint.shape == (1, 32)


def test_a_graph_that_drifts_fails_parity_and_writes_nothing(
    arch: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write_graph = openclip.write_graph

    def corrupt(graph: onnx.ModelProto, path: Path, *args: Any) -> list[str]:
        if path.name == "text.onnx":  # nudge the largest weight of the text tower
            init = max(graph.graph.initializer, key=lambda t: int(np.prod(t.dims)))
            array = numpy_helper.to_array(init)
            noise = np.random.default_rng(0).standard_normal(array.shape) * 0.02
            init.CopyFrom(numpy_helper.from_array((array + noise).astype(array.dtype), init.name))
        return real_write_graph(graph, path, *args)

    monkeypatch.setattr(openclip, "write_graph", corrupt)
    out = tmp_path / "out" / "bundle"
    with pytest.raises(ParityError, match="fp32 parity FAILED"):
        export_openclip(arch, None, out)
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no staging folder left behind


def test_refuses_a_non_empty_output_folder(arch: str, tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        export_openclip(arch, None, tmp_path / "taken")
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


def test_unknown_arch_suggests_real_ones() -> None:
    with pytest.raises(UnknownArch, match="ViT-B-32"):
        openclip.resolve_arch("ViT-B-33")


def test_missing_checkpoint_and_unknown_tag_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        openclip.load_openclip("ViT-B-32", str(tmp_path / "nope.pt"), None)
    with pytest.raises(ValueError, match="laion2b_s34b_b79k"):
        openclip.load_openclip("ViT-B-32", "not-a-tag", None)


def test_bundle_names_are_manifest_safe() -> None:
    assert openclip.bundle_name("ViT-B-32", "laion2b_s34b_b79k", "fp16") == (
        "vit-b-32-laion2b_s34b_b79k-fp16"
    )
    assert openclip.bundle_name("ViT-L-14", "/ckpt/LongCLIP-L.pt", "fp32") == "vit-l-14-longclip-l"
    assert openclip.bundle_name("local-dir:/x/tiny", None, "int8") == "tiny-random-int8"


def test_cli_exit_codes(arch: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from models.export.cli import export_command

    assert export_command(arch="ViT-B-33", pretrained=None, out=tmp_path / "a") == 2
    assert "did you mean" in capsys.readouterr().err
    missing = str(tmp_path / "missing.pt")
    assert export_command(arch="ViT-B-32", pretrained=missing, out=tmp_path / "b") == 2
    assert "checkpoint file not found" in capsys.readouterr().err
    assert export_command(arch=arch, pretrained=None, out=tmp_path / "c", precision="fp8") == 2
    assert export_command(arch=arch, pretrained=None, out=tmp_path / "d") == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "d")
