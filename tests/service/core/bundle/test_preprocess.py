"""Preprocessing parity with a plain-numpy reference, and typed errors for every bad input."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
import pytest
from PIL import Image

from service.core.bundle.manifest import ImageTower
from service.core.bundle.preprocess import decode_image, image_to_tensor
from service.core.errors import ClipsearchError, ErrorType

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
LIMIT = 40_000_000


def tower(size: int = 32, **kwargs: Any) -> ImageTower:
    return ImageTower(
        file="image.onnx", image_size=size, mean=MEAN, std=STD, output_dim=64, **kwargs
    )


def encode(img: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def reference(rgb: np.ndarray) -> np.ndarray:
    x = rgb.astype(np.float64) / 255.0
    x = (x - np.array(MEAN)) / np.array(STD)
    return x.transpose(2, 0, 1)


def noise(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def px(img: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    value = img.getpixel(xy)
    assert isinstance(value, tuple)
    return value


def error_type(data: bytes, max_pixels: int = LIMIT) -> ErrorType:
    with pytest.raises(ClipsearchError) as info:
        decode_image(data, max_pixels)
    return info.value.type


def test_exact_parity_without_resize() -> None:
    img = noise(32, 32)
    out = image_to_tensor(decode_image(encode(img), LIMIT), tower())
    assert out.dtype == np.float32 and out.shape == (3, 32, 32) and out.flags.c_contiguous
    np.testing.assert_allclose(out, reference(np.asarray(img)), rtol=0, atol=1e-5)


def test_bit_for_bit_the_float32_whole_array_formula() -> None:
    """The per-plane in-place arithmetic is the float32 formula training normalises with
    (``models.train.dataset.normalise``), to the last bit, not merely close to it; and the
    tensor owns its memory (nothing aliases the decoded image)."""
    for seed, size in ((3, 32), (4, 224), (5, 7)):
        img = noise(size, size, seed=seed)
        out = image_to_tensor(img, tower(size))
        rgb = np.asarray(img, dtype=np.float32) / np.float32(255.0)
        whole = (rgb - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
        assert np.array_equal(out, whole.transpose(2, 0, 1))
        assert out.dtype == np.float32 and out.flags.c_contiguous and out.flags.owndata
    grey = image_to_tensor(Image.fromarray(np.full((8, 8), 200, np.uint8), "L"), tower(8))
    for c in range(3):  # each plane has its own channel's mean and std
        value = (np.float32(200) / np.float32(255) - np.float32(MEAN[c])) / np.float32(STD[c])
        assert np.all(grey[c] == value)


def test_parity_with_shortest_edge_resize_and_centre_crop() -> None:
    img = noise(64, 48, seed=1)
    out = image_to_tensor(decode_image(encode(img), LIMIT), tower())
    # torchvision Resize(32): short side 48 -> 32, long side int(32 * 64 / 48) = 42; crop 5 px.
    expected = img.resize((42, 32), Image.Resampling.BICUBIC).crop((5, 0, 37, 32))
    np.testing.assert_allclose(out, reference(np.asarray(expected)), rtol=0, atol=1e-5)


def test_parity_with_squash_and_bilinear() -> None:
    img = noise(50, 20, seed=2)
    out = image_to_tensor(img, tower(resize="squash", interpolation="bilinear"))
    expected = img.resize((32, 32), Image.Resampling.BILINEAR)
    np.testing.assert_allclose(out, reference(np.asarray(expected)), rtol=0, atol=1e-5)


def test_exif_orientation_is_applied() -> None:
    # Stored landscape: red left half, blue right half. Orientation 6 = shown rotated 90° CW.
    stored = Image.new("RGB", (40, 20), (255, 0, 0))
    stored.paste((0, 0, 255), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    shown = decode_image(encode(stored, "JPEG", exif=exif, quality=95), LIMIT)
    assert shown.size == (20, 40)
    top, bottom = px(shown, (10, 5)), px(shown, (10, 35))
    assert top[0] > 200 and top[2] < 60  # red on top
    assert bottom[2] > 200 and bottom[0] < 60  # blue at the bottom


def test_transparency_is_composited_over_white() -> None:
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    rgba.putpixel((1, 0), (0, 0, 0, 128))
    out = decode_image(encode(rgba), LIMIT)
    assert out.mode == "RGB"
    assert px(out, (3, 3)) == (255, 255, 255)
    assert px(out, (0, 0)) == (255, 0, 0)
    assert all(120 <= c <= 135 for c in px(out, (1, 0)))


def test_palette_with_transparency_and_greyscale_modes_become_rgb() -> None:
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 255, 0] + [0, 0, 255] * 255)
    pal.putpixel((0, 0), 1)
    palette_png = encode(pal, transparency=0)
    grey = Image.fromarray(np.full((4, 4), 77, np.uint8), "L")
    deep = Image.fromarray(np.full((4, 4), 65535, np.uint16))
    one_bit = Image.new("1", (4, 4), 1)
    for data, pixel in [
        (palette_png, (255, 255, 255)),
        (encode(grey), (77, 77, 77)),
        (encode(deep), (255, 255, 255)),
        (encode(one_bit), (255, 255, 255)),
    ]:
        img = decode_image(data, LIMIT)
        assert img.mode == "RGB" and px(img, (2, 2)) == pixel
        assert image_to_tensor(img, tower(4)).shape == (3, 4, 4)
    assert px(decode_image(palette_png, LIMIT), (0, 0)) == (0, 0, 255)


def test_animation_uses_the_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    r, g, b = px(decode_image(buf.getvalue(), LIMIT), (4, 4))
    assert r > 200 and g < 50 and b < 50


def test_empty_bytes_are_invalid() -> None:
    with pytest.raises(ClipsearchError, match="empty file") as info:
        decode_image(b"", LIMIT)
    assert info.value.type is ErrorType.invalid_input


def test_garbage_and_refused_formats_are_unsupported() -> None:
    assert error_type(b"definitely not an image" * 10) is ErrorType.unsupported_media
    # Pillow reads PPM and EPS, but they are not upload formats we accept.
    assert error_type(b"P6 2 2 255\n" + bytes(12)) is ErrorType.unsupported_media
    assert error_type(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 1 1\n") is (
        ErrorType.unsupported_media
    )


def test_truncated_png_is_invalid() -> None:
    data = encode(noise(64, 64))
    with pytest.raises(ClipsearchError) as info:
        decode_image(data[: len(data) // 2], LIMIT)
    assert info.value.type is ErrorType.invalid_input
    assert "truncated" in info.value.message or "corrupt" in info.value.message


def _with_ihdr_size(png: bytes, width: int, height: int) -> bytes:
    """Rewrite the IHDR chunk (always the first) to claim another size; the pixels stay tiny."""
    start = 8 + 8  # signature, then the chunk's length and type
    ihdr = struct.pack(">II", width, height) + png[start + 8 : start + 13]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return png[:start] + ihdr + crc + png[start + 17 :]


@pytest.mark.parametrize("side", [7_000, 20_000])  # over our limit; over Pillow's own bomb guard
def test_too_many_pixels_refused_from_the_header(side: int) -> None:
    bomb = _with_ihdr_size(encode(Image.new("1", (8, 8))), side, side)
    assert len(bomb) < 200
    with pytest.raises(ClipsearchError) as info:
        decode_image(bomb, LIMIT)
    # Anything but payload_too_large would mean the pixels were decoded first.
    assert info.value.type is ErrorType.payload_too_large


def test_pixel_limit_is_the_configured_one() -> None:
    data = encode(noise(20, 10))
    assert decode_image(data, 200).size == (20, 10)
    assert error_type(data, max_pixels=199) is ErrorType.payload_too_large


def test_known_signature_with_a_broken_header_is_invalid_not_unsupported() -> None:
    assert error_type(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40) is ErrorType.invalid_input
    assert error_type(b"GIF89a" + b"\xff" * 3) is ErrorType.invalid_input


@pytest.mark.parametrize("fmt", ["WEBP", "AVIF", "HEIF"])
def test_modern_photo_formats_decode(fmt: str) -> None:
    from service.core.bundle.preprocess import accepted_formats, sniff_format

    assert fmt in accepted_formats()
    img = Image.new("RGB", (40, 30), (200, 30, 30))
    img.paste((30, 30, 200), (20, 0, 40, 30))
    data = encode(img, fmt, quality=95)
    assert sniff_format(data) == fmt
    got = decode_image(data, LIMIT)
    assert got.size == (40, 30)
    r, _, b = px(got, (5, 15))
    assert r > 160 and b < 80  # lossy codecs: the colour, not the exact value
    r, _, b = px(got, (35, 15))
    assert b > 160 and r < 80
    # Damaged: the brand says what it is, so it is corrupt, not an unknown format.
    assert error_type(data[:40]) is ErrorType.invalid_input
    # Over the pixel limit: refused from the header.
    assert error_type(data, max_pixels=40 * 30 - 1) is ErrorType.payload_too_large


def test_animated_webp_uses_the_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 255, 0)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="WEBP", save_all=True, append_images=frames[1:], lossless=True)
    assert px(decode_image(buf.getvalue(), LIMIT), (4, 4)) == (255, 0, 0)
