"""Evaluate a bundle on the synthetic scenes: retrieval, counting, binding, vision-free search.

One pass renders ``n`` scenes of a split at the bundle's image size, embeds every image once and
every distinct text once (ONNX Runtime on CPU, batches of 32), and scores everything from those
embeddings. Each metric is reported over all ``n`` queries, over the seen scenes and over the
``held_out`` ones (queries restricted, gallery always the full ``n``), with the gap seen - held-out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from models.data.scenes import CAPTION_KINDS, Scene, generate_split
from models.eval.encoder import BATCH_SIZE, BundleEncoder
from models.eval.metrics import pad_ragged, pairwise_accuracy, recall_at_k
from models.eval.pairs import count_pair, negative_pairs
from models.eval.report import METRICS, check_targets, write_report
from service.core.bundle.manifest import load_bundle

__all__ = ["BundleEncoder", "evaluate", "write_report"]

logger = logging.getLogger(__name__)

RECALL_KS = (1, 5, 10)
# Negative kind -> metric key.
NEGATIVE_METRICS = {
    "attribute": "attribute_accuracy",
    "relation": "relation_accuracy",
    "count": "count_swap_accuracy",
}


class _TextBank:
    """Distinct texts in first-seen order, so a caption shared by many scenes is embedded once."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def add(self, text: str) -> int:
        return self.index.setdefault(text, len(self.index))

    def add_all(self, texts: list[str]) -> list[int]:
        return [self.add(t) for t in texts]

    @property
    def texts(self) -> list[str]:
        return list(self.index)


class _Scores:
    """Every score the metrics need, computed once from the embeddings.

    Discrimination is kept as margins: ``negative score - true score`` per (image, negative),
    so one row of margins per image; the image passes when every margin is < 0 (see
    :func:`_discrimination`).
    """

    def __init__(self, scenes: list[Scene], enc: BundleEncoder) -> None:
        bank = _TextBank()
        caption_ids = {k: [bank.add(s.captions[k][0]) for s in scenes] for k in CAPTION_KINDS}
        rewrites = [s.captions["long"][1] if len(s.captions["long"]) > 1 else None for s in scenes]
        self.description_fallbacks = sum(r is None for r in rewrites)
        query_ids = [
            bank.add(r if r is not None else s.captions["long"][0])
            for r, s in zip(rewrites, scenes, strict=True)
        ]
        desc_ids = [bank.add(s.description) for s in scenes]
        count = [count_pair(s) for s in scenes]
        count_ids = [(bank.add(t), bank.add_all(negs)) for t, negs in count]
        pairs = [negative_pairs(s) for s in scenes]
        self.anchor_fallbacks = sum(f for _, f in pairs)
        pair_ids = {
            kind: [
                (bank.add_all([t for t, _ in p[kind]]), bank.add_all([n for _, n in p[kind]]))
                for p, _ in pairs
            ]
            for kind in NEGATIVE_METRICS
        }

        images = [s.render(enc.image_size) for s in scenes]
        img = enc.embed_images(images)
        joint, sentence = enc.embed_texts(bank.texts)
        logger.info("embedded %d images and %d distinct texts", len(scenes), len(bank.index))

        self.t2i = {k: joint[caption_ids[k]] @ img.T for k in CAPTION_KINDS}
        self.i2t = img @ joint[caption_ids["long"]].T
        self.description = sentence[query_ids] @ sentence[desc_ids].T

        def margins(i: int, true_ids: int | list[int], neg_ids: list[int]) -> np.ndarray:
            return joint[neg_ids] @ img[i] - joint[true_ids] @ img[i]

        self.margins = {"count_accuracy": [margins(i, t, n) for i, (t, n) in enumerate(count_ids)]}
        for kind, key in NEGATIVE_METRICS.items():
            self.margins[key] = [margins(i, t, n) for i, (t, n) in enumerate(pair_ids[kind])]
        self.support = {key: sum(m.size > 0 for m in rows) for key, rows in self.margins.items()}


def _discrimination(margins: list[np.ndarray], rows: np.ndarray) -> float | None:
    """Share of the images in ``rows`` whose true text beats every negative strictly.

    ``pairwise_accuracy(0, negative - true)`` is ``true > negative`` for every negative, ties
    failing, also when each negative has its own true text. Images without negatives are left
    out; None when no image has any.
    """
    keep = [int(i) for i in rows if margins[i].size]
    if not keep:
        return None
    return pairwise_accuracy(np.zeros(len(keep)), pad_ragged([margins[i] for i in keep]))


