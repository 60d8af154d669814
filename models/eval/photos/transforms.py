"""Near-duplicate queries for image→image search: a centre crop, a mirror image, a re-encode.

Each starts from the photo as the service sees it — transparency composited on white, then RGB
(``service.core.bundle.preprocess`` does the same) — so only the transform differs from what
was indexed. Lossless outputs are PNG, so nothing but the transform changes the pixels; the
JPEG one is the point of its transform. Outputs are deterministic: same bytes in, same bytes out.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

from PIL import Image, ImageOps

CROP_AREA = 0.8
JPEG_QUALITY = 40
_WHITE = (255, 255, 255, 255)


def flatten(img: Image.Image) -> Image.Image:
    """RGB, transparency composited on white."""
    img.load()
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def centre_crop(img: Image.Image, area: float = CROP_AREA) -> Image.Image:
    """The centred box with ``area`` of the image's area and its aspect ratio."""
    side = math.sqrt(area)
    w, h = img.size
    cw, ch = max(1, round(w * side)), max(1, round(h * side))
    left, top = (w - cw) // 2, (h - ch) // 2
    return img.crop((left, top, left + cw, top + ch))


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(img: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


TRANSFORMS: dict[str, tuple[Callable[[Image.Image], bytes], str]] = {
    "crop": (lambda img: _png(centre_crop(img)), "image/png"),
    "flip": (lambda img: _png(ImageOps.mirror(img)), "image/png"),
    "jpeg40": (_jpeg, "image/jpeg"),
}
LABELS = {
    "crop": f"centre crop ({CROP_AREA:.0%} of the area)",
    "flip": "horizontal flip",
    "jpeg40": f"JPEG quality {JPEG_QUALITY}",
}


def near_duplicate(data: bytes, transform: str) -> tuple[bytes, str]:
    """``(bytes, content type)`` of ``transform`` applied to the encoded image ``data``."""
    encode, content_type = TRANSFORMS[transform]
    with Image.open(io.BytesIO(data)) as img:
        return encode(flatten(img)), content_type
