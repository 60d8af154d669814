"""Two additions to the chosen ConSE settings, measured on the dev set: class evidence from the
whole picture plus its four quadrants (``views=5``), and the colour term (models/photo/colour.py).

Everything goes through the same functions as the exported graph (:func:`split_views`,
:func:`mix_views`, :class:`ColourNames`, :func:`add_colour`), on dev pixels prepared as serving
prepares them: one view from the 224 px centre crop, five views from the 448 px one. The
backbone outputs are cached (one ``.npz`` per variant and photo list).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.photo.colour import COLOUR_TERMS, ColourNames
from models.photo.dev.devset import (
    DevPhoto,
    DevQuery,
    Scores,
    criterion,
    macro,
    per_query,
    photo_file,
    score_groups,
)
from models.photo.dev.features import MAX_PIXELS, image_spec
from models.photo.evaluate import near_duplicate
from models.photo.tower import (
    LITE_MEAN,
    LITE_STD,
    VARIANTS,
    Variant,
    add_colour,
    classify,
    conse_embed,
    load_backbone,
    mix_views,
    split_views,
)
from service.core.bundle.preprocess import decode_image, image_to_tensor

logger = logging.getLogger(__name__)
BATCH = 16
# "one": the graph's input is the view; "five": twice the size, split by split_views.
ARRAYS = (
    "logits1",
    "pooled1",
    "shares1",
    "dup_pooled1",
    "logits5",
    "pooled5",
    "shares5",
    "dup_pooled5",
)


@torch.inference_mode()
def _batch_outputs(
    net: torch.nn.Module, colour: ColourNames, batch: dict[str, list[np.ndarray]]
) -> dict[str, np.ndarray]:
    one = torch.from_numpy(np.stack(batch["one"]))
    five = torch.from_numpy(np.stack(batch["five"]))
    n = one.shape[0]
    pooled1, logits1 = classify(net, one)
    whole, quadrants = split_views(five)
    pooled5, logits5 = classify(net, torch.cat([whole, *quadrants]))
    dup1, _ = classify(net, torch.from_numpy(np.stack(batch["dup_one"])))
    dup5, _ = classify(net, split_views(torch.from_numpy(np.stack(batch["dup_five"])))[0])
    return {
        "logits1": logits1.numpy(),
        "pooled1": pooled1.numpy(),
        "shares1": colour(one).numpy(),
        "dup_pooled1": dup1.numpy(),
        "logits5": logits5.reshape(5, n, -1).transpose(0, 1).numpy(),
        "pooled5": pooled5.reshape(5, n, -1).transpose(0, 1).numpy(),
        "shares5": colour(whole).numpy(),
        "dup_pooled5": dup5.numpy(),
    }


def view_features(
    cache: Path, root: Path, photos: Sequence[DevPhoto], variant: Variant
) -> dict[str, np.ndarray]:
    """Backbone logits and pooled features for one view and for five ([n, 5, ...], the whole
    picture first), colour shares of the one view and of the five's whole picture, and the
    near-duplicates' pooled features."""
    key = hashlib.sha256("\n".join(p.path for p in photos).encode()).hexdigest()[:12]
    path = cache / f"{variant}-views-{key}.npz"
    if path.is_file():
        with np.load(path) as saved:
            return {k: saved[k] for k in ARRAYS}
    logger.info("dev backbone outputs for one and five views: %s", variant)
    size = VARIANTS[variant].image_size
    one = image_spec(variant, "shortest_edge_center_crop")
    five = one.model_copy(update={"image_size": 2 * size})
    net, colour = load_backbone(variant), ColourNames(size, LITE_MEAN, LITE_STD)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ARRAYS}
    batch: dict[str, list[np.ndarray]] = {"one": [], "five": [], "dup_one": [], "dup_five": []}
    for i, photo in enumerate(photos):
        img = decode_image(photo_file(root, photo).read_bytes(), MAX_PIXELS)
        dup = near_duplicate(img)
        for name, im, spec in (("", img, one), ("dup_", dup, one)):
            batch[name + "one"].append(image_to_tensor(im, spec))
            batch[name + "five"].append(image_to_tensor(im, five))
        if len(batch["one"]) == BATCH or i == len(photos) - 1:
            for k, v in _batch_outputs(net, colour, batch).items():
                parts[k].append(v)
            batch = {k: [] for k in batch}
    out = {k: np.concatenate(v) for k, v in parts.items()}
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)  # type: ignore[arg-type]
    return out


