"""``clipsearch bench encoder``: the dynamic batcher's benchmark (see bench/encoder.py)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Benchmarks that prove the numbers in the README.", no_args_is_help=True)

if TYPE_CHECKING:
    from service.core.config import Settings


def _settings(bundle: str | None) -> Settings:
    """Quiet logs, and the settings from the environment with ``--bundle`` over them."""
    from service.core.config import Settings

    logging.basicConfig(level=logging.WARNING)
    settings = Settings()
    return settings if bundle is None else settings.model_copy(update={"bundle": bundle})


@app.command("encoder")
def encoder(
    bundle: Annotated[str | None, typer.Option(help="bundle folder or zoo name")] = None,
    threads: Annotated[int, typer.Option(min=0, help="ONNX Runtime intra-op threads")] = 0,
    seconds: Annotated[float, typer.Option(min=0.5, help="seconds per measurement")] = 4.0,
    clients: Annotated[int, typer.Option(min=1, help="concurrent single-item clients")] = 64,
    bulk_clients: Annotated[int, typer.Option(min=1, help="clients saturating bulk")] = 2,
    transport: Annotated[
        list[str] | None, typer.Option(help="inprocess and/or grpc (default both)")
    ] = None,
    out: Annotated[Path, typer.Option(help="folder for encoder.json")] = Path("bench-results"),
) -> None:
    """Ceiling vs served throughput, interactive latency idle and under bulk, overload."""
    from service.cli.bench.load import write_report
    from service.cli.bench.run import run_encoder_bench
    from service.cli.bootstrap import resolve_bundle

    settings = _settings(bundle)
    if threads:
        enc = settings.encoder.model_copy(update={"intra_op_threads": threads})
        settings = settings.model_copy(update={"encoder": enc})
    chosen = tuple(transport or ("inprocess", "grpc"))
    unknown = set(chosen) - {"inprocess", "grpc"}
    if unknown:
        raise typer.BadParameter(f"unknown transport(s): {', '.join(sorted(unknown))}")
    path = resolve_bundle(settings)
    report = run_encoder_bench(
        settings,
        path,
        seconds=seconds,
        clients=clients,
        bulk_clients=bulk_clients,
        transports=chosen,
    )
    written = write_report(report, out, "encoder.json")
    print_report(report)
    Console().print(f"wrote {written}")


def print_report(report: dict) -> None:  # type: ignore[type-arg]
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
    if "overload" in report:
        o = report["overload"]
        console.print(
            f"overload: {o['clients']} clients, max_queue {o['max_queue']}: refused "
            f"p99 {o['refused'].get('p99_ms', 0):.1f} ms (n={o['refused'].get('n', 0)}), "
            f"accepted max {o['accepted'].get('max_ms', 0):.0f} ms, "
            f"rss {o['rss_mb_before']} -> {o['rss_mb_after']} MB "
            f"(second half +{o['rss_mb_growth_second_half']} MB)"
        )


@app.command("ingest")
def ingest(
    bundle: Annotated[str | None, typer.Option(help="bundle folder or zoo name")] = None,
    images: Annotated[int, typer.Option(min=1, help="scene PNGs to write and ingest")] = 2000,
    out: Annotated[Path, typer.Option(help="folder for ingest.json")] = Path("bench-results"),
) -> None:
    """End-to-end image ingestion (read, decode, embed, upsert) vs the encoder's raw rate."""
    from service.cli.bench.ingest import run_ingest_bench
    from service.cli.bench.load import write_report
    from service.cli.bootstrap import resolve_bundle

    settings = _settings(bundle)
    report = run_ingest_bench(settings, resolve_bundle(settings), images=images)
    written = write_report(report, out, "ingest.json")
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
    table.add_row("ingest (submit -> completed)", f"{got['items_per_s']:.0f}", "")
    console.print(table)
    console.print(f"reference drift (after / before): {report['reference_drift']:.2f}")
    console.print(
        f"job {got['state']}: {got['done']} indexed, {got['failed']} failed, "
        f"{got['points']} points (expected {report['images']}); "
        f"target ratio {report['target_ratio']}: {'met' if report['meets_target'] else 'NOT met'}"
    )
    console.print(f"wrote {written}")
    if not report["points_ok"]:
        raise typer.Exit(1)


@app.command("reindex")
def reindex(
    bundle: Annotated[str | None, typer.Option(help="bundle folder or zoo name")] = None,
    images: Annotated[int, typer.Option(min=1, help="scene PNGs to ingest, then reindex")] = 2000,
    clients: Annotated[int, typer.Option(min=1, help="concurrent search clients")] = 4,
    baseline: Annotated[float, typer.Option(min=0.5, help="seconds of load before")] = 10.0,
    out: Annotated[Path, typer.Option(help="folder for reindex.json")] = Path("bench-results"),
) -> None:
    """A full reindex under search load on a real gateway: failed searches (target 0)."""
    from service.cli.bench.load import write_report
    from service.cli.bench.reindex import run_reindex_bench
    from service.cli.bootstrap import resolve_bundle

    settings = _settings(bundle)
    report = run_reindex_bench(
        resolve_bundle(settings), images=images, clients=clients, baseline_s=baseline
    )
    written = write_report(report, out, "reindex.json")
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
    if not report["meets_target"]:
        raise typer.Exit(1)


@app.command("faults")
def faults(
    bundle: Annotated[str | None, typer.Option(help="bundle folder or zoo name")] = None,
    images: Annotated[int, typer.Option(min=10, help="scene PNGs to ingest per scenario")] = 2000,
    out: Annotated[Path, typer.Option(help="folder for faults.json")] = Path("bench-results"),
) -> None:
    """Kill a worker, the gateway (writer), then Redis mid-job on a real Celery deployment:
    the collection ends with exactly N points and the job says so (issue 5's target)."""
    from service.cli.bench.faults import run_faults_bench
    from service.cli.bench.load import write_report
    from service.cli.bootstrap import resolve_bundle

    settings = _settings(bundle)
    report = run_faults_bench(resolve_bundle(settings), images=images)
    written = write_report(report, out, "faults.json")
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
    if not report["ok"]:
        raise typer.Exit(1)
