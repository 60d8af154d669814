"""The figures pages show: the comparison report flattened into old/new rows and its chart,
progress, durations, and encoder load read from a real metrics registry."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from service.admin.data import (
    chart,
    charts,
    comparison_rows,
    duration,
    encoder_load,
    progress,
)
from service.core.schemas.admin import Comparison
from service.encoder.metrics import EncoderMetrics

REPORT = {
    "source_bundle": "tiny-test@0.1.0",
    "bundle": "tiny-narrow@0.1.0",
    "sampled_queries": 4,
    "image_queries_seen": 1,
    "golden_queries": 2,
    "overlap_at_10": 0.6,
    "old": {"version": "v1", "score_kind": "cosine", "recall_at_1": 0.5, "recall_at_10": 1.0,
            "score_p10": -0.2, "score_p50": 0.3, "score_p90": 0.8, "latency_p50_ms": 4.5,
            "searches": 6},
    "new": {"version": "v2", "score_kind": "cosine", "recall_at_1": 1.0, "recall_at_10": 1.0,
            "score_p10": 0.1, "score_p50": 0.4, "score_p90": 0.9, "latency_p50_ms": 2.5,
            "searches": 6},
    "queries": [{"text": "red", "overlap_at_10": 0.6, "old": ["a"], "new": ["b"]}],
    "computed_at": "2026-12-07T05:00:00Z",
}  # fmt: skip


def test_the_comparison_report_becomes_old_and_new_rows_in_reading_order() -> None:
    rows = {r.metric: r for r in comparison_rows(REPORT)}
    names = list(rows)
    assert names[:7] == [
        "top-10 overlap", "golden recall@1", "golden recall@10", "score p10", "score p50",
        "score p90", "p50 latency (ms)",
    ]  # fmt: skip
    assert rows["top-10 overlap"].value == 0.6
    assert (rows["golden recall@1"].old, rows["golden recall@1"].new) == (0.5, 1.0)
    assert (rows["p50 latency (ms)"].old, rows["p50 latency (ms)"].new) == (4.5, 2.5)
    assert rows["sampled queries"].value == 4
    assert "version" not in names  # text is not a figure
    assert comparison_rows(None) == []
    assert comparison_rows({"recall_at_1_old": 0.1, "new_recall_at_1": 0.2})[0].old == 0.1


def test_the_charts_draw_quality_and_latency_each_on_its_own_scale() -> None:
    quality, latency = charts(comparison_rows(REPORT))
    assert {b["metric"] for b in quality["bars"]} == {
        "top-10 overlap", "golden recall@1", "golden recall@10", "score p10", "score p50",
        "score p90",
    }  # fmt: skip
    assert {b["metric"] for b in latency["bars"]} == {"p50 latency (ms)"}
    recall = [b for b in quality["bars"] if b["metric"] == "golden recall@1"]
    assert [b["side"] for b in recall] == ["old", "new"]
    assert recall[1]["h"] == pytest.approx(2 * recall[0]["h"], abs=0.2)  # 1.0 is twice 0.5
    assert recall[1]["y"] + recall[1]["h"] == pytest.approx(quality["zero"], abs=0.2)
    # A negative score (a cosine) hangs below the zero line; one over 1 (a comparison recorded
    # before fused scores were probabilities: spreads above the null) stretches the scale.
    negative = next(b for b in quality["bars"] if b["metric"] == "score p10" and b["side"] == "old")
    assert negative["y"] == quality["zero"] and negative["h"] > 0
    assert negative["value"] == "-0.200"
    stretched = chart(comparison_rows({"score_p50": {"old": 2.5, "new": 0.5}}))
    tall, short = stretched["bars"]
    assert tall["y"] >= 0 and tall["h"] == pytest.approx(5 * short["h"], abs=0.2)
    slow, fast = latency["bars"]
    assert slow["h"] > fast["h"]  # 4.5 ms old, 2.5 ms new
    assert charts([]) == []


def test_a_comparison_says_what_its_scores_are_also_one_recorded_before_probabilities() -> None:
    """A fused search scores by probability now; a rollout compared before that recorded
    ``standardised`` and still reads back, and a kind that never existed is refused."""
    report: dict[str, Any] = json.loads(json.dumps(REPORT))
    for kind in ("cosine", "probability", "standardised"):
        report["new"]["score_kind"] = kind
        assert Comparison.model_validate(report).new.score_kind == kind
    report["old"]["score_kind"] = "zscore"
    with pytest.raises(ValidationError, match="score_kind"):
        Comparison.model_validate(report)


def test_progress_and_durations() -> None:
    assert progress({"total": 4, "done": 3, "failed": 1})["percent"] == 100.0
    assert progress({"total": 8, "done": 2, "eta_s": 75})["percent"] == 25.0
    assert progress({"total": 8, "done": 2, "eta_s": 75})["eta"] == "1 min 15 s"
    assert progress({"total": 0, "done": 0, "state": "ready"})["percent"] == 100.0
    assert [duration(v) for v in (None, "x", -1, float("nan"), 5, 7300)] == [
        "", "", "", "", "5 s", "2 h 1 min"
    ]  # fmt: skip


def test_encoder_load_reads_queues_and_throughput_per_bundle() -> None:
    metrics = EncoderMetrics()
    metrics.queue_depth.labels("a@1", "image", "bulk").set(7)
    metrics.queue_depth.labels("a@1", "image", "interactive").set(2)
    metrics.items_per_second.labels("a@1", "image").set(12.345)
    metrics.queue_depth.labels("b@2", "text", "bulk").set(0)
    rows = encoder_load([metrics.registry])
    assert rows == [
        {"bundle": "a@1", "tower": "image", "queued": {"bulk": 7, "interactive": 2},
         "items_per_s": 12.35},
        {"bundle": "b@2", "tower": "text", "queued": {"bulk": 0}, "items_per_s": 0.0},
    ]  # fmt: skip