def _group_metrics(scores: _Scores, rows: np.ndarray) -> dict[str, float | None]:
    """Every metric with the queries restricted to ``rows`` (the gallery stays complete)."""
    if rows.size == 0:
        return {key: None for key, _ in METRICS}
    out: dict[str, float | None] = {}
    for kind in CAPTION_KINDS:
        for k in RECALL_KS:
            out[f"t2i_{kind}_r{k}"] = recall_at_k(scores.t2i[kind][rows], k, rows)
    out["i2t_long_r1"] = recall_at_k(scores.i2t[rows], 1, rows)
    for key, margins in scores.margins.items():
        out[key] = _discrimination(margins, rows)
    out["description_r1"] = recall_at_k(scores.description[rows], 1, rows)
    return out


def _gap(seen: dict[str, float | None], held: dict[str, float | None]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key, _ in METRICS:
        a, b = seen.get(key), held.get(key)
        out[key] = None if a is None or b is None else a - b
    return out


def _count_matched_gap(
    scores: _Scores, held: np.ndarray, n_objects: np.ndarray
) -> dict[str, float | None]:
    """Seen - held-out within each object count, averaged with the held-out count mix.

    Held-out scenes hold more objects on average than seen ones (the more objects a scene has,
    the likelier one of them is a held-out pair by chance), so the raw gap also measures scene
    difficulty. Comparing scenes with the same number of objects isolates composition.
    """
    out: dict[str, float | None] = {}
    strata = []
    for count in np.unique(n_objects):
        seen_rows = np.flatnonzero(~held & (n_objects == count))
        held_rows = np.flatnonzero(held & (n_objects == count))
        if seen_rows.size and held_rows.size:
            gap = _gap(_group_metrics(scores, seen_rows), _group_metrics(scores, held_rows))
            strata.append((held_rows.size, gap))
    for key, _ in METRICS:
        weighted = [(w, v) for w, g in strata if (v := g[key]) is not None]
        total = sum(w for w, _ in weighted)
        out[key] = sum(w * v for w, v in weighted) / total if total else None
    return out


def evaluate(
    bundle_dir: Path,
    *,
    n_gallery: int = 1000,
    split: str = "test",
    seed_offset: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the whole evaluation of the bundle in ``bundle_dir``; a JSON-ready dict comes back.

    Raises ``ClipsearchError`` (bundle_invalid) for a missing or corrupt bundle and
    ``ValueError`` for ``n_gallery < 1``.
    """
    if n_gallery < 1:
        raise ValueError(f"n_gallery must be at least 1, got {n_gallery}")
    say = progress or (lambda msg: logger.info("%s", msg))
    start = time.perf_counter()
    bundle = load_bundle(Path(bundle_dir))
    enc = BundleEncoder(bundle, batch_size=BATCH_SIZE)
    say(f"evaluating {enc.ref} on {n_gallery} {split} scenes (offset {seed_offset})")
    scenes = generate_split(split, n_gallery, offset=seed_offset)
    scores = _Scores(scenes, enc)

    held = np.asarray([s.held_out for s in scenes], dtype=bool)
    groups = {
        "all": np.arange(len(scenes)),
        "seen": np.flatnonzero(~held),
        "held_out": np.flatnonzero(held),
    }
    metrics = {name: _group_metrics(scores, rows) for name, rows in groups.items()}
    n_objects = np.asarray([len(s.objects) for s in scenes])
    wall = time.perf_counter() - start
    m = bundle.manifest
    result: dict[str, Any] = {
        "bundle": m.ref,
        "bundle_dir": str(Path(bundle_dir)),
        "trained": m.trained,
        "split": split,
        "n": len(scenes),
        "seed_offset": seed_offset,
        "n_seen": int(groups["seen"].size),
        "n_held_out": int(groups["held_out"].size),
        "image_size": m.image_tower.image_size,
        "provider": "CPUExecutionProvider",
        "batch_size": enc.batch_size,
        "wall_time_s": round(wall, 3),
        "images_per_s": _rate(enc.images_embedded, enc.image_seconds),
        "texts_per_s": _rate(enc.texts_embedded, enc.text_seconds),
        "images_embedded": enc.images_embedded,
        "texts_embedded": enc.texts_embedded,
        "description_query_fallbacks": scores.description_fallbacks,
        "negative_support": scores.support,
        "relation_anchor_fallbacks": scores.anchor_fallbacks,
        "metrics": metrics,
        "gap": _gap(metrics["seen"], metrics["held_out"]),
        "gap_count_matched": _count_matched_gap(scores, held, n_objects),
        "mean_objects": {
            "seen": _mean(n_objects[~held]),
            "held_out": _mean(n_objects[held]),
        },
    }
    result["targets"] = check_targets(result)
    say(f"done in {wall:.1f} s")
    return result


def _rate(items: int, seconds: float) -> float | None:
    return round(items / seconds, 1) if seconds > 0 else None


def _mean(values: np.ndarray) -> float | None:
    return round(float(values.mean()), 3) if values.size else None
