"""What the pages show, gathered from the components: encoder queues and throughput (from the
metrics registries), collections, jobs, rollouts and their comparison reports."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from service.admin import cards
from service.admin.context import AdminComponents
from service.core.schemas.admin import CollectionInfo

QUEUE_DEPTH = "clipsearch_encoder_queue_depth"
ITEMS_PER_SECOND = "clipsearch_encoder_items_per_second"
# Rollout states in which a build is still going (the old and the new names of the protocol).
ACTIVE_STATES = frozenset({"queued", "building", "running", "promoting"})


def encoder_load(registries: list[CollectorRegistry]) -> list[dict[str, Any]]:
    """Per bundle and tower: items queued per lane and items embedded per second."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for registry in registries:
        for family in registry.collect():
            if family.name not in (QUEUE_DEPTH, ITEMS_PER_SECOND):
                continue
            for sample in family.samples:
                labels = sample.labels
                key = (labels.get("bundle", ""), labels.get("tower", ""))
                row = rows.setdefault(
                    key,
                    {"bundle": key[0], "tower": key[1], "queued": {}, "items_per_s": 0.0},
                )
                if family.name == QUEUE_DEPTH:
                    lane = labels.get("lane", "")
                    row["queued"][lane] = row["queued"].get(lane, 0) + int(sample.value)
                else:
                    row["items_per_s"] = round(float(sample.value), 2)
    return [rows[k] for k in sorted(rows)]


def collection_info(
    components: AdminComponents, name: str, known: dict[str, cards.ModelCard] | None = None
) -> dict[str, Any]:
    """A collection with its versions, whether its bundle is served here and what that bundle
    is for (its card's domain and intended use); (not_found) for none."""
    known = cards.by_ref(components.embedder) if known is None else known
    described = components.store.describe(name)
    served = {b.ref for b in components.embedder.info().bundles}
    default = name == components.collection
    info = CollectionInfo.model_validate(
        {**described, "served": default or described.get("bundle") in served, "default": default}
    )
    row = info.model_dump()
    card = known.get(info.bundle or "")
    row["domain"] = card.domain if card else None
    row["intended_use"] = card.intended_use if card else None
    return row


def collections(components: AdminComponents) -> list[dict[str, Any]]:
    """Each collection with its versions, the bundle of each and what that bundle is for."""
    known = cards.by_ref(components.embedder)
    return [collection_info(components, name, known) for name in components.store.names()]


def progress(record: dict[str, Any]) -> dict[str, Any]:
    """A job's or a rollout's record with ``percent`` and ``eta`` ready for a page; a job's
    failed items are finished items too."""
    total = int(record.get("total") or 0)
    done = int(record.get("done") or 0) + int(record.get("failed") or 0)
    percent = 100.0 if record.get("state") in ("completed", "ready") and total == 0 else 0.0
    if total > 0:
        percent = min(100.0, 100.0 * done / total)
    return {**record, "percent": round(percent, 1), "eta": duration(record.get("eta_s"))}


def duration(seconds: Any) -> str:
    if seconds is None:
        return ""
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return ""
    if not math.isfinite(s) or s < 0:
        return ""
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s // 60:.0f} min {s % 60:.0f} s"
    return f"{s // 3600:.0f} h {s % 3600 // 60:.0f} min"


@dataclass(frozen=True)
class ComparisonRow:
    metric: str
    old: float | None
    new: float | None
    value: float | None  # a figure with no old/new sides (e.g. top-10 overlap)

    @property
    def count(self) -> bool:
        """A number of queries or searches (shown as a whole number, never charted)."""
        return self.metric.endswith(("searches", "queries", "(hashes only)"))

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "old": self.old, "new": self.new, "value": self.value,
                "count": self.count}  # fmt: skip


def _side(part: str) -> tuple[str, str | None]:
    """``recall@1_old`` -> (``recall@1``, ``old``); ``old`` -> ("", ``old``)."""
    lowered = part.lower()
    for side in ("old", "new"):
        if lowered == side:
            return "", side
        for sep in ("_", "-", ".", " "):
            if lowered.endswith(sep + side):
                return part[: -len(side) - 1], side
            if lowered.startswith(side + sep):
                return part[len(side) + 1 :], side
    return part, None


