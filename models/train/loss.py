"""The training losses: CLIP's InfoNCE with hard negatives, minimal pairs, conjunction labels.

Image→text: each image scores the batch's captions *and* every hard negative in the batch (count,
attribute and relation swaps of some scene's caption), so a wrong count or a swapped colour must
score below the right caption. Text→image is plain CLIP. Two scenes that drew the very same
caption text are not each other's negatives: those cells are masked out.

Minimal pairs (:func:`minimal_pair_loss`): each image also ranks its canonical short caption
against that caption's own attribute edits (a colour swap, a recolour, a reshape) — the exact
comparison the attribute-binding metric makes, which the batch-wide softmax above dilutes among
hundreds of easy captions.

Conjunction labels (:func:`image_conjunction_loss`, :func:`text_conjunction_loss`): the colour,
shape and gate heads of both towers (:mod:`models.train.towers`) learn from the generator's ground
truth (:mod:`models.train.labels`), so that each factor means what it should on its own.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from models.train.labels import NO_LABEL
from models.train.towers import Conjunction

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


def minimal_pair_loss(
    image: torch.Tensor,
    true: torch.Tensor,
    negatives: torch.Tensor,
    valid: torch.Tensor,
    logit_scale: torch.Tensor,
) -> torch.Tensor:
    """Cross-entropy of each image picking ``true`` [b, d] over its ``negatives`` [b, k, d];
    ``valid`` [b, k] marks real negatives (rows without any are skipped)."""
    keep = valid.any(dim=1)
    if not bool(keep.any()):
        return image.sum() * 0.0
    scale = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
    pos = scale * (image * true).sum(dim=-1, keepdim=True)
    # Mask after scaling: -inf times the scale's gradient would be NaN.
    neg = (scale * torch.einsum("bd,bkd->bk", image, negatives)).masked_fill(~valid, float("-inf"))
    logits = torch.cat([pos, neg], dim=1)[keep]
    return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long))


def _labelled_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the positions of ``target`` [...] that carry a label."""
    on = target != NO_LABEL
    if not bool(on.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[on], target[on])


def image_conjunction_loss(
    logits: Conjunction, colour: torch.Tensor, shape: torch.Tensor, gate: torch.Tensor
) -> torch.Tensor:
    """Per-cell targets [b, g, g] (``labels.cell_labels``): gate BCE where the gate target is
    0 or 1, colour and shape cross-entropy on object cells."""
    trained = gate >= 0
    gate_loss = F.binary_cross_entropy_with_logits(logits.gate[:, 0][trained], gate[trained])
    colour_loss = _labelled_ce(logits.colour.permute(0, 2, 3, 1), colour)
    shape_loss = _labelled_ce(logits.shape.permute(0, 2, 3, 1), shape)
    return gate_loss + colour_loss + shape_loss


def text_conjunction_loss(
    logits: Conjunction, mask: torch.Tensor, colour: torch.Tensor, shape: torch.Tensor
) -> torch.Tensor:
    """Per-token labels [b, t] (``labels.token_labels``): bigram i is a "<colour> <shape>" pair
    when token i has a colour and token i + 1 a shape; the gate learns which bigrams are, the
    colour and shape heads what they name."""
    colour, shape = colour[:, :-1], shape[:, 1:]
    is_pair = (colour != NO_LABEL) & (shape != NO_LABEL)
    real = (mask[:, :-1] * mask[:, 1:]) > 0
    gate_loss = F.binary_cross_entropy_with_logits(
        logits.gate[..., 0][real], is_pair[real].to(logits.gate.dtype)
    )
    pair_colour = torch.where(is_pair, colour, torch.full_like(colour, NO_LABEL))
    pair_shape = torch.where(is_pair, shape, torch.full_like(shape, NO_LABEL))
    colour_loss = _labelled_ce(logits.colour, pair_colour)
    return gate_loss + colour_loss + _labelled_ce(logits.shape, pair_shape)
