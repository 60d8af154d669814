"""``python -m models.photo.dev extras``: the views and colour study behind the build's
defaults, written to models/photo/dev/EXTRAS.md."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from models.export.quantize import compact_minilm
from models.photo.build import CHOSEN_TEXT, PhotoConfig
from models.photo.classtext import PhraseCache, class_embeddings, tower_encoder
from models.photo.colour import COLOUR_TERMS, colour_embeddings
from models.photo.dev.devset import GROUPS, load_photos, load_queries, relevance
from models.photo.dev.extras import (
    Measured,
    ViewMix,
    colour_accuracy,
    image_embeds,
    measure,
    near_duplicate_r_at_1,
    view_features,
)
from models.photo.tower import Variant
from models.photo.vocab import ImageNetClass
from models.train.minilm import load_minilm

HEADER = (
    "| views | colour | criterion | macro R@1 | all R@1 / mean rank | "
    + " | ".join(GROUPS)
    + " |\n|"
    + "---|" * (5 + len(GROUPS))
)
GATES = ((0.3, 0.5), (0.5, 0.5), (0.5, 1.0), (0.7, 0.5))
WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5)


def _row(m: Measured, colour: str) -> str:
    g = m.groups
    cells = " | ".join(f"{g[x].r_at_1:.3f} / {g[x].mean_rank:.1f}" for x in ("all", *GROUPS))
    return f"| {m.label} | {colour} | {m.key:.4f} | {m.macro[0]:.3f} | {cells} |"


def _changes(base: Measured, new: Measured, groups: Sequence[str]) -> list[str]:
    lines = [
        "| group | queries | first match ranked higher | lower | R@1 gained | R@1 lost |",
        "|---|---|---|---|---|---|",
    ]
    for group in GROUPS:
        idx = [i for i, g in enumerate(groups) if g == group]
        b, n = base.first[idx], new.first[idx]
        lines.append(
            f"| {group} | {len(idx)} | {(n < b).sum()} | {(n > b).sum()} | "
            f"{((n == 1) & (b != 1)).sum()} | {((n != 1) & (b == 1)).sum()} |"
        )
    return lines


def _bench(variant: Variant) -> list[str]:
    from models.photo.colour import ColourNames
    from models.photo.evaluate import images_per_second
    from models.photo.export import export_image
    from models.photo.tower import LITE_MEAN, LITE_STD, VARIANTS, PhotoImageTower, load_backbone

    size = VARIANTS[variant].image_size
    table = torch.nn.functional.normalize(torch.randn(1000, 384), dim=-1)
    colours = torch.randn(len(COLOUR_TERMS), 384) * 0.1
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for views, weight in ((1, 0.0), (1, 0.3), (5, 0.3)):
            tower = PhotoImageTower(
                load_backbone(variant),
                table,
                top_k=10,
                temperature=2,
                label_k=5,
                views=views,
                colour=ColourNames(size, LITE_MEAN, LITE_STD),
                colour_embeds=colours,
                colour_weight=weight,
            ).eval()
            path = Path(tmp) / "image.onnx"
            export_image(tower, size * (2 if views > 1 else 1), path)
            speed = images_per_second(path, size * (2 if views > 1 else 1))
            lines.append(
                f"- {'one view' if views == 1 else 'five views'}, "
                f"{'colour' if weight else 'no colour'}: {speed:.1f} images/s"
            )
    return lines


def extras_report(
    root: Path, cache: Path, classes: Sequence[ImageNetClass], *, bench: bool = False
) -> str:
    chosen = PhotoConfig()
    photos, queries = load_photos(), load_queries()
    rel, groups = relevance(photos, queries), [q.group for q in queries]
    encode = tower_encoder(compact_minilm(load_minilm()))
    table = torch.from_numpy(class_embeddings(classes, CHOSEN_TEXT, PhraseCache(encode)))
    qvecs = encode([q.text for q in queries])
    qvecs = qvecs / np.linalg.norm(qvecs, axis=-1, keepdims=True)
    colours = colour_embeddings(encode)
    bare = np.asarray(encode(list(COLOUR_TERMS)), np.float64)
    bare /= np.linalg.norm(bare, axis=-1, keepdims=True)
    bare_colours = (bare - bare.mean(axis=0)).astype(np.float32)
    feats = view_features(cache, root, photos, chosen.variant)

    def run(mix: ViewMix, weight: float, colour_table: np.ndarray = colours) -> Measured:
        embeds = image_embeds(
            mix.log_probs(feats),
            table,
            mix.shares(feats),
            colour_table,
            weight,
            top_k=chosen.top_k,
            temperature=chosen.temperature,
        )
        return measure(mix.label(), qvecs @ embeds.T, rel, queries)

    one, five = ViewMix("one"), ViewMix("gated", chosen.view_gate, chosen.view_weight)
    mixes = [one, ViewMix("mean"), ViewMix("max"), *(ViewMix("gated", g, w) for g, w in GATES)]
    base, picked = run(one, 0.0), run(one, chosen.colour_weight)
    count, top, rank = colour_accuracy(photos, feats["shares1"])
    dup1 = near_duplicate_r_at_1(feats["pooled1"], feats["dup_pooled1"])
    dup5 = near_duplicate_r_at_1(feats["pooled5"][:, 0], feats["dup_pooled5"])
    lines = [
        "<!-- Generated by `python -m models.photo.dev extras --report`; do not edit. -->",
        "# Photo bundle: views and colour (dev set)",
        "",
        f"{len(photos)} dev photos, {len(queries)} queries; ConSE as chosen in SWEEP.md "
        f"({CHOSEN_TEXT.describe()}, T={chosen.temperature:g}, k={chosen.top_k}), "
        f"{chosen.variant}, shortest-edge centre crop. Cells: R@1 / mean rank of the first "
        "match; criterion as in SWEEP.md. One view: the 224 px crop, as bundle 1.0.0. Five "
        "views: a 448 px crop, seen whole (averaged 2x2) and as four 224 px quadrants. Colour: "
        "the colour term's weight (models/photo/colour.py; texts "
        "'a photo of something red.' unless marked).",
        "",
        f"Build defaults: views={chosen.views}, colour weight {chosen.colour_weight:g}.",
        "",
        "## Views, without colour",
        "",
        HEADER,
        *[_row(run(m, 0.0), "-") for m in mixes],
        "",
        "## Colour weight, one view",
        "",
        HEADER,
        _row(base, "-"),
        *[_row(run(one, w), f"{w:g}") for w in WEIGHTS],
        _row(run(one, chosen.colour_weight, bare_colours), f"{chosen.colour_weight:g}, 'red'"),
        "",
        "## Both",
        "",
        HEADER,
        *[_row(run(m, w), f"{w:g}") for m in (one, five) for w in (0.2, 0.3)],
        *[_row(run(ViewMix("gated", g, w), 0.3), "0.3") for g, w in GATES if (g, w) != (0.5, 1)],
        "",
        f"## Per query: one view with colour {chosen.colour_weight:g} against bundle 1.0.0",
        "",
        *_changes(base, picked, groups),
        "",
        "## Other checks",
        "",
        f"- near-duplicate R@1 of `visual_embeds` (as BUILD.md): one view {dup1:.3f}, five "
        f"views (from the whole picture) {dup5:.3f}",
        f"- colour naming against the {count} colour tags of dev photos: the tagged colour has "
        f"the largest share in {top:.0%}, mean rank {rank:.2f} of 11 (white backgrounds of the "
        "cut-out stamps take a large share)",
    ]
    if bench:
        lines += ["", "## Image tower throughput (onnxruntime CPU, 2 threads, batch 32)", ""]
        lines += _bench(chosen.variant)
    return "\n".join(lines) + "\n"
