"""Image decoding and tensor preparation, matching the bundle manifest exactly.

Decoding never trusts the input: the pixel count is checked from the header before any pixel is
decoded, only raster formats that need no external program are opened, and every failure
becomes a typed :class:`ClipsearchError` so one bad upload fails alone.

``image_to_tensor`` mirrors OpenCLIP's PIL path (torchvision ``Resize(S)`` + ``CenterCrop(S)`` +
``Normalize``), including its rounding, so embeddings match the exported model's parity checks.

It lives in ``core`` because both sides must share it byte for byte: the encoder serves with it,
and ``models/`` (which may import only ``service.core``) trains and evaluates with it.
"""

from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.core.bundle.manifest import ImageTower
from service.core.errors import ClipsearchError, invalid, too_large, unsupported

# Raster formats decoded in-process: Pillow's own (AVIF needs Pillow built with libavif) and
# HEIF/HEIC through pillow-heif's libheif. EPS/PDF/PSD and friends are refused: EPS would run
# Ghostscript, and none of them is a photo format users upload for search.
SAFE_FORMATS: tuple[str, ...] = (
    "PNG",
    "JPEG",
    "MPO",
    "GIF",
    "WEBP",
    "BMP",
    "TIFF",
    "AVIF",
    "HEIF",
)
# ISO-BMFF brands (the ``ftyp`` box at offset 4) of HEIF stills and AVIF.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}
_WHITE = (255, 255, 255, 255)


_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def sniff_format(data: bytes) -> str | None:
    """The accepted format ``data`` claims by its magic bytes, if any."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in _AVIF_BRANDS:
            return "AVIF"
        if brand in _HEIF_BRANDS:
            return "HEIF"
    for magic, name in _SIGNATURES:
        if data.startswith(magic):
            return name
    return None


@functools.cache
def accepted_formats() -> tuple[str, ...]:
    """SAFE_FORMATS this Pillow build can open (WEBP needs libwebp, MPO a full plugin init,
    HEIF the pillow-heif plugin)."""
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
    except ImportError:  # an install without it simply does not accept HEIC
        pass
    Image.init()  # Image.open(formats=...) does not load plugins beyond the preinit set
    return tuple(f for f in SAFE_FORMATS if f in Image.OPEN)


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB, with transparency composited over white (as a browser shows it on a page)."""
    if img.mode.startswith("I") or img.mode == "F":
        # 16-bit greyscale: Pillow's convert() would clip to 255 instead of rescaling.
        arr = np.asarray(img, dtype=np.float64)
        wide = img.mode.startswith("I;16") or float(arr.max(initial=0)) > 255
        scaled = arr / 257.0 if wide else arr
        img = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE)
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode encoded image bytes to an upright RGB image (first frame of an animation).

    Raises ClipsearchError: ``invalid_input`` (empty, corrupt, truncated), ``unsupported_media``
    (not an image format we accept), ``payload_too_large`` (more than ``max_pixels`` pixels).
    """
    if not data:
        raise invalid("empty file")
    try:
        img = Image.open(io.BytesIO(data), formats=accepted_formats())
    except UnidentifiedImageError as exc:
        sniffed = sniff_format(data)
        if sniffed:
            # The signature says what it is, so this is damage, not an unknown format.
            raise invalid(f"corrupt {sniffed} file: its header cannot be read") from exc
        raise unsupported(
            "unrecognised image format; accepted: " + ", ".join(accepted_formats())
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise too_large(f"image has too many pixels: {exc}") from exc
    except Exception as exc:  # Pillow raises many types (SyntaxError, struct.error, ...)
        raise invalid(f"corrupt image header: {exc}") from exc

    width, height = img.size
    if width <= 0 or height <= 0:
        raise invalid(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        # Checked from the header, before a single pixel is decoded.
        raise too_large(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}",
            {"width": width, "height": height, "max_pixels": max_pixels},
        )
    try:
        with img:
            img.load()  # animated formats: the first frame, where open() leaves us
            upright = ImageOps.exif_transpose(img)
            return _to_rgb(upright)
    except ClipsearchError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise too_large(f"image has too many pixels: {exc}") from exc
    except Exception as exc:
        raise invalid(f"corrupt or truncated {img.format or 'image'} data: {exc}") from exc


def resize_and_crop(img: Image.Image, size: int, mode: str, interpolation: str) -> Image.Image:
    resample = _RESAMPLE[interpolation]
    if mode == "squash":
        return img if img.size == (size, size) else img.resize((size, size), resample)
    width, height = img.size
    # torchvision Resize(int): the short side becomes `size`, the long side is truncated.
    if width <= height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_w, new_h = int(size * width / height), size
    if (new_w, new_h) != (width, height):
        img = img.resize((new_w, new_h), resample)
    # torchvision CenterCrop rounding.
    top = round((new_h - size) / 2.0)
    left = round((new_w - size) / 2.0)
    if (new_w, new_h) != (size, size):
        img = img.crop((left, top, left + size, top + size))
    return img


_SCALE = np.float32(255.0)


def image_to_tensor(img: Image.Image, tower: ImageTower) -> np.ndarray:
    """float32 [3, S, S]: resize/crop per the manifest, scale to [0, 1], normalise, CHW.

    Each channel plane is filled from the uint8 pixels and scaled, shifted and divided in place
    with float32 scalars: the same operations, in the same order and precision, as
    ``((pixels / 255) - mean) / std`` over the whole HWC array followed by a transpose, so the
    result is bit for bit the same (the training side's ``normalise`` computes it that way),
    but with no temporary arrays and no broadcasting it costs about a fifth of the time
    (``clipsearch bench encoder --bundle models/zoo/photo``, ``ceiling.image.preprocess_ms``:
    normalise 0.21-0.22 ms against 0.93-1.06 ms at 224 px) — on a CPU node that was the largest
    share of an image's preprocessing, more than decoding and resizing together, and every
    served image, ingested photo and video frame pays it."""
    if img.mode != "RGB":
        img = _to_rgb(img)
    img = resize_and_crop(img, tower.image_size, tower.resize, tower.interpolation)
    pixels = np.asarray(img)  # uint8 [S, S, 3]
    out = np.empty((3, *pixels.shape[:2]), dtype=np.float32)
    for c in range(3):
        plane = out[c]
        plane[...] = pixels[:, :, c]
        plane /= _SCALE
        plane -= np.float32(tower.mean[c])
        plane /= np.float32(tower.std[c])
    return out


def preprocess_image(data: bytes, tower: ImageTower, max_pixels: int) -> np.ndarray:
    """Bytes → model input for one image (decode + tensor)."""
    return image_to_tensor(decode_image(data, max_pixels), tower)
