"""The engine on the real tiny bundle and the real ONNX Runtime (CPU here)."""

from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from models.data.scenes import generate_scenes
from service.core.bundle.manifest import Bundle, load_bundle, sha256_file
from service.core.config import EncoderSettings, LimitsSettings, Settings
from service.core.embeddings import ImageEmbedding
from service.core.errors import ClipsearchError, ErrorType
from service.encoder.engine import EncoderEngine
from service.encoder.session import CPU, batch_profile, create_session, provider_chain

HAS_GPU = bool(
    {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(ort.get_available_providers())
)
cpu_only = pytest.mark.skipif(HAS_GPU, reason="checks the behaviour of a CPU-only machine")


@pytest.fixture(scope="module")
def bundle(tiny_bundle_dir: Path) -> Bundle:
    return load_bundle(tiny_bundle_dir)


@pytest.fixture(scope="module")
def engine(bundle: Bundle) -> EncoderEngine:
    settings = Settings(
        encoder=EncoderSettings(provider="cpu", bulk={"max_batch_size": 4}),
        limits=LimitsSettings(max_text_chars=100, max_upload_bytes=200_000),
    )
    eng = EncoderEngine(bundle, settings)
    eng.warmup()
    return eng


def vec(result: np.ndarray | ClipsearchError) -> np.ndarray:
    assert isinstance(result, np.ndarray), result
    return result


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def scene_pngs(n: int) -> list[bytes]:
    return [png(s.image) for s in generate_scenes(n, seed=11)]


TEXTS = [
    "a red circle",
    "a large red circle at the top left",
    "a small blue square",
    "Two objects on a white background: a big green triangle on the left side.",
    "an unusual word: chrysanthemum",
    "a",
]


def test_text_shapes_norms_and_dims(engine: EncoderEngine) -> None:
    out = engine.embed_texts(TEXTS)
    assert out.joint.shape == (len(TEXTS), 64) and out.joint.dtype == np.float32
    assert out.sentence.shape == (len(TEXTS), 128) and out.sentence.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out.joint, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out.sentence, axis=1), 1.0, atol=1e-5)


def test_text_is_deterministic_and_batch_equals_singles(engine: EncoderEngine) -> None:
    batch = engine.embed_texts(TEXTS)  # 6 texts, max_batch_size 4: two chunks
    again = engine.embed_texts(TEXTS)
    np.testing.assert_array_equal(batch.joint, again.joint)
    for i, text in enumerate(TEXTS):
        single = engine.embed_texts([text])
        np.testing.assert_allclose(single.joint[0], batch.joint[i], atol=1e-6)
        np.testing.assert_allclose(single.sentence[0], batch.sentence[i], atol=1e-6)


def test_lexical_similarity_in_both_spaces(engine: EncoderEngine) -> None:
    out = engine.embed_texts(TEXTS[:3])
    for space in (out.joint, out.sentence):
        query, close, far = space
        assert float(query @ close) > float(query @ far) + 0.2


def test_images_shapes_norms_and_batch_equals_singles(engine: EncoderEngine) -> None:
    images = scene_pngs(6)
    batch = engine.embed_images(images)
    assert len(batch) == 6
    for data, result in zip(images, batch, strict=True):
        v = vec(result)
        assert v.shape == (64,) and v.dtype == np.float32
        assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-5
        [single] = engine.embed_images([data])
        np.testing.assert_allclose(vec(single), v, atol=1e-6)


def test_similar_images_get_similar_vectors(engine: EncoderEngine) -> None:
    scene = generate_scenes(1, seed=4)[0]
    background = scene.image.getpixel((0, 0))
    assert isinstance(background, tuple)
    shifted = scene.image.rotate(0, translate=(2, 1), fillcolor=background)
    other = generate_scenes(8, seed=4)[1:]
    results = engine.embed_images([png(scene.image), png(shifted)] + [png(s.image) for s in other])
    base, near, *rest = [vec(r) for r in results]
    assert float(base @ near) > 0.95
    assert float(base @ near) > max(float(base @ r) for r in rest)


def test_one_corrupt_image_fails_alone(engine: EncoderEngine) -> None:
    good = scene_pngs(3)
    results = engine.embed_images([good[0], b"\x89PNG\r\n\x1a\n broken", good[1], b"", good[2]])
    assert [type(r).__name__ for r in results] == [
        "ndarray",
        "ClipsearchError",
        "ndarray",
        "ClipsearchError",
        "ndarray",
    ]
    assert results[1].type is ErrorType.invalid_input  # type: ignore[union-attr]
    assert results[3].type is ErrorType.invalid_input  # type: ignore[union-attr]
    expected = engine.embed_images(good)
    for got, want in zip([results[0], results[2], results[4]], expected, strict=True):
        np.testing.assert_allclose(vec(got), vec(want), atol=1e-6)


