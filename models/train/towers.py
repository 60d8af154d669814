"""The default variant's trainable parts and the two exportable towers.

Each tower computes two parts, joined into one embedding by :func:`joint_embedding`:

* a **global** part (``embed_dim``): the image CNN's flattened last feature map through an MLP
  (captions name positions, so the map is a coarse spatial grid, not globally pooled), or the
  frozen MiniLM sentence embedding through a linear map plus a residual MLP;
* a **conjunction** part (``CONJ_DIM`` = colours x shapes): per image cell or per text bigram,
  a colour distribution, a shape distribution and a gate; the part is the sum of the gated outer
  products, i.e. a soft histogram of the (colour, shape) pairs the scene or text contains.

Why the second part: a mean-pooled sentence embedding is close to blind to word order ("a red
circle and a blue star" and its colour swap are near neighbours in MiniLM space), and a global
image embedding learnt contrastively binds colours to shapes only for pairs it was trained on.
The outer product binds by construction, and composes: a (colour, shape) pair never seen in
training lands in its own histogram cell from a colour and a shape that were each seen. Both
factors are trained with direct labels (:mod:`models.train.labels`), the embedding contrastively.

``TowerConfig(conjunction=False)`` leaves the second part out (no heads, no labels, the joint
space is the global part alone): the ablation EVAL.md reports beside the shipped bundle, whose
channel encodes the evaluation's own colour x shape vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models.data.vocab import COLOURS, SHAPES
from models.train.minilm import SENTENCE_DIM, MiniLM

N_COLOURS, N_SHAPES = len(COLOURS), len(SHAPES)
CONJ_DIM = N_COLOURS * N_SHAPES


@dataclass(frozen=True)
class TowerConfig:
    image_size: int = 80
    widths: tuple[int, ...] = (24, 48, 96, 160)
    reduce: int = 64  # 1x1 conv before the spatial flatten keeps the FC layer small
    embed_dim: int = 256  # the global part; the joint space adds CONJ_DIM
    head_hidden: int = 1024
    image_hidden: int = 512
    # The stage whose feature map (stride 2**stage: 10x10 cells at 80 px) feeds the conjunction
    # heads: fine enough that most cells see one object, deep enough to see its shape.
    conj_stage: int = 3
    # False: no conjunction part at all (the ablation baseline); the joint space is embed_dim.
    conjunction: bool = True

    @property
    def joint_dim(self) -> int:
        return self.embed_dim + (CONJ_DIM if self.conjunction else 0)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class Conjunction(NamedTuple):
    """Logits of one tower's conjunction heads: image [b, C, g, g], text [b, t - 1, C]."""

    colour: torch.Tensor
    shape: torch.Tensor
    gate: torch.Tensor


class Parts(NamedTuple):
    global_: torch.Tensor  # [b, embed_dim]
    conj: torch.Tensor | None  # [b, CONJ_DIM]; None without the conjunction channel
    logits: Conjunction | None


def joint_embedding(
    global_: torch.Tensor, conj: torch.Tensor | None, conj_scale: torch.Tensor
) -> torch.Tensor:
    """Unit vector [b, joint_dim]: the unit global part beside the conjunction part.

    The conjunction part is shrunk to unit length only when it is longer (an image with objects,
    a text naming "<colour> <shape>" pairs); a text that names none ("three objects") keeps its
    near-zero histogram instead of having gate noise blown up to full weight. Without the
    channel (``conj`` None) the embedding is the unit global part.
    """
    if conj is None:
        return F.normalize(global_, dim=-1)
    conj = conj / conj.norm(dim=-1, keepdim=True).clamp(min=1.0)
    return F.normalize(torch.cat([F.normalize(global_, dim=-1), conj_scale * conj], dim=-1), dim=-1)


def _outer(colour: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    """sum_i colour[b, :, i] x shape[b, :, i] -> [b, C * S] (a batched matmul)."""
    return torch.bmm(colour, shape.transpose(1, 2)).flatten(1)


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ImageEncoder(nn.Module):
    """pixel_values [b, 3, S, S] (CLIP-normalised) -> :class:`Parts`."""

    def __init__(self, cfg: TowerConfig) -> None:
        super().__init__()
        if not 1 <= cfg.conj_stage <= len(cfg.widths):
            raise ValueError(f"conj_stage {cfg.conj_stage} is not one of the {cfg.widths} stages")
        stages: list[list[nn.Module]] = []
        cin = 3
        for i, width in enumerate(cfg.widths):
            stage: list[nn.Module] = [_conv(cin, width, 2)]
            if i > 0:  # a second conv per stage, except at full-ish resolution (too costly)
                stage.append(_conv(width, width, 1))
            stages.append(stage)
            cin = width
        reduce = [
            nn.Conv2d(cin, cfg.reduce, 1, bias=False),
            nn.BatchNorm2d(cfg.reduce),
            nn.ReLU(inplace=True),
        ]
        self.low = nn.Sequential(*(m for s in stages[: cfg.conj_stage] for m in s))
        self.high = nn.Sequential(*(m for s in stages[cfg.conj_stage :] for m in s), *reduce)
        grid = cfg.image_size // 2 ** len(cfg.widths)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(cfg.reduce * grid * grid, cfg.image_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.image_hidden, cfg.embed_dim),
        )
        self.conjunction = cfg.conjunction
        if cfg.conjunction:
            width = cfg.widths[cfg.conj_stage - 1]
            self.conj_mix = nn.Sequential(
                nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True)
            )
            self.colour = nn.Conv2d(width, N_COLOURS, 1)
            self.shape = nn.Conv2d(width, N_SHAPES, 1)
            self.gate = nn.Conv2d(width, 1, 1)

    def parts(self, pixels: torch.Tensor) -> Parts:
        low = self.low(pixels)
        if not self.conjunction:
            return Parts(self.head(self.high(low)), None, None)
        mix = self.conj_mix(low)
        logits = Conjunction(self.colour(mix), self.shape(mix), self.gate(mix))
        colour = (logits.colour.softmax(dim=1) * torch.sigmoid(logits.gate)).flatten(2)
        conj = _outer(colour, logits.shape.softmax(dim=1).flatten(2))
        return Parts(self.head(self.high(low)), conj, logits)


