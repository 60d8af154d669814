"""The default variant's trainable parts and the two exportable towers.

* :class:`ImageEncoder` — a small CNN trained from scratch. Scene captions name positions, so the
  last feature map is flattened (a coarse spatial grid), not globally pooled.
* :class:`TextHead` — the projection from the frozen MiniLM sentence space (384) into the joint
  space: a linear map plus a small residual MLP. It trains on cached sentence embeddings.
* :class:`TextTower` — MiniLM + head, the graph exported as ``text.onnx`` with two outputs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.train.minilm import SENTENCE_DIM, MiniLM


@dataclass(frozen=True)
class TowerConfig:
    image_size: int = 80
    widths: tuple[int, ...] = (24, 48, 96, 160)
    reduce: int = 64  # 1x1 conv before the spatial flatten keeps the FC layer small
    embed_dim: int = 256
    head_hidden: int = 1024
    image_hidden: int = 512

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ImageEncoder(nn.Module):
    """pixel_values [b, 3, S, S] (CLIP-normalised) -> image_embeds [b, D] (not normalised)."""

    def __init__(self, cfg: TowerConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for i, width in enumerate(cfg.widths):
            layers.append(_conv(cin, width, 2))
            if i > 0:  # a second conv per stage, except at full-ish resolution (too costly)
                layers.append(_conv(width, width, 1))
            cin = width
        layers += [
            nn.Conv2d(cin, cfg.reduce, 1, bias=False),
            nn.BatchNorm2d(cfg.reduce),
            nn.ReLU(inplace=True),
        ]
        self.features = nn.Sequential(*layers)
        grid = cfg.image_size // 2 ** len(cfg.widths)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(cfg.reduce * grid * grid, cfg.image_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.image_hidden, cfg.embed_dim),
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixel_values))


class TextHead(nn.Module):
    """Sentence embedding [b, 384] -> joint-space embedding [b, D] (not normalised)."""

    def __init__(self, cfg: TowerConfig, in_dim: int = SENTENCE_DIM) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, cfg.embed_dim)
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, cfg.head_hidden),
            nn.GELU(),
            nn.Linear(cfg.head_hidden, cfg.embed_dim),
        )

    def forward(self, sentence: torch.Tensor) -> torch.Tensor:
        return self.linear(sentence) + self.mlp(sentence)


class ClipModel(nn.Module):
    """What training optimises: the image encoder, the text head and the temperature."""

    def __init__(self, cfg: TowerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.image = ImageEncoder(cfg)
        self.text = TextHead(cfg)
        # CLIP's initial temperature 0.07, learnt in log space.
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image(pixels), dim=-1)

    def encode_text(self, sentence: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(sentence), dim=-1)


class TextTower(nn.Module):
    """input_ids, attention_mask -> (text_embeds [b, D], sentence_embeds [b, 384])."""

    def __init__(self, minilm: MiniLM, head: TextHead) -> None:
        super().__init__()
        self.minilm = minilm
        self.head = head

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sentence = self.minilm(input_ids, attention_mask)
        return self.head(sentence), sentence
