"""``clipsearch bench ...``: the benchmarks that prove the README's figures.

The drivers live in ``loadtests.bench`` (a source checkout's, not a production image's); this
command resolves the bundle as a served process would and hands them its folder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

app = typer.Typer(help="Benchmarks that prove the numbers in the README.", no_args_is_help=True)

if TYPE_CHECKING:
    from service.core.config import Settings

BundleOpt = Annotated[str | None, typer.Option(help="bundle folder or zoo name")]


def _settings(bundle: str | None) -> Settings:
    """Quiet logs, and the settings from the environment with ``--bundle`` over them."""
    from service.core.config import Settings

    logging.basicConfig(level=logging.WARNING)
    settings = Settings()
    return settings if bundle is None else settings.model_copy(update={"bundle": bundle})


def _bundle(settings: Settings) -> Path:
    from clipsearch.bundles import resolve_bundle

    try:
        import loadtests.bench  # noqa: F401
    except ImportError as exc:  # a production image: .dockerignore leaves loadtests out
        typer.echo(
            "the benchmarks run from a source checkout (loadtests/ is not installed)", err=True
        )
        raise typer.Exit(2) from exc
    return resolve_bundle(settings)


@app.command("encoder")
def encoder(
    bundle: BundleOpt = None,
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
    settings = _settings(bundle)
    if threads:
        enc = settings.encoder.model_copy(update={"intra_op_threads": threads})
        settings = settings.model_copy(update={"encoder": enc})
    chosen = tuple(transport or ("inprocess", "grpc"))
    unknown = set(chosen) - {"inprocess", "grpc"}
    if unknown:
        raise typer.BadParameter(f"unknown transport(s): {', '.join(sorted(unknown))}")
    path = _bundle(settings)
    from loadtests.bench.console import print_encoder
    from loadtests.bench.load import write_report
    from loadtests.bench.run import run_encoder_bench

    report = run_encoder_bench(
        settings,
        path,
        seconds=seconds,
        clients=clients,
        bulk_clients=bulk_clients,
        transports=chosen,
    )
    print_encoder(report, write_report(report, out, "encoder.json"))


@app.command("ingest")
def ingest(
    bundle: BundleOpt = None,
    images: Annotated[int, typer.Option(min=1, help="scene PNGs to write and ingest")] = 2000,
    out: Annotated[Path, typer.Option(help="folder for ingest.json")] = Path("bench-results"),
) -> None:
    """End-to-end image ingestion (read, decode, embed, upsert) vs the encoder's raw rate."""
    settings = _settings(bundle)
    path = _bundle(settings)
    from loadtests.bench.console import print_ingest
    from loadtests.bench.ingest import run_ingest_bench
    from loadtests.bench.load import write_report

    report = run_ingest_bench(settings, path, images=images)
    print_ingest(report, write_report(report, out, "ingest.json"))
    if not report["points_ok"]:
        raise typer.Exit(1)


@app.command("reindex")
def reindex(
    bundle: BundleOpt = None,
    images: Annotated[int, typer.Option(min=1, help="scene PNGs to ingest, then reindex")] = 2000,
    clients: Annotated[int, typer.Option(min=1, help="concurrent search clients")] = 4,
    baseline: Annotated[float, typer.Option(min=0.5, help="seconds of load before")] = 10.0,
    out: Annotated[Path, typer.Option(help="folder for reindex.json")] = Path("bench-results"),
) -> None:
    """A full reindex under search load on a real gateway: failed searches (target 0)."""
    path = _bundle(_settings(bundle))
    from loadtests.bench.console import print_reindex
    from loadtests.bench.load import write_report
    from loadtests.bench.reindex import run_reindex_bench

    report = run_reindex_bench(path, images=images, clients=clients, baseline_s=baseline)
    print_reindex(report, write_report(report, out, "reindex.json"))
    if not report["meets_target"]:
        raise typer.Exit(1)


@app.command("faults")
def faults(
    bundle: BundleOpt = None,
    images: Annotated[int, typer.Option(min=10, help="scene PNGs to ingest per scenario")] = 2000,
    out: Annotated[Path, typer.Option(help="folder for faults.json")] = Path("bench-results"),
) -> None:
    """Kill a worker, the gateway (writer), then Redis mid-job on a real Celery deployment:
    the collection ends with exactly N points and the job says so (issue 5's target)."""
    path = _bundle(_settings(bundle))
    from loadtests.bench.console import print_faults
    from loadtests.bench.faults import run_faults_bench
    from loadtests.bench.load import write_report

    report = run_faults_bench(path, images=images)
    print_faults(report, write_report(report, out, "faults.json"))
    if not report["ok"]:
        raise typer.Exit(1)


@app.command("scale")
def scale(
    max_points: Annotated[
        int, typer.Option(min=1000, help="stop at this collection size (1M takes long on 2 cores)")
    ] = 1_000_000,
    queries: Annotated[int, typer.Option(min=20, help="sequential searches per measurement")] = 300,
    server_max: Annotated[
        int, typer.Option(min=0, help="largest size for the server adapter (local mode)")
    ] = 100_000,
    builder_threads: Annotated[
        int, typer.Option(min=0, help="HNSW builder threads (0: the store's default)")
    ] = 0,
    sizes: Annotated[
        str | None, typer.Option(help="comma-separated sizes instead of 10k,100k,1M")
    ] = None,
    out: Annotated[Path, typer.Option(help="folder for scale.json")] = Path("bench-results"),
) -> None:
    """Search p50/p99 against collection size (10k, 100k, 1M), embedded (brute force, then an
    index built out of process under search load) and the server adapter on local mode."""
    logging.basicConfig(level=logging.WARNING)
    try:
        wanted = [int(s) for s in sizes.split(",")] if sizes else [10_000, 100_000, 1_000_000]
    except ValueError as exc:
        raise typer.BadParameter(f"--sizes takes integers, got {sizes!r}") from exc
    if any(s < 1000 for s in wanted):
        raise typer.BadParameter("every size must be at least 1000 points")
    chosen = [s for s in wanted if s <= max_points] or [max_points]
    try:
        from loadtests.bench.load import write_report
        from loadtests.bench.scale import run_scale_bench
    except ImportError as exc:
        typer.echo(
            "the benchmarks run from a source checkout (loadtests/ is not installed)", err=True
        )
        raise typer.Exit(2) from exc

    report = run_scale_bench(
        chosen,
        queries=queries,
        server_max=server_max,
        builder_threads=builder_threads or None,
        log=typer.echo,
        checkpoint=lambda partial: write_report(partial, out, "scale.json"),
    )
    path = write_report(report, out, "scale.json")
    typer.echo(f"wrote {path}")
