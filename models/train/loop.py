"""The training loop: CLIP loss over cached sentence embeddings and freshly augmented images."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from models.train.dataset import TrainData, normalise, sample_batch, shift
from models.train.loss import clip_loss
from models.train.towers import ClipModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2400
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 100
    hard_negatives: bool = True
    negatives_per_scene: int = 3
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


def batch_loss(
    model: ClipModel,
    data: TrainData,
    text_emb: torch.Tensor,
    idx: np.ndarray,
    rng: np.random.Generator,
    gen: torch.Generator,
    cfg: TrainConfig,
) -> torch.Tensor:
    per_scene = cfg.negatives_per_scene if cfg.hard_negatives else 0
    texts, negs = sample_batch(data, idx, rng, negatives_per_scene=per_scene)
    pixels = shift(normalise(data.images[idx]), cfg.max_shift, gen)
    image = model.encode_image(pixels)
    text = model.encode_text(text_emb[torch.from_numpy(texts)])
    negatives = model.encode_text(text_emb[torch.from_numpy(negs)]) if len(negs) else None
    return clip_loss(
        image, text, model.logit_scale, negatives=negatives, text_ids=torch.from_numpy(texts)
    )


def train(
    model: ClipModel, data: TrainData, text_emb: np.ndarray, cfg: TrainConfig, *, seed: int
) -> TrainResult:
    """Optimise ``model`` in place for ``cfg.steps`` steps; deterministic for a given seed."""
    rng = np.random.default_rng([seed, 23])
    gen = torch.Generator().manual_seed(seed)
    emb = torch.from_numpy(text_emb)
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
        loss = batch_loss(model, data, emb, idx, rng, gen, cfg)
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