def test_oversized_upload_fails_alone(engine: EncoderEngine) -> None:
    big = png(Image.fromarray(np.random.default_rng(0).integers(0, 256, (400, 400, 3), np.uint8)))
    assert len(big) > 200_000
    small, too_big = engine.embed_images([scene_pngs(1)[0], big])
    assert isinstance(small, np.ndarray)
    assert isinstance(too_big, ClipsearchError) and too_big.type is ErrorType.payload_too_large


@pytest.mark.parametrize("text", ["", "   \n\t"])
def test_empty_text_rejected(engine: EncoderEngine, text: str) -> None:
    with pytest.raises(ClipsearchError, match="text 1 is empty") as info:
        engine.embed_texts(["fine", text])
    assert info.value.type is ErrorType.invalid_input


def test_over_long_text_rejected_with_the_limit(engine: EncoderEngine) -> None:
    engine.embed_texts(["x" * 100])
    with pytest.raises(ClipsearchError, match="the limit is 100") as info:
        engine.embed_texts(["x" * 101])
    assert info.value.type is ErrorType.invalid_input
    assert info.value.detail == {"index": 0, "length": 101, "max_text_chars": 100}


def test_long_text_within_chars_is_truncated_to_max_tokens(bundle: Bundle) -> None:
    eng = EncoderEngine(bundle, Settings())
    words = " ".join(["red circle"] * 100)
    out = eng.embed_texts([words])
    assert out.joint.shape == (1, 64)


def test_empty_batches(engine: EncoderEngine) -> None:
    out = engine.embed_texts([])
    assert out.joint.shape == (0, 64) and out.sentence.shape == (0, 128)
    assert engine.embed_images([]) == []


def test_readiness_follows_warmup(bundle: Bundle) -> None:
    eng = EncoderEngine(bundle, Settings())
    assert not eng.ready
    eng.warmup()
    assert eng.ready
    eng.close()
    assert not eng.ready


def test_info(engine: EncoderEngine) -> None:
    info = engine.info()
    assert info.bundle == "tiny-test@0.1.0"
    assert info.spaces == {"image": 64, "caption": 64, "description": 128}
    assert info.trained is False and info.max_text_tokens == 64


@cpu_only
def test_provider_is_logged(bundle: Bundle, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="service.encoder.session"):
        eng = EncoderEngine(bundle, Settings())
    assert eng.provider == CPU and eng.info().provider == CPU
    assert any(CPU in r.getMessage() and "image.onnx" in r.getMessage() for r in caplog.records)


@cpu_only
@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_explicit_unavailable_provider_raises(bundle: Bundle, provider: str) -> None:
    settings = Settings(encoder=EncoderSettings(provider=provider))  # type: ignore[arg-type]
    with pytest.raises(ClipsearchError, match="not available") as info:
        EncoderEngine(bundle, settings)
    assert info.value.type is ErrorType.unavailable


@cpu_only
def test_require_gpu_raises_on_cpu(bundle: Bundle) -> None:
    with pytest.raises(ClipsearchError, match="require_gpu") as info:
        EncoderEngine(bundle, Settings(encoder=EncoderSettings(require_gpu=True)))
    assert info.value.type is ErrorType.unavailable


def test_provider_chain_order_and_options(tmp_path: Path) -> None:
    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", CPU]
    settings = EncoderSettings(engine_cache_dir=tmp_path / "trt")
    chain = provider_chain(settings, available)
    assert [name for name, _ in chain] == available
    assert chain[0][1]["trt_fp16_enable"] == "True"
    assert chain[0][1]["trt_engine_cache_path"] == str(tmp_path / "trt")
    assert (tmp_path / "trt").is_dir()
    profile = batch_profile(
        EncoderSettings(trt_batch="1:8:32"),
        {"pixel_values": (3, 80, 80), "input_ids": (64,), "attention_mask": (64,)},
    )
    options = provider_chain(settings, available, profile)[0][1]
    assert options["trt_profile_min_shapes"] == (
        "pixel_values:1x3x80x80,input_ids:1x1,attention_mask:1x1"
    )
    assert options["trt_profile_opt_shapes"].startswith("pixel_values:8x3x80x80,input_ids:8x16")
    assert options["trt_profile_max_shapes"].endswith("attention_mask:32x64")
    with pytest.raises(ValueError, match="MIN <= OPT <= MAX"):
        EncoderSettings(trt_batch="8:4:16")
    cuda_only = provider_chain(EncoderSettings(provider="cuda"), ["CUDAExecutionProvider", CPU])
    assert [name for name, _ in cuda_only] == ["CUDAExecutionProvider", CPU]
    assert [n for n, _ in provider_chain(EncoderSettings(), ["AzureExecutionProvider", CPU])] == [
        CPU
    ]


