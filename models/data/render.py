"""Draw a scene with Pillow at any size: coordinates are fractions of the side, so they scale.

Objects are drawn in order, so later ones may partly cover earlier ones. Textures: ``solid``
fills the shape; ``striped`` and ``dotted`` lay a pale tint of the colour over a stripe or dot
pattern inside the shape (the colour stays dominant); ``outlined`` draws only the border.
Noisy backgrounds, pixel noise and blur come from the scene's own seed: the same scene and size
always give the same pixels.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from models.data.vocab import BACKGROUNDS, COLOURS, SceneObject

_BACKGROUND_NOISE = 18.0  # std of the per-pixel noise of a "noisy" background, in 0..255 units
_TINT = 0.6  # how far the pale pattern colour goes towards white


def _points(obj: SceneObject, size: int) -> list[tuple[float, float]]:
    cx, cy, r = obj.x * size, obj.y * size, obj.radius * size
    rot = math.radians(obj.rotation)
    if obj.shape == "square":
        polar = [(r * 1.25, math.pi / 4 + k * math.pi / 2) for k in range(4)]
    elif obj.shape == "diamond":
        polar = [(r * 1.15 * (1.0 if k % 2 else 0.75), k * math.pi / 2) for k in range(4)]
    elif obj.shape == "triangle":
        polar = [(r * 1.2, -math.pi / 2 + k * 2 * math.pi / 3) for k in range(3)]
    elif obj.shape == "hexagon":
        polar = [(r * 1.05, k * math.pi / 3) for k in range(6)]
    elif obj.shape == "star":
        polar = [
            (r * 1.2 if k % 2 == 0 else r * 0.5, -math.pi / 2 + k * math.pi / 5) for k in range(10)
        ]
    elif obj.shape == "cross":
        w = 0.36
        corners = [(w, 1), (w, w), (1, w), (1, -w), (w, -w), (w, -1)]
        corners += [(-u, -v) for u, v in corners]
        polar = [(r * math.hypot(u, v), math.atan2(v, u)) for u, v in corners]
    else:
        raise ValueError(f"no polygon for shape {obj.shape!r}")
    return [(cx + d * math.cos(a + rot), cy + d * math.sin(a + rot)) for d, a in polar]


_Ink = int | tuple[int, int, int] | None


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    obj: SceneObject,
    size: int,
    *,
    fill: _Ink = None,
    outline: _Ink = None,
    width: int = 1,
) -> None:
    if obj.shape == "circle":
        cx, cy, r = obj.x * size, obj.y * size, obj.radius * size
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=outline, width=width)
    else:
        draw.polygon(_points(obj, size), fill=fill, outline=outline, width=width)


@lru_cache(maxsize=16)
def _pattern(kind: str, size: int) -> Image.Image:
    """A full-size "L" mask (255 where the pale tint goes): diagonal stripes or a dot grid.

    Cached and never mutated: callers only read it through ImageChops.
    """
    period = max(3, round(size / 20))
    yy, xx = np.mgrid[0:size, 0:size]
    if kind == "striped":
        on = ((xx + yy) % period) < period / 2
    else:
        cx = (xx % period) - (period - 1) / 2
        cy = (yy % period) - (period - 1) / 2
        on = cx * cx + cy * cy <= (period / 3.2) ** 2
    return Image.fromarray((on * 255).astype(np.uint8))


def _background(name: str, size: int, rng: np.random.Generator) -> Image.Image:
    bg = BACKGROUNDS[name]
    if bg.kind == "plain":
        return Image.new("RGB", (size, size), bg.top)
    if bg.kind == "gradient":
        t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
        rows = (1 - t) * np.array(bg.top, np.float32) + t * np.array(bg.bottom, np.float32)
        pixels = np.broadcast_to(rows, (size, size, 3))
    else:
        noise = rng.normal(0.0, _BACKGROUND_NOISE, (size, size, 1)).astype(np.float32)
        pixels = np.array(bg.top, np.float32) + noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _draw_object(image: Image.Image, draw: ImageDraw.ImageDraw, obj: SceneObject) -> None:
    size = image.size[0]
    colour = COLOURS[obj.colour]
    if obj.texture == "outlined":
        width = max(1, round(obj.radius * size * 0.28))
        _draw_shape(draw, obj, size, outline=colour, width=width)
        return
    _draw_shape(draw, obj, size, fill=colour)
    if obj.texture == "solid":
        return
    mask = Image.new("L", (size, size), 0)
    _draw_shape(ImageDraw.Draw(mask), obj, size, fill=255)
    tint = tuple(round(c + (255 - c) * _TINT) for c in colour)
    image.paste(tint, mask=ImageChops.multiply(mask, _pattern(obj.texture, size)))


def render_scene(
    objects: tuple[SceneObject, ...],
    background: str,
    *,
    seed: int,
    noise: float = 0.0,
    blur: float = 0.0,
    size: int = 128,
) -> Image.Image:
    """An RGB ``size`` x ``size`` image. ``noise``: std of pixel noise (0..255 units);
    ``blur``: Gaussian blur radius as a fraction of the side."""
    if size < 8:
        raise ValueError("size must be >= 8")
    rng = np.random.default_rng(seed)
    image = _background(background, size, rng)
    draw = ImageDraw.Draw(image)
    for obj in objects:
        _draw_object(image, draw, obj)
    if blur > 0:
        image = image.filter(ImageFilter.GaussianBlur(blur * size))
    if noise > 0:
        pixels = np.asarray(image, dtype=np.float32)
        pixels = pixels + rng.normal(0.0, noise, pixels.shape).astype(np.float32)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image