class TextHead(nn.Module):
    """Frozen MiniLM token states [b, t, 384], their mask [b, t] (float) and the pooled sentence
    embedding [b, 384] -> :class:`Parts`. Bigram i pairs token i (colour) with token i + 1."""

    def __init__(self, cfg: TowerConfig, in_dim: int = SENTENCE_DIM) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, cfg.embed_dim)
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, cfg.head_hidden),
            nn.GELU(),
            nn.Linear(cfg.head_hidden, cfg.embed_dim),
        )
        self.conjunction = cfg.conjunction
        if cfg.conjunction:
            self.colour = nn.Linear(in_dim, N_COLOURS)
            self.shape = nn.Linear(in_dim, N_SHAPES)
            self.gate = nn.Linear(2 * in_dim, 1)

    def parts(self, states: torch.Tensor, mask: torch.Tensor, sentence: torch.Tensor) -> Parts:
        global_ = self.linear(sentence) + self.mlp(sentence)
        if not self.conjunction:
            return Parts(global_, None, None)
        first, second = states[:, :-1], states[:, 1:]
        logits = Conjunction(
            self.colour(first), self.shape(second), self.gate(torch.cat([first, second], dim=-1))
        )
        pair = (mask[:, :-1] * mask[:, 1:]).unsqueeze(-1)
        colour = logits.colour.softmax(dim=-1) * torch.sigmoid(logits.gate) * pair
        conj = _outer(colour.transpose(1, 2), logits.shape.softmax(dim=-1).transpose(1, 2))
        return Parts(global_, conj, logits)


class ClipModel(nn.Module):
    """What training optimises: both towers' trainable parts, the temperature, and the weight of
    the conjunction part in the joint space."""

    def __init__(self, cfg: TowerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.image = ImageEncoder(cfg)
        self.text = TextHead(cfg)
        # CLIP's initial temperature 0.07, learnt in log space.
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        # Unused (and not trained) without the conjunction channel.
        self.conj_scale = nn.Parameter(torch.tensor(1.0), requires_grad=cfg.conjunction)

    def encode_image(self, pixels: torch.Tensor) -> tuple[torch.Tensor, Parts]:
        parts = self.image.parts(pixels)
        return joint_embedding(parts.global_, parts.conj, self.conj_scale), parts

    def encode_text(
        self, states: torch.Tensor, mask: torch.Tensor, sentence: torch.Tensor
    ) -> tuple[torch.Tensor, Parts]:
        parts = self.text.parts(states, mask, sentence)
        return joint_embedding(parts.global_, parts.conj, self.conj_scale), parts


class ImageTower(nn.Module):
    """pixel_values -> image_embeds [b, joint_dim]: the graph exported as ``image.onnx``."""

    conj_scale: torch.Tensor

    def __init__(self, encoder: ImageEncoder, conj_scale: float) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("conj_scale", torch.tensor(float(conj_scale)))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        parts = self.encoder.parts(pixel_values)
        return joint_embedding(parts.global_, parts.conj, self.conj_scale)


class TextTower(nn.Module):
    """input_ids, attention_mask -> (text_embeds [b, joint_dim], sentence_embeds [b, 384]):
    MiniLM + head, the graph exported as ``text.onnx``."""

    conj_scale: torch.Tensor

    def __init__(self, minilm: MiniLM, head: TextHead, conj_scale: float) -> None:
        super().__init__()
        self.minilm = minilm
        self.head = head
        self.register_buffer("conj_scale", torch.tensor(float(conj_scale)))

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        states = self.minilm.token_states(input_ids, attention_mask)
        mask = attention_mask.to(states.dtype)
        sentence = self.minilm.pool(states, mask)
        parts = self.head.parts(states, mask, sentence)
        return joint_embedding(parts.global_, parts.conj, self.conj_scale), sentence
