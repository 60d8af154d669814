"""The dev sweep behind the photo bundle's defaults: variant, resize mode, text tower
precision, class texts (templates, synonyms, broader terms) and ConSE's temperature and top-k.

Everything is scored on the same dev photos and queries. The selection criterion is the mean of
two macro averages over the four query groups (so the 200 object queries do not drown the 28
category ones): R@1, and mean average precision. R@1 alone moves in steps of 1/28 per group and
its maximum sat on a narrow spike of the grid (T=4, k=3, with T=4, k=5 already 0.05 lower);
mAP also rewards ranking every match of a broad query high, and smooths the choice. The full
grid is cheap once the backbone logits and the phrase embeddings are cached, so nothing is
chosen one parameter at a time.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch

from models.export.quantize import compact_minilm
from models.photo.classtext import PhraseCache, TextConfig, class_embeddings, tower_encoder
from models.photo.dev.devset import (
    GROUPS,
    DevQuery,
    Scores,
    criterion,
    load_photos,
    load_queries,
    macro,
    relevance,
    score_groups,
)
from models.photo.dev.features import cached_backbone
from models.photo.tower import Variant, conse_embed
from models.photo.vocab import ImageNetClass
from models.train.minilm import load_minilm
from service.core.bundle.manifest import ResizeMode

logger = logging.getLogger(__name__)

VARIANT_GRID: tuple[Variant, ...] = ("lite0", "lite2")
RESIZE_GRID: tuple[ResizeMode, ...] = ("shortest_edge_center_crop", "squash")
TOWER_GRID = ("compact", "fp32")
TEMPLATE_GRID = ("bare", "photo", "five")
SYNONYM_GRID = (0, 1)
HYPERNYM_GRID: tuple[tuple[int, float], ...] = (
    (0, 0.0),
    *itertools.product((1, 3, 13), (0.25, 0.5, 1.0)),
)
TEMPERATURE_GRID = (0.5, 1.0, 2.0, 4.0)
TOP_K_GRID = (1, 3, 5, 10, 20, 50)


@dataclass(frozen=True)
class Setting:
    variant: Variant
    resize: ResizeMode
    tower: str
    text: TextConfig
    temperature: float
    top_k: int


@dataclass(frozen=True)
class Result:
    setting: Setting
    groups: dict[str, Scores]

    @property
    def macro(self) -> tuple[float, float]:
        """(macro R@1, macro mAP) over the query groups."""
        return macro(self.groups)

    @property
    def key(self) -> float:
        """The selection criterion (``devset.criterion``): higher is better."""
        return criterion(self.groups)

    def to_dict(self) -> dict[str, object]:
        s = self.setting
        return {
            "variant": s.variant,
            "resize": s.resize,
            "tower": s.tower,
            **asdict(s.text),
            "temperature": s.temperature,
            "top_k": s.top_k,
            "macro_r_at_1": self.macro[0],
            "macro_map": self.macro[1],
            "criterion": self.key,
            **{f"{g}.{k}": v for g, sc in self.groups.items() for k, v in sc.to_dict().items()},
        }


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def run_sweep(
    root: Path,
    cache: Path,
    classes: Sequence[ImageNetClass],
    *,
    variants: Sequence[Variant] = VARIANT_GRID,
) -> list[Result]:
    photos, queries = load_photos(), load_queries()
    rel = relevance(photos, queries)
    minilm = load_minilm()
    towers = {"fp32": minilm, "compact": compact_minilm(minilm)}
    logits = {
        (v, r): torch.from_numpy(cached_backbone(cache, root, photos, v, r)[0])
        for v in variants
        for r in RESIZE_GRID
    }
    results: list[Result] = []
    for tower_name in TOWER_GRID:
        encode = tower_encoder(towers[tower_name])
        phrases = PhraseCache(encode)
        query_vecs = _unit(encode([q.text for q in queries]))
        for templates, synonyms, (hypernyms, weight) in itertools.product(
            TEMPLATE_GRID, SYNONYM_GRID, HYPERNYM_GRID
        ):
            text = TextConfig(templates, synonyms, hypernyms, weight)
            table = torch.from_numpy(class_embeddings(classes, text, phrases))
            for (variant, resize), lg in logits.items():
                for temperature, top_k in itertools.product(TEMPERATURE_GRID, TOP_K_GRID):
                    images = conse_embed(lg, table, top_k=top_k, temperature=temperature)
                    sims = query_vecs @ images.numpy().T
                    setting = Setting(variant, resize, tower_name, text, temperature, top_k)
                    results.append(Result(setting, score_groups(sims, rel, queries)))
        logger.info("%s tower: %d settings scored", tower_name, len(results))
    return results


def best(results: Sequence[Result], **fixed: object) -> Result:
    """The best result among those whose setting matches ``fixed`` (text fields included)."""

    def matches(r: Result) -> bool:
        flat = {**asdict(r.setting), **asdict(r.setting.text)}
        return all(flat[k] == v for k, v in fixed.items())

    return max((r for r in results if matches(r)), key=lambda r: r.key)


def marginals(results: Sequence[Result]) -> dict[str, list[tuple[object, Result]]]:
    """For each parameter and each of its values: the best result with that value fixed."""
    params: dict[str, Sequence[object]] = {
        "variant": VARIANT_GRID,
        "resize": RESIZE_GRID,
        "tower": TOWER_GRID,
        "templates": TEMPLATE_GRID,
        "synonyms": SYNONYM_GRID,
        "hypernym_weight": (0.0, 0.25, 0.5, 1.0),
        "hypernyms": (1, 3, 13),
        "temperature": TEMPERATURE_GRID,
        "top_k": TOP_K_GRID,
    }
    present = {r.setting.variant for r in results}
    out: dict[str, list[tuple[object, Result]]] = {}
    for name, values in params.items():
        if name == "variant":
            values = [v for v in values if v in present]
        out[name] = [(v, best(results, **{name: v})) for v in values]
    return out


PAIRED: tuple[tuple[str, object, object], ...] = (
    ("variant", "lite0", "lite2"),
    ("resize", "shortest_edge_center_crop", "squash"),
    ("tower", "compact", "fp32"),
    ("templates", "photo", "five"),
    ("templates", "photo", "bare"),
    ("synonyms", 0, 1),
    ("hypernym_weight", 0.0, 0.5),
    ("hypernym_weight", 0.0, 1.0),
)


def paired(results: Sequence[Result], name: str, a: object, b: object) -> dict[str, float]:
    """Changing ``name`` from ``a`` to ``b`` with every other setting held: the mean change of
    the criterion, of macro R@1 and of the mean rank, and how often the criterion improved."""

    def flat(r: Result) -> dict[str, object]:
        return {**asdict(r.setting), **asdict(r.setting.text)}

    def rest(r: Result) -> tuple[object, ...]:
        f = flat(r)
        if name == "hypernym_weight":  # weight 0 has one "hypernyms" value; pair across them
            f.pop("hypernyms")
        return tuple(sorted((k, repr(v)) for k, v in f.items() if k not in (name, "text")))

    by_a = {rest(r): r for r in results if flat(r)[name] == a}
    pairs = [(by_a[rest(r)], r) for r in results if flat(r)[name] == b and rest(r) in by_a]
    if not pairs:
        raise ValueError(f"no pairs for {name}: {a} -> {b}")
    return {
        "criterion": float(np.mean([y.key - x.key for x, y in pairs])),
        "r_at_1": float(np.mean([y.macro[0] - x.macro[0] for x, y in pairs])),
        "mean_rank": float(
            np.mean([y.groups["all"].mean_rank - x.groups["all"].mean_rank for x, y in pairs])
        ),
        "better": float(np.mean([y.key > x.key for x, y in pairs])),
        "pairs": float(len(pairs)),
    }


def query_table(queries: Sequence[DevQuery]) -> dict[str, int]:
    return {g: sum(q.group == g for q in queries) for g in GROUPS}


def as_variant(name: str) -> Variant:
    if name not in VARIANT_GRID:
        raise ValueError(f"unknown variant {name!r}")
    return cast(Variant, name)