def comparison_rows(report: Any) -> list[ComparisonRow]:
    """Flatten a rollout's comparison report, whatever its nesting, into rows of old vs new:
    a key (at any depth) named ``old``/``new`` or ending in ``_old``/``_new`` is a side."""
    flat: dict[str, dict[str, float]] = {}
    order: list[str] = []

    def walk(node: Any, path: list[str], side: str | None) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                name, found = _side(str(key))
                walk(value, [*path, name] if name else path, found or side)
        elif isinstance(node, bool) or not isinstance(node, int | float):
            return
        else:
            label = " ".join(path) or "value"
            if label not in flat:
                flat[label] = {}
                order.append(label)
            flat[label][side or "value"] = float(node)

    walk(report or {}, [], None)
    rank = {key: i for i, key in enumerate(LABELS)}
    order.sort(key=lambda label: rank.get(label, len(rank)))
    return [
        ComparisonRow(
            LABELS.get(label, label.replace("_", " ")),
            flat[label].get("old"),
            flat[label].get("new"),
            flat[label].get("value"),
        )
        for label in order
    ]


# The comparison report's figures (service.core.schemas.admin.Comparison), named for a reader and
# in reading order; any other figure follows under its own name.
LABELS = {
    "overlap_at_10": "top-10 overlap",
    "recall_at_1": "golden recall@1",
    "recall_at_10": "golden recall@10",
    "score_p10": "score p10",
    "score_p50": "score p50",
    "score_p90": "score p90",
    "latency_p50_ms": "p50 latency (ms)",
    "searches": "searches",
    "sampled_queries": "sampled queries",
    "golden_queries": "golden queries",
    "image_queries_seen": "image queries seen (hashes only)",
}


def _latency(row: ComparisonRow) -> bool:
    return "latency" in row.metric.lower() or "(ms)" in row.metric.lower()


def charts(rows: list[ComparisonRow]) -> list[dict[str, Any]]:
    """The report's charts: quality (overlap, recall, scores) and latency, each on its scale."""
    quality = [r for r in rows if not r.count and not _latency(r)]
    latency = [r for r in rows if _latency(r)]
    drawn = [
        chart(quality, title="quality"),
        chart(latency, title="p50 latency (ms)", width=max(240, 44 + 100 * len(latency))),
    ]
    return [c for c in drawn if not c["empty"]]


def chart(
    rows: list[ComparisonRow], *, title: str = "", width: int = 640, height: int = 220
) -> dict[str, Any]:
    """Grouped bars (old grey, new blue, a figure of both green) as coordinates an inline SVG
    draws. The scale runs from min(0, lowest) to max(1, highest), so recall and overlap (0..1),
    fused scores (probabilities of relevance, 0..1), cosines (which go below 0) and a comparison
    recorded before fused scores were probabilities (spreads above the null, which pass 1) share
    it; bars grow from zero."""
    values = [v for r in rows for v in (r.old, r.new, r.value) if v is not None]
    lo, hi = min([0.0, *values]), max([1.0, *values])
    top, bottom, left = 24, 40, 44
    plot_h = height - top - bottom

    def y(v: float) -> float:
        return top + plot_h * (hi - v) / (hi - lo)

    slot = (width - left) / max(1, len(rows))
    bars: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        x0 = left + i * slot
        sides = [(k, v) for k, v in (("old", row.old), ("new", row.new), ("value", row.value))]
        present = [(k, v) for k, v in sides if v is not None]
        bar_w = min(28.0, (slot - 8) / max(1, len(present)))
        start = x0 + (slot - bar_w * len(present)) / 2
        for j, (side, value) in enumerate(present):
            assert value is not None
            bars.append(
                {
                    "x": round(start + j * bar_w, 1),
                    "y": round(y(max(value, 0.0)), 1),
                    "w": round(bar_w - 2, 1),
                    "h": round(abs(y(value) - y(0.0)), 1),
                    "side": side,
                    "value": f"{value:.3f}",
                    "metric": row.metric,
                }
            )
        labels.append({"x": round(x0 + slot / 2, 1), "y": height - bottom + 16, "text": row.metric})
    marks = sorted({lo, 0.0, hi} | ({(lo + hi) / 2} if lo == 0 else set()))
    ticks = [{"y": round(y(t), 1), "text": f"{t:.3g}"} for t in marks]
    return {
        "title": title,
        "width": width,
        "height": height,
        "bars": bars,
        "labels": labels,
        "ticks": ticks,
        "left": left,
        "right": width,
        "zero": round(y(0.0), 1),
        "empty": not bars,
    }