@dataclass(frozen=True)
class ViewMix:
    """How the five views' class probabilities become one distribution (or one view only)."""

    name: str  # "one", "mean", "max" or "gated"
    gate: float = 0.0
    weight: float = 0.0

    def label(self) -> str:
        if self.name == "gated":
            return f"five, gated (gate {self.gate:g}, weight {self.weight:g})"
        return {"one": "one view", "mean": "five, mean", "max": "five, max"}[self.name]

    def shares(self, feats: dict[str, np.ndarray]) -> np.ndarray:
        return feats["shares1" if self.name == "one" else "shares5"]

    def log_probs(self, feats: dict[str, np.ndarray]) -> torch.Tensor:
        if self.name == "one":
            return torch.from_numpy(feats["logits1"]).log_softmax(dim=-1)
        probs = torch.from_numpy(feats["logits5"]).softmax(dim=-1)  # [n, 5, C]
        if self.name == "gated":
            return mix_views(
                probs[:, 0], probs[:, 1:].transpose(0, 1), self.gate, self.weight
            ).log()
        mixed = probs.mean(dim=1) if self.name == "mean" else probs.amax(dim=1)
        return (mixed / mixed.sum(dim=-1, keepdim=True)).log()


def image_embeds(
    log_probs: torch.Tensor,
    table: torch.Tensor,
    shares: np.ndarray,
    colours: np.ndarray,
    weight: float,
    *,
    top_k: int,
    temperature: float,
) -> np.ndarray:
    image = conse_embed(log_probs, table, top_k=top_k, temperature=temperature)
    if weight > 0:
        image = add_colour(image, torch.from_numpy(shares), torch.from_numpy(colours), weight)
    return image.numpy()


@dataclass(frozen=True)
class Measured:
    label: str
    first: np.ndarray  # rank of the first match per query
    ap: np.ndarray  # average precision per query
    groups: dict[str, Scores]

    @property
    def macro(self) -> tuple[float, float]:
        """(macro R@1, macro mAP) over the query groups."""
        return macro(self.groups)

    @property
    def key(self) -> float:
        """The selection criterion (``devset.criterion``): higher is better."""
        return criterion(self.groups)


def measure(label: str, sims: np.ndarray, rel: np.ndarray, queries: Sequence[DevQuery]) -> Measured:
    first, ap = per_query(sims, rel)
    return Measured(label, first, ap, score_groups(sims, rel, list(queries)))


def near_duplicate_r_at_1(originals: np.ndarray, copies: np.ndarray) -> float:
    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

    sims = unit(copies) @ unit(originals).T
    return float((sims.argmax(axis=1) == np.arange(len(copies))).mean())


def colour_accuracy(photos: Sequence[DevPhoto], shares: np.ndarray) -> tuple[int, float, float]:
    """Over the photos tagged with a colour term: how many, how often it is the largest share,
    and its mean rank among the eleven (the tags name the subject's colour, not all colours)."""
    tagged = [
        (i, COLOUR_TERMS.index(t))
        for i, p in enumerate(photos)
        for t in p.tags
        if t in COLOUR_TERMS
    ]
    if not tagged:
        return 0, 0.0, 0.0
    top = np.mean([shares[i].argmax() == c for i, c in tagged])
    rank = np.mean([(shares[i] > shares[i, c]).sum() + 1 for i, c in tagged])
    return len(tagged), float(top), float(rank)
