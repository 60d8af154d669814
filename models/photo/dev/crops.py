"""Backbone outputs for the crop, flip and ensemble study (``python -m models.photo.dev crops``).

Per dev photo, decoded and resized exactly as serving does (shortest-edge centre crop, bicubic):

- ``lite0`` at 224 px: the whole picture (``w224``) and its mirror image (``f224``);
- ``lite0`` at 336 px: the whole picture seen at 336 (``w336``: the backbone is fully
  convolutional with global pooling, so a larger input is a closer look at the same picture) and
  five 224 px crops of it (``c336``: four overlapping corners and the centre, :func:`crop_views`);
- ``lite2`` at 260 px, whole and mirrored (``w260``, ``f260``), and ``lite0`` on the same 260 px
  input (``l0w260``): an ensemble graph has one input size;
- the colour shares of each input size, and the pooled features of each whole view for the
  near-duplicate copy (:func:`models.photo.evaluate.near_duplicate`) as well as the original.

Everything is cached in one ``.npz`` per photo list.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from models.photo.colour import ColourNames
from models.photo.dev.devset import DevPhoto, photo_file
from models.photo.dev.features import MAX_PIXELS, image_spec
from models.photo.evaluate import near_duplicate
from models.photo.tower import LITE_MEAN, LITE_STD, classify, crop_views, load_backbone
from service.core.bundle.preprocess import decode_image, image_to_tensor

logger = logging.getLogger(__name__)
BATCH = 16
SIZES = (224, 260, 336)


@torch.inference_mode()
def _batch(
    nets: dict[str, torch.nn.Module],
    colours: dict[int, ColourNames],
    px: dict[int, torch.Tensor],
    dup: dict[int, torch.Tensor],
) -> dict[str, np.ndarray]:
    lite0, lite2 = nets["lite0"], nets["lite2"]
    n = px[224].shape[0]
    out: dict[str, np.ndarray] = {}
    for name, net, size in (("w224", lite0, 224), ("w336", lite0, 336), ("l0w260", lite0, 260)):
        pooled, logits = classify(net, px[size])
        out[name], out[name + "_pooled"] = logits.numpy(), pooled.numpy()
        out[name + "_dup"] = classify(net, dup[size])[0].numpy()
    pooled, logits = classify(lite2, px[260])
    out["w260"], out["w260_pooled"] = logits.numpy(), pooled.numpy()
    out["w260_dup"] = classify(lite2, dup[260])[0].numpy()
    out["f224"] = classify(lite0, px[224].flip(-1))[1].numpy()
    out["f260"] = classify(lite2, px[260].flip(-1))[1].numpy()
    crops = torch.cat(crop_views(px[336], 224))  # [5n, 3, 224, 224], view-major
    out["c336"] = classify(lite0, crops)[1].reshape(5, n, -1).transpose(0, 1).numpy()
    for size in SIZES:
        out[f"shares{size}"] = colours[size](px[size]).numpy()
    return out


def crop_features(cache: Path, root: Path, photos: Sequence[DevPhoto]) -> dict[str, np.ndarray]:
    """The arrays named in the module docstring, [n, ...] in photo order (``c336``: [n, 5, C])."""
    key = hashlib.sha256("\n".join(p.path for p in photos).encode()).hexdigest()[:12]
    path = cache / f"crops-{key}.npz"
    if path.is_file():
        with np.load(path) as saved:
            return {k: saved[k] for k in saved.files}
    logger.info("dev backbone outputs for the crop study (%d photos)", len(photos))
    nets = {v: load_backbone(v) for v in ("lite0", "lite2")}
    specs = {
        s: image_spec("lite0", "shortest_edge_center_crop").model_copy(update={"image_size": s})
        for s in SIZES
    }
    colours = {s: ColourNames(s, LITE_MEAN, LITE_STD) for s in SIZES}
    parts: dict[str, list[np.ndarray]] = {}
    px: dict[int, list[np.ndarray]] = {s: [] for s in SIZES}
    dup: dict[int, list[np.ndarray]] = {s: [] for s in SIZES}
    for i, photo in enumerate(photos):
        img = decode_image(photo_file(root, photo).read_bytes(), MAX_PIXELS)
        copy = near_duplicate(img)
        for s in SIZES:
            px[s].append(image_to_tensor(img, specs[s]))
            dup[s].append(image_to_tensor(copy, specs[s]))
        if len(px[224]) == BATCH or i == len(photos) - 1:
            batch = _batch(
                nets,
                colours,
                {s: torch.from_numpy(np.stack(v)) for s, v in px.items()},
                {s: torch.from_numpy(np.stack(v)) for s, v in dup.items()},
            )
            for k, v in batch.items():
                parts.setdefault(k, []).append(v)
            px, dup = {s: [] for s in SIZES}, {s: [] for s in SIZES}
            logger.info("crop study: %d of %d photos", i + 1, len(photos))
    out = {k: np.concatenate(v) for k, v in parts.items()}
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)  # type: ignore[arg-type]
    return out