def test_bad_onnx_file_is_bundle_invalid(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ClipsearchError) as info:
        create_session(bad, EncoderSettings())
    assert info.value.type is ErrorType.bundle_invalid


def test_description_embedder_from_its_own_onnx_file(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    """A bundle may name a separate description model; here the same graph, to compare."""
    root = Path(shutil.copytree(tiny_bundle_dir, tmp_path / "separate"))
    raw = json.loads((root / "manifest.json").read_text())
    raw["text_tower"]["sentence_output_name"] = None
    raw["text_tower"]["sentence_dim"] = None
    raw["description_embedder"].update(
        source="onnx", file="text.onnx", tokenizer="tokenizer.json", output_name="sentence_embeds"
    )
    (root / "manifest.json").write_text(json.dumps(raw))
    texts = ["a red circle", "three objects on a grey background"]
    separate = EncoderEngine(load_bundle(root), Settings()).embed_texts(texts)
    shared = EncoderEngine(load_bundle(tiny_bundle_dir), Settings()).embed_texts(texts)
    np.testing.assert_allclose(separate.sentence, shared.sentence, atol=1e-6)
    np.testing.assert_allclose(separate.joint, shared.joint, atol=1e-6)


def test_manifest_naming_a_missing_output_is_bundle_invalid(
    tiny_bundle_dir: Path, tmp_path: Path
) -> None:
    root = Path(shutil.copytree(tiny_bundle_dir, tmp_path / "renamed"))
    raw = json.loads((root / "manifest.json").read_text())
    raw["image_tower"]["output_name"] = "embeddings"
    (root / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ClipsearchError, match="embeddings") as info:
        EncoderEngine(load_bundle(root), Settings())
    assert info.value.type is ErrorType.bundle_invalid


def test_a_labelled_bundle_returns_visual_features_and_named_classes(
    tiny_labelled_bundle_dir: Path,
) -> None:
    engine = EncoderEngine(load_bundle(tiny_labelled_bundle_dir), Settings())
    red, blue, bad = engine.encode_images(
        [_png_colour((220, 30, 30)), _png_colour((30, 40, 220)), b"nope"]
    )
    assert isinstance(bad, ClipsearchError)
    assert isinstance(red, ImageEmbedding) and isinstance(blue, ImageEmbedding)
    assert red.labels[0].name == "red scene" and blue.labels[0].name == "blue scene"
    assert red.labels[0].broader == ("coloured scene", "scene")
    assert red.labels[0].score >= red.labels[1].score
    assert red.visual is not None and red.visual.shape == (48,)
    assert np.isclose(np.linalg.norm(red.visual), 1.0, atol=1e-5)
    # embed_images is the joint vector alone, as for any bundle.
    np.testing.assert_array_equal(engine.embed_images([_png_colour((220, 30, 30))])[0], red.joint)
    assert engine.info().spaces["visual"] == 48


def test_labels_outside_the_class_list_are_a_bundle_error(
    tiny_labelled_bundle_dir: Path, tmp_path: Path
) -> None:
    broken = Path(shutil.copytree(tiny_labelled_bundle_dir, tmp_path / "b"))
    labels = json.loads((broken / "labels.json").read_text())
    labels["classes"] = labels["classes"][:1]  # the tower names seven classes
    (broken / "labels.json").write_text(json.dumps(labels))
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["files"]["labels.json"] = sha256_file(broken / "labels.json")
    (broken / "manifest.json").write_text(json.dumps(manifest))
    engine = EncoderEngine(load_bundle(broken), Settings())
    with pytest.raises(ClipsearchError) as err:
        engine.encode_images([_png_colour((30, 40, 220))])
    assert err.value.type is ErrorType.bundle_invalid and "outside" in err.value.message


def _png_colour(rgb: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), rgb).save(buf, format="PNG")
    return buf.getvalue()
