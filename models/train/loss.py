"""CLIP's symmetric InfoNCE with a learnable temperature, plus hard-negative captions.

Image→text: each image scores the batch's captions *and* every hard negative in the batch (count,
attribute and relation swaps of some scene's caption), so a wrong count or a swapped colour must
score below the right caption. Text→image is plain CLIP. Two scenes that drew the very same
caption text are not each other's negatives: those cells are masked out.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps the temperature at 1/100


def clip_loss(
    image: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor,
    *,
    negatives: torch.Tensor | None = None,
    text_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean of the two cross-entropies.

    ``image`` [b, d] and ``text`` [b, d] are L2-normalised and paired row by row; ``negatives``
    [n, d] are extra normalised captions that enter the image→text softmax denominators;
    ``text_ids`` [b] identifies each caption text, so duplicate captions are masked.
    """
    scale = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
    logits = scale * image @ text.t()
    if text_ids is not None:
        same = text_ids[:, None] == text_ids[None, :]
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
    targets = torch.arange(image.shape[0], device=image.device)
    i2t = logits
    if negatives is not None and negatives.numel():
        i2t = torch.cat([logits, scale * image @ negatives.t()], dim=1)
    return 0.5 * (F.cross_entropy(i2t, targets) + F.cross_entropy(logits.t(), targets))
