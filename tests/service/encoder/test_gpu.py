"""GPU paths of the engine: CUDA with io-binding, TensorRT with fp16, profiles and engine cache.

Marked ``gpu``: they run where onnxruntime-gpu sees a GPU (a lent GPU machine, a GPU CI runner)
and are skipped, with the reason, everywhere else.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from service.core.bundle.manifest import load_bundle
from service.core.config import EncoderSettings, Settings
from service.encoder.engine import EncoderEngine
from service.encoder.session import CUDA, TENSORRT

AVAILABLE = set(ort.get_available_providers())
pytestmark = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(CUDA not in AVAILABLE, reason="onnxruntime has no CUDA provider")
needs_trt = pytest.mark.skipif(
    TENSORRT not in AVAILABLE, reason="onnxruntime has no TensorRT provider"
)
TEXTS = ["a red circle", "two blue squares above a green triangle", "a yellow star"]


def png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buf, format="PNG")
    return buf.getvalue()


def embed(engine: EncoderEngine) -> tuple[np.ndarray, np.ndarray]:
    images = engine.embed_images([png((200, 20, 20)), png((20, 20, 200))])
    return engine.embed_texts(TEXTS).joint, np.stack(images)  # type: ignore[arg-type]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)  # rows are unit vectors


@pytest.fixture(scope="module")
def cpu_vectors(tiny_bundle_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    engine = EncoderEngine(load_bundle(tiny_bundle_dir), Settings(encoder={"provider": "cpu"}))
    return embed(engine)


@needs_cuda
@pytest.mark.parametrize("io_binding", [True, False])
def test_cuda_with_and_without_io_binding_matches_cpu(
    tiny_bundle_dir: Path, cpu_vectors: tuple[np.ndarray, np.ndarray], io_binding: bool
) -> None:
    settings = Settings(
        encoder=EncoderSettings(provider="cuda", require_gpu=True, io_binding=io_binding)
    )
    engine = EncoderEngine(load_bundle(tiny_bundle_dir), settings)
    assert engine.provider == CUDA
    engine.warmup()
    text, image = embed(engine)
    np.testing.assert_allclose(text, cpu_vectors[0], atol=1e-4)
    np.testing.assert_allclose(image, cpu_vectors[1], atol=1e-4)


@needs_trt
def test_tensorrt_fp16_with_profile_and_engine_cache(
    tiny_bundle_dir: Path, cpu_vectors: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    cache = tmp_path / "trt-cache"
    settings = Settings(
        encoder=EncoderSettings(
            provider="tensorrt", require_gpu=True, engine_cache_dir=cache, trt_batch="1:4:8"
        )
    )
    engine = EncoderEngine(load_bundle(tiny_bundle_dir), settings)
    assert engine.provider == TENSORRT
    options = engine._image.get_provider_options()[TENSORRT]
    assert options["trt_fp16_enable"] == "1"
    assert "pixel_values:8x3x" in options["trt_profile_max_shapes"]
    engine.warmup()
    text, image = embed(engine)
    assert cosines(text, cpu_vectors[0]).min() >= 0.999
    assert cosines(image, cpu_vectors[1]).min() >= 0.999
    built = sorted(p.name for p in cache.iterdir() if p.suffix == ".engine")
    assert built, list(cache.iterdir())
    # A restart reuses the cached engines instead of building new ones.
    again = EncoderEngine(load_bundle(tiny_bundle_dir), settings)
    again.warmup()
    assert sorted(p.name for p in cache.iterdir() if p.suffix == ".engine") == built
