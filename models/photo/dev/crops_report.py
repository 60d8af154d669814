"""``python -m models.photo.dev crops``: class evidence from crops, mirror images and a second
backbone, measured on the dev set, then top-k / temperature / broader terms re-swept on the best
of them; written to models/photo/dev/CROPS.md.

Each variant turns the cached backbone logits (:mod:`models.photo.dev.crops`) into one class
distribution with the same function the exported graph uses (:func:`models.photo.tower.combine`),
then ConSE + the colour term as the build does (:mod:`models.photo.dev.extras`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.export.quantize import compact_minilm
from models.photo.build import CHOSEN_TEXT, PhotoConfig
from models.photo.classtext import PhraseCache, TextConfig, class_embeddings, tower_encoder
from models.photo.colour import colour_embeddings
from models.photo.dev.crops import crop_features
from models.photo.dev.devset import GROUPS, load_photos, load_queries, relevance
from models.photo.dev.extras import Measured, image_embeds, measure, near_duplicate_r_at_1
from models.photo.tower import combine
from models.photo.vocab import ImageNetClass
from models.train.minilm import load_minilm

HEADER = (
    "| variant | input | backbone passes | criterion | macro R@1 | all R@1 / mean rank | "
    + " | ".join(GROUPS)
    + " |\n|"
    + "---|" * (6 + len(GROUPS))
)
# Re-sweep grid on the best variants (SWEEP.md's grid, narrowed to its useful part).
TOP_K = (3, 5, 10, 20)
TEMPERATURE = (1.0, 2.0, 4.0)
HYPERNYMS = ((13, 1.0), (13, 0.5), (3, 0.5))


@dataclass(frozen=True)
class Variant:
    """One way of getting class probabilities from the cached outputs."""

    label: str
    input_size: int
    passes: str  # backbone passes per image, in words
    whole: tuple[str, ...]  # arrays averaged as the whole picture's probabilities
    crops: str = ""  # "c336" or ""
    rule: str = "whole"  # models.photo.tower.combine's rule
    shares: str = "shares224"
    visual: str = "w224"  # whose pooled features are visual_embeds

    def probs(self, feats: dict[str, np.ndarray]) -> torch.Tensor:
        whole = torch.stack([torch.from_numpy(feats[a]).softmax(-1) for a in self.whole]).mean(0)
        crops = torch.from_numpy(feats[self.crops]).softmax(-1) if self.crops else None
        if self.rule == "centre" and crops is not None:
            return combine(whole, crops[:, 4:], "mean")
        return combine(whole, crops, self.rule)


VARIANTS: tuple[Variant, ...] = (
    Variant("one view (bundle 1.1.0)", 224, "1 lite0 @224", ("w224",)),
    Variant("flip TTA", 224, "2 lite0 @224", ("w224", "f224")),
    Variant("whole at 336", 336, "1 lite0 @336", ("w336",), shares="shares336", visual="w336"),
    *(
        Variant(
            f"whole 336 + 5 crops, {rule}",
            336,
            "1 lite0 @336 + 5 @224",
            ("w336",),
            "c336",
            rule,
            "shares336",
            "w336",
        )
        for rule in ("max", "noisy_or", "whole_max", "mean", "gated")
    ),
    *(
        Variant(
            f"whole 224 + 5 crops of 336, {rule} (reference)",
            0,
            "1 lite0 @224 + 5 @224",
            ("w224",),
            "c336",
            rule,
        )
        for rule in ("max", "whole_max", "mean", "gated")
    ),
    Variant(
        "centre crop of 336 + whole 224, mean (reference)",
        0,
        "2 lite0 @224",
        ("w224",),
        "c336",
        "centre",
    ),
    Variant("lite0 at 260", 260, "1 lite0 @260", ("l0w260",), shares="shares260", visual="l0w260"),
    Variant("lite2", 260, "1 lite2 @260", ("w260",), shares="shares260", visual="w260"),
    Variant("lite2 flip TTA", 260, "2 lite2 @260", ("w260", "f260"), shares="shares260"),
    Variant(
        "lite0 @224 + lite2 @260 (reference)",
        0,
        "1 lite0 @224 + 1 lite2 @260",
        ("w224", "w260"),
    ),
    Variant(
        "lite0 + lite2",
        260,
        "1 lite0 + 1 lite2 @260",
        ("l0w260", "w260"),
        shares="shares260",
        visual="l0w260",
    ),
)


def _row(v: Variant, m: Measured) -> str:
    g = m.groups
    cells = " | ".join(f"{g[x].r_at_1:.3f} / {g[x].mean_rank:.1f}" for x in ("all", *GROUPS))
    size = v.input_size or "two inputs"
    return f"| {m.label} | {size} | {v.passes} | {m.key:.4f} | {m.macro[0]:.3f} | {cells} |"


def crops_report(root: Path, cache: Path, classes: Sequence[ImageNetClass]) -> str:
    chosen = PhotoConfig()
    photos, queries = load_photos(), load_queries()
    rel = relevance(photos, queries)
    encode = tower_encoder(compact_minilm(load_minilm()))
    phrases = PhraseCache(encode)
    tables = {
        t: torch.from_numpy(class_embeddings(classes, t, phrases))
        for t in (CHOSEN_TEXT, *(TextConfig("photo", 1, h, w) for h, w in HYPERNYMS))
    }
    qvecs = encode([q.text for q in queries])
    qvecs = qvecs / np.linalg.norm(qvecs, axis=-1, keepdims=True)
    colours = colour_embeddings(encode)
    feats = crop_features(cache, root, photos)

    def run(
        v: Variant, *, text: TextConfig = CHOSEN_TEXT, top_k: int = 10, t: float = 2.0
    ) -> Measured:
        embeds = image_embeds(
            v.probs(feats).log(),
            tables[text],
            feats[v.shares],
            colours,
            chosen.colour_weight,
            top_k=top_k,
            temperature=t,
        )
        return measure(v.label, qvecs @ embeds.T, rel, queries)

    measured = [(v, run(v)) for v in VARIANTS]
    ranked = sorted(measured, key=lambda vm: -vm[1].key)
    lines = [
        "<!-- Generated by `python -m models.photo.dev crops --report`; do not edit. -->",
        "# Photo bundle: crops, mirror images and a second backbone (dev set)",
        "",
        f"{len(photos)} dev photos, {len(queries)} queries; ConSE as chosen in SWEEP.md "
        f"({CHOSEN_TEXT.describe()}, T={chosen.temperature:g}, k={chosen.top_k}) with the "
        f"colour term at {chosen.colour_weight:g}, shortest-edge centre crop at the input size. "
        "Cells: R@1 / mean rank of the first match; criterion as in SWEEP.md (mean of macro R@1 "
        "and macro mAP). Rows marked (reference) need two input sizes, which one serving input "
        "cannot give without resizing inside the graph; they say whether the idea helps. "
        "Crops: four overlapping 224 px corners and the 224 px centre of the "
        "336 px input. Rules (models/photo/tower.py `combine`): max = per-class maximum over "
        "the whole picture and the crops; noisy_or = 1 - prod(1 - p); whole_max = mean of the "
        "whole picture's and the crops' per-class maximum; mean = mean of all six; gated = the "
        "whole picture plus what a crop's probability exceeds 0.5 (EXTRAS.md's rule). Each "
        "distribution is renormalised before ConSE.",
        "",
        "## Variants at the chosen ConSE settings",
        "",
        HEADER,
        *[_row(v, m) for v, m in measured],
        "",
        "## Re-sweep of top-k, temperature and broader terms on the three best variants",
        "",
        "| variant | class texts | T | k | criterion | macro R@1 | all R@1 | object R@1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v, _ in ranked[:3]:
        rows = []
        for text, t, k in itertools.product(tables, TEMPERATURE, TOP_K):
            m = run(v, text=text, top_k=k, t=t)
            rows.append((m.key, text, t, k, m))
        rows.sort(key=lambda r: -r[0])
        for key, text, t, k, m in rows[:5]:
            g = m.groups
            lines.append(
                f"| {v.label} | {text.describe()} | {t:g} | {k} | {key:.4f} | {m.macro[0]:.3f} | "
                f"{g['all'].r_at_1:.3f} | {g['object'].r_at_1:.3f} |"
            )
    lines += ["", "## Near-duplicate R@1 of `visual_embeds` (as BUILD.md)", ""]
    for name in ("w224", "w336", "l0w260", "w260"):
        dup = near_duplicate_r_at_1(feats[name + "_pooled"], feats[name + "_dup"])
        lines.append(f"- {name}: {dup:.3f}")
    return "\n".join(lines) + "\n"
