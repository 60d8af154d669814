"""The eval's videos, made here with PyAV: one shot per photo, each ``SHOT_S`` seconds of a slow
zoom into the photo (so frames differ, as in a real clip), 320x240 at 5 fps. Shots line up with
the gateway's fixed 5 s segments, so segment ``n`` shows photo ``n``."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
from av.video.stream import VideoStream
from PIL import Image

SHOT_S = 5.0
FPS = 5
WIDTH, HEIGHT = 320, 240
ZOOM = 0.15  # the last frame of a shot shows the middle 85 % of the first


class VideoUnavailable(RuntimeError):
    """This PyAV build can encode none of the codecs tried."""


def _encoder() -> str:
    for name in ("libx264", "mpeg4", "libvpx-vp9"):
        try:
            av.codec.Codec(name, "w")
        except Exception:
            continue
        return name
    raise VideoUnavailable("PyAV here encodes none of libx264, mpeg4, libvpx-vp9")


def _cover(image: Image.Image, zoom: float) -> np.ndarray:
    """``image`` cropped to 4:3 around its centre, ``zoom`` of it cut away, at WIDTHxHEIGHT."""
    w, h = image.size
    cw, ch = (w, w * HEIGHT / WIDTH) if w / h < WIDTH / HEIGHT else (h * WIDTH / HEIGHT, h)
    cw, ch = cw * (1 - zoom), ch * (1 - zoom)
    left, top = (w - cw) / 2, (h - ch) / 2
    box = (round(left), round(top), round(left + cw), round(top + ch))
    return np.asarray(image.crop(box).resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR))


def make_video(path: Path, shots: Sequence[bytes]) -> Path:
    """Write a video of ``shots`` (image bytes, one shot each) to ``path`` (.mp4)."""
    frames_per_shot = round(SHOT_S * FPS)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(_encoder(), rate=FPS)
        assert isinstance(stream, VideoStream)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for data in shots:
            image = Image.open(io.BytesIO(data)).convert("RGB")
            for i in range(frames_per_shot):
                pixels = _cover(image, ZOOM * i / frames_per_shot)
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
