"""A colour signal for queries that name colours ("a red car", "a yellow flower").

ConSE knows only class names, so "a red apple" and "a green apple" reach the same photos. This
head names the photo's colours in the graph: each pixel (the input averaged down to a 56-pixel
grid) is softly assigned to the nearest of a few hand-set prototypes of the eleven basic colour
terms (Berlin and Kay) in CIE Lab, and the assignments are averaged over the picture. The tower
adds the colour words' text embeddings, weighted by those shares, to the ConSE embedding
(:class:`models.photo.tower.PhotoImageTower`), so a query naming a colour prefers photos that
show it.

It is a coarse, whole-picture estimate: it cannot tell which object is red, and a photo's
background counts as much as its subject. The colour words' embeddings are centred (their mean
taken off) so that what all of them share ("this is about a colour") moves every photo alike
and only the differences between colours rank photos.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

COLOUR_TERMS: tuple[str, ...] = (
    "red",
    "orange",
    "yellow",
    "green",
    "blue",
    "purple",
    "pink",
    "brown",
    "black",
    "white",
    "grey",
)
# sRGB prototypes per term, set by eye: each term's focal colour plus its common dark and light
# shades (dark red, navy, light green, tan...), so a shade is named by its hue, not as black or
# white. Not tuned on the dev set.
PROTOTYPES: dict[str, tuple[tuple[int, int, int], ...]] = {
    "red": ((200, 30, 35), (140, 20, 25), (235, 70, 60)),
    "orange": ((245, 135, 30), (225, 100, 20), (250, 170, 80)),
    "yellow": ((250, 220, 40), (245, 235, 130), (215, 185, 30)),
    "green": ((60, 160, 60), (25, 90, 35), (140, 200, 90), (100, 130, 40)),
    "blue": ((40, 90, 200), (20, 40, 110), (110, 170, 230), (40, 150, 200)),
    "purple": ((120, 50, 150), (70, 30, 90), (170, 120, 200)),
    "pink": ((245, 150, 185), (230, 80, 150), (250, 200, 210)),
    "brown": ((120, 70, 30), (80, 50, 25), (165, 115, 70)),
    "black": ((15, 15, 15),),
    "white": ((245, 245, 245),),
    "grey": ((128, 128, 128), (80, 80, 80), (190, 190, 190)),
}
# The colour words as the text tower embeds them; "a photo of something red." reads like the
# class texts' "a photo of a tabby cat." (models/photo/dev/EXTRAS.md compares it with "red").
COLOUR_TEMPLATE = "a photo of something {c}."
GRID = 56  # about this many cells per side are counted: a colour needs no finer detail
SIGMA = 12.0  # Lab units: the softness of the assignment to prototypes
LIGHTNESS_WEIGHT = 0.5  # lightness counts half, so a shade stays its hue

# sRGB (D65) to XYZ, and the D65 white point (IEC 61966-2-1; CIE 15).
_SRGB_TO_XYZ = (
    (0.4124, 0.3576, 0.1805),
    (0.2126, 0.7152, 0.0722),
    (0.0193, 0.1192, 0.9505),
)
_WHITE = (0.95047, 1.0, 1.08883)
_DELTA = 6.0 / 29.0


def srgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """CIE Lab of sRGB values in [0, 1], channels last: [..., 3] -> [..., 3]."""
    rgb = rgb.clamp(0.0, 1.0)
    # Both branches are computed; the clamp keeps the unused one finite.
    curve = ((rgb.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, curve)
    matrix = torch.tensor(_SRGB_TO_XYZ, dtype=rgb.dtype) / torch.tensor(_WHITE).unsqueeze(-1)
    xyz = linear @ matrix.T
    root = xyz.clamp(min=_DELTA**3) ** (1.0 / 3.0)
    f = torch.where(xyz > _DELTA**3, root, xyz / (3 * _DELTA**2) + 4.0 / 29.0)
    fx, fy, fz = f.unbind(-1)
    return torch.stack((116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)), dim=-1)


def prototype_table() -> tuple[torch.Tensor, torch.Tensor]:
    """(Lab prototypes [P, 3], one-hot prototype -> term [P, terms])."""
    rgb = [p for term in COLOUR_TERMS for p in PROTOTYPES[term]]
    owner = [i for i, term in enumerate(COLOUR_TERMS) for _ in PROTOTYPES[term]]
    lab = srgb_to_lab(torch.tensor(rgb, dtype=torch.float32) / 255.0)
    return lab, F.one_hot(torch.tensor(owner), len(COLOUR_TERMS)).float()


class ColourNames(nn.Module):
    """pixel_values [n, 3, S, S] (normalised with ``mean``/``std``) -> the share of each colour
    term among the pixels, [n, len(COLOUR_TERMS)], rows summing to 1."""

    prototypes: torch.Tensor
    owners: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    scale: torch.Tensor

    def __init__(
        self, image_size: int, mean: Sequence[float], std: Sequence[float], *, sigma: float = SIGMA
    ) -> None:
        super().__init__()
        lab, owners = prototype_table()
        scale = torch.tensor([LIGHTNESS_WEIGHT, 1.0, 1.0])
        self.register_buffer("prototypes", lab * scale)
        self.register_buffer("owners", owners)
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std)).view(1, 3, 1, 1))
        self.register_buffer("scale", scale)
        # Pooling by whole cells keeps the graph a plain AveragePool (260 px: a 65-cell grid).
        self.pool, self.sigma = max(1, image_size // GRID), float(sigma)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        rgb = F.avg_pool2d(pixel_values * self.std + self.mean, self.pool)
        lab = srgb_to_lab(rgb.flatten(2).transpose(1, 2)) * self.scale  # [n, G*G, 3]
        # Squared distances as |x|^2 - 2x.p + |p|^2: one matmul, no [n, G*G, P, 3] tensor.
        d2 = (
            (lab * lab).sum(-1, keepdim=True)
            - 2 * lab @ self.prototypes.T
            + (self.prototypes * self.prototypes).sum(-1)
        )
        per_pixel = (-d2 / (2 * self.sigma**2)).softmax(dim=-1) @ self.owners
        return per_pixel.mean(dim=1)


def colour_embeddings(encode: Callable[[Sequence[str]], np.ndarray]) -> np.ndarray:
    """float32 [terms, D]: the colour words' unit text embeddings, centred (mean row taken off)."""
    vecs = np.asarray(encode([COLOUR_TEMPLATE.format(c=c) for c in COLOUR_TERMS]), np.float64)
    vecs /= np.maximum(np.linalg.norm(vecs, axis=-1, keepdims=True), 1e-12)
    return (vecs - vecs.mean(axis=0)).astype(np.float32)
