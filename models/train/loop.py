"""The training loop: the losses of :mod:`models.train.loss` over cached MiniLM token states
and freshly augmented images."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from models.train.cache import TokenStates
from models.train.dataset import TrainData, normalise, sample_batch, shift
from models.train.labels import cell_labels
from models.train.loss import (
    clip_loss,
    image_conjunction_loss,
    minimal_pair_loss,
    text_conjunction_loss,
)
from models.train.towers import ClipModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2400
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 100
    hard_negatives: bool = True  # off: no hard negatives in the softmax, no minimal pairs
    negatives_per_scene: int = 3
    pair_weight: float = 1.0  # minimal pairs (the short caption vs its attribute edits)
    conj_weight: float = 1.0  # the conjunction heads' labels, image and text
    text_chunk: int = 96  # texts per head forward, length-sorted so padding stays small
    max_shift: int = 3
    log_every: int = 50

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class TrainResult:
    steps: int
    seconds: float
    final_loss: float
    logit_scale: float
    history: list[tuple[int, float]] = field(default_factory=list)


def _param_groups(model: ClipModel, weight_decay: float) -> list[dict[str, object]]:
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        # Biases, norms and the temperature are not decayed (CLIP's recipe).
        (no_decay if param.ndim < 2 or "logit_scale" in name else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _lr_factor(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def encode_text_rows(
    model: ClipModel, states: TokenStates, rows: np.ndarray, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Joint embeddings [len(rows), d] of cached texts, and their conjunction-label loss."""
    order = np.argsort(states.lengths(rows), kind="stable")
    parts, losses = [], []
    for start in range(0, len(order), chunk):
        sel = order[start : start + chunk]
        batch = states.batch(rows[sel])
        emb, out = model.encode_text(batch.states, batch.mask, batch.sentence)
        parts.append(emb)
        if out.logits is not None:  # None without the conjunction channel: no labels to fit
            losses.append(
                text_conjunction_loss(out.logits, batch.mask, batch.colour, batch.shape) * len(sel)
            )
    inverse = torch.empty(len(rows), dtype=torch.long)
    inverse[torch.from_numpy(order)] = torch.arange(len(rows))
    conj = torch.stack(losses).sum() / len(rows) if losses else torch.zeros(())
    return torch.cat(parts)[inverse], conj


def batch_loss(
    model: ClipModel,
    data: TrainData,
    states: TokenStates,
    idx: np.ndarray,
    rng: np.random.Generator,
    gen: torch.Generator,
    cfg: TrainConfig,
) -> dict[str, torch.Tensor]:
    """The named loss terms of one batch of scenes (their sum is what training minimises)."""
    per_scene = cfg.negatives_per_scene if cfg.hard_negatives else 0
    texts, negs = sample_batch(data, idx, rng, negatives_per_scene=per_scene)
    short, attribute = data.short[idx], data.attribute[idx]
    # Every text row the batch needs, embedded once.
    rows = np.unique(np.concatenate([texts, negs, short, attribute[attribute >= 0]]))
    text_emb, text_conj = encode_text_rows(model, states, rows, cfg.text_chunk)

    def look(r: np.ndarray) -> torch.Tensor:
        return text_emb[torch.from_numpy(np.searchsorted(rows, r))]

    pixels, dx, dy = shift(normalise(data.images[idx]), cfg.max_shift, gen)
    image, parts = model.encode_image(pixels)
    terms = {
        "clip": clip_loss(
            image,
            look(texts),
            model.logit_scale,
            negatives=look(negs) if len(negs) else None,
            text_ids=torch.from_numpy(texts),
        )
    }
    if cfg.hard_negatives and cfg.pair_weight:
        valid = attribute >= 0
        edits = look(np.where(valid, attribute, short[:, None]).reshape(-1))
        terms["pairs"] = cfg.pair_weight * minimal_pair_loss(
            image,
            look(short),
            edits.view(len(idx), attribute.shape[1], -1),
            torch.from_numpy(valid),
            model.logit_scale,
        )
    if cfg.conj_weight and parts.logits is not None:
        colour, shape, gate = cell_labels(data.geometry[idx], dx, dy, parts.logits.gate.shape[-1])
        terms["conj_image"] = cfg.conj_weight * image_conjunction_loss(
            parts.logits, torch.from_numpy(colour), torch.from_numpy(shape), torch.from_numpy(gate)
        )
        terms["conj_text"] = cfg.conj_weight * text_conj
    return terms


def train(
    model: ClipModel, data: TrainData, states: TokenStates, cfg: TrainConfig, *, seed: int
) -> TrainResult:
    """Optimise ``model`` in place for ``cfg.steps`` steps; deterministic for a given seed."""
    rng = np.random.default_rng([seed, 23])
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg))
    model.train()
    order = rng.permutation(len(data))
    cursor = 0
    history: list[tuple[int, float]] = []
    running = 0.0
    start = time.perf_counter()
    loss_value = float("nan")
    for step in range(cfg.steps):
        if cursor + cfg.batch_size > len(order):
            order, cursor = rng.permutation(len(data)), 0
        idx = order[cursor : cursor + cfg.batch_size]
        cursor += cfg.batch_size
        terms = batch_loss(model, data, states, idx, rng, gen, cfg)
        loss = torch.stack(list(terms.values())).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_value = float(loss.detach())
        running += loss_value
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            n = (step % cfg.log_every) + 1
            history.append((step + 1, running / n))
            logger.info(
                "step %d/%d loss %.4f scale %.1f lr %.2e (%.0f s)",
                step + 1,
                cfg.steps,
                running / n,
                float(model.logit_scale.detach().exp()),
                sched.get_last_lr()[0],
                time.perf_counter() - start,
            )
            running = 0.0
    model.eval()
    return TrainResult(
        steps=cfg.steps,
        seconds=time.perf_counter() - start,
        final_loss=history[-1][1] if history else loss_value,
        logit_scale=float(model.logit_scale.detach().exp()),
        history=history,
    )
