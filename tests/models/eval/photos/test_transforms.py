"""Near-duplicate transforms: what each does to the pixels, and that it is deterministic."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from models.eval.photos.transforms import TRANSFORMS, centre_crop, flatten, near_duplicate


def _encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _gradient(w: int = 120, h: int = 80) -> Image.Image:
    x = np.tile(np.linspace(0, 255, w, dtype=np.uint8), (h, 1))
    return Image.fromarray(np.stack([x, 255 - x, np.full_like(x, 90)], axis=-1), "RGB")


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_centre_crop_keeps_80_percent_of_the_area_centred() -> None:
    img = _gradient(200, 100)
    crop = centre_crop(img)
    w, h = crop.size
    assert abs(w * h / (200 * 100) - 0.8) < 0.01
    assert abs(w / h - 2.0) < 0.02
    left = (200 - w) // 2
    assert np.array_equal(np.asarray(crop), np.asarray(img)[(100 - h) // 2 :][:h, left : left + w])


def test_flip_mirrors_left_and_right() -> None:
    original = _gradient()
    flipped = _decode(near_duplicate(_encode(original), "flip")[0])
    assert np.array_equal(flipped, np.asarray(original)[:, ::-1])


def test_jpeg40_is_a_lossy_jpeg_of_the_same_size() -> None:
    original = _gradient()
    data, content_type = near_duplicate(_encode(original), "jpeg40")
    assert content_type == "image/jpeg"
    assert data[:3] == b"\xff\xd8\xff"
    decoded = _decode(data)
    assert decoded.shape == np.asarray(original).shape
    error = np.abs(decoded.astype(int) - np.asarray(original).astype(int)).mean()
    assert 0 < error < 10


def test_transparency_is_composited_on_white_as_the_service_does() -> None:
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    assert np.asarray(flatten(rgba)).min() == 255
    grey = Image.new("L", (4, 4), 7)
    assert flatten(grey).mode == "RGB"


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transforms_are_deterministic(name: str) -> None:
    data = _encode(_gradient(), "JPEG")
    assert near_duplicate(data, name) == near_duplicate(data, name)
