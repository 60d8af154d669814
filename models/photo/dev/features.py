"""What the dev measurements are computed from: dev pixels through the serving preprocessing,
backbone logits and pooled features (PyTorch), and texts through a text tower."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from models.photo.dev.devset import DevPhoto, photo_file
from models.photo.tower import LITE_MEAN, LITE_STD, VARIANTS, Variant, classify, load_backbone
from service.core.bundle.manifest import ImageTower, ResizeMode
from service.core.bundle.preprocess import decode_image, image_to_tensor

logger = logging.getLogger(__name__)
MAX_PIXELS = 40_000_000  # the largest dev wallpaper is 5120x2880


def image_spec(variant: Variant, resize: ResizeMode) -> ImageTower:
    """The manifest's image tower entry, without the parts that do not affect pixels."""
    return ImageTower(
        file="image.onnx",
        image_size=VARIANTS[variant].image_size,
        resize=resize,
        interpolation="bicubic",
        mean=LITE_MEAN,
        std=LITE_STD,
        output_dim=384,
    )


def dev_pixels(root: Path, photos: Sequence[DevPhoto], spec: ImageTower) -> np.ndarray:
    """float32 [n, 3, S, S], decoded exactly as serving decodes an upload."""
    out = []
    for photo in photos:
        data = photo_file(root, photo).read_bytes()
        out.append(image_to_tensor(decode_image(data, MAX_PIXELS), spec))
    return np.stack(out)


@torch.inference_mode()
def backbone_outputs(
    variant: Variant, pixels: np.ndarray, batch: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """(logits [n, 1000], pooled features [n, F]) of the pretrained classifier."""
    net = load_backbone(variant)
    logits, pooled = [], []
    for start in range(0, len(pixels), batch):
        feats, scores = classify(net, torch.from_numpy(pixels[start : start + batch]))
        pooled.append(feats.numpy())
        logits.append(scores.numpy())
    return np.concatenate(logits), np.concatenate(pooled)


def cached_backbone(
    cache: Path, root: Path, photos: Sequence[DevPhoto], variant: Variant, resize: ResizeMode
) -> tuple[np.ndarray, np.ndarray]:
    """backbone_outputs, kept in ``cache`` (keyed by variant, resize and the photo list)."""
    key = hashlib.sha256("\n".join(p.path for p in photos).encode()).hexdigest()[:12]
    path = cache / f"{variant}-{resize}-{key}.npz"
    if path.is_file():
        with np.load(path) as saved:
            return saved["logits"], saved["pooled"]
    logger.info("dev backbone outputs: %s, %s", variant, resize)
    logits, pooled = backbone_outputs(
        variant, dev_pixels(root, photos, image_spec(variant, resize))
    )
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, logits=logits, pooled=pooled)
    return logits, pooled
