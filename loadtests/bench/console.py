"""The benchmark reports as tables on the terminal (``clipsearch bench ...`` prints these)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def print_encoder(report: dict[str, Any], written: Path) -> None:
    console = Console()
    console.print(f"{report['bundle']} on {report['provider']}, {report['machine']['cpus']} CPUs")
    table = Table(
        "tower",
        "transport",
        "ceiling/s",
        "served/s",
        "ratio",
        "idle p99 ms",
        "bulk p99 ms",
        "p99 ratio",
        "bulk/s",
    )
    for tower, by in report["towers"].items():
        for name, r in by.items():
            table.add_row(
                tower,
                name,
                f"{r['ceiling_items_per_s']:.0f}",
                f"{r['served_items_per_s']:.0f}",
                f"{r['ratio']:.2f}",
                f"{r['latency_idle'].get('p99_ms', 0):.1f}",
                f"{r['latency_under_bulk'].get('p99_ms', 0):.1f}",
                f"{r['p99_ratio']:.2f}",
                f"{r['bulk_items_per_s']:.0f}",
            )
    console.print(table)
    p = report["padding"]
    console.print(
        f"text padding: batch-longest {p['batch_longest_items_per_s']:.0f}/s vs model max "
        f"{p['model_max_items_per_s']:.0f}/s = x{p['speedup']:.1f}"
    )
    image = report["ceiling"]["image"]
    stages = image.get("preprocess_ms", {})
    console.print(
        f"image: decode + infer {image['decode_and_infer_items_per_s']:.0f}/s; preprocessing "
        + ", ".join(f"{stage} {ms:.2f} ms" for stage, ms in stages.items())
        + " per image"
    )
    if "overload" in report:
        o = report["overload"]
        console.print(
            f"overload: {o['clients']} clients, max_queue {o['max_queue']}: refused "
            f"p99 {o['refused'].get('p99_ms', 0):.1f} ms (n={o['refused'].get('n', 0)}), "
            f"accepted max {o['accepted'].get('max_ms', 0):.0f} ms, "
            f"rss {o['rss_mb_before']} -> {o['rss_mb_after']} MB "
            f"(second half +{o['rss_mb_growth_second_half']} MB)"
        )
    console.print(f"wrote {written}")


def print_ingest(report: dict[str, Any], written: Path) -> None:
    console = Console()
    console.print(f"{report['bundle']} on {report['provider']}, {report['machine']['cpus']} CPUs")
    ref, got = report["reference"], report["ingest"]
    table = Table("measure", "items/s", "ingest ratio")
    table.add_row(
        "decode + infer (batch 64, mean of before and after)",
        f"{ref['decode_and_infer_items_per_s']:.0f}",
        f"{report['ratio_to_decode_and_infer']:.2f}",
    )
    table.add_row(
        "ORT only (batch 64)",
        f"{ref['ort_only_items_per_s']:.0f}",
        f"{report['ratio_to_ort_only']:.2f}",
    )
    table.add_row("ingest a folder (submit -> completed)", f"{got['items_per_s']:.0f}", "")
    for name, label in (("ingest_shards_local", "local"), ("ingest_shards_s3", "S3 (moto)")):
        run = report.get(name, {})
        if "items_per_s" in run:
            table.add_row(
                f"ingest {report['shards']} webdataset shards, {label}",
                f"{run['items_per_s']:.0f}",
                f"{run['ratio_to_decode_and_infer']:.2f}",
            )
        elif "skipped" in run:
            table.add_row(f"ingest webdataset shards, {label}", "skipped", run["skipped"])
    console.print(table)
    console.print(f"reference drift (after / before): {report['reference_drift']:.2f}")
    console.print(
        f"job {got['state']}: {got['done']} indexed, {got['failed']} failed, "
        f"{got['points']} points (expected {report['images']}); "
        f"target ratio {report['target_ratio']}: {'met' if report['meets_target'] else 'NOT met'}"
    )
    console.print(f"wrote {written}")


def print_reindex(report: dict[str, Any], written: Path) -> None:
    console = Console()
    table = Table("phase", "searches", "failed", "p50 ms", "p99 ms")
    for name in ("baseline", "during"):
        r = report[name]
        table.add_row(
            name, str(r["searches"]), str(r["failed"]), f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}"
        )
    console.print(table)
    ri = report["reindex"]
    console.print(
        f"reindex {ri['state']}: {ri['total']} points in {ri['seconds']:.1f} s "
        f"({report['reindex_items_per_s']:.0f}/s), {ri['rebuilt']} rebuilt, {ri['copied']} "
        f"copied; points {report['points_before']} -> {report['points_after']}; "
        f"{report['versions']['before']} -> {report['versions']['after']}; "
        f"p99 during/baseline {report.get('p99_ratio_during_to_baseline', float('nan')):.2f}; "
        f"target (0 failed searches): {'met' if report['meets_target'] else 'NOT met'}"
    )
    console.print(f"wrote {written}")


def print_faults(report: dict[str, Any], written: Path) -> None:
    console = Console()
    cpus = report["machine"]["cpus"]
    console.print(f"{report['bundle']}, {report['images']} images per scenario, {cpus} CPUs")
    for name, r in report["scenarios"].items():
        table = Table("measure", "value", title=name)
        for key in ("state", "done", "failed", "total", "points", "done_at_kill", "seconds"):
            table.add_row(key, str(r.get(key, "-")))
        if name == "worker_kill":
            table.add_row("tasks held by the killed worker", str(r.get("tasks_held_at_kill", "-")))
        if name == "redis_restart":
            for key in ("states_before_retry", "points_before_resume", "skipped"):
                table.add_row(key, str(r.get(key, "-")))
            table.add_row("created_at unchanged", str(r.get("created_at_unchanged", "-")))
        table.add_row("ok", "yes" if r["ok"] else f"NO {r.get('error', '')}")
        console.print(table)
    console.print(f"target: {'met' if report['ok'] else 'NOT met'}; wrote {written}")
