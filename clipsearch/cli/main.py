"""``clipsearch``: serve, demo, ingest and search from the command line."""

from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from clipsearch.cli import client as remote
from clipsearch.cli.bench_cmd import app as bench_app
from clipsearch.cli.indexer_cmd import indexer as indexer_command
from clipsearch.cli.jobs_cmd import app as jobs_app
from clipsearch.cli.models_cmd import app as models_app
from clipsearch.cli.worker_cmd import worker as worker_command
from clipsearch.cli.writer_cmd import writer as writer_command
from service.core.config import Settings

app = typer.Typer(help="clipsearch: multimodal search service", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(bench_app, name="bench")
app.add_typer(jobs_app, name="jobs")
app.command("worker")(worker_command)
app.command("indexer")(indexer_command)
app.command("writer")(writer_command)

HostOpt = Annotated[str | None, typer.Option(help="bind address [env CLIPSEARCH_HOST]")]
PortOpt = Annotated[int | None, typer.Option(help="HTTP port [env CLIPSEARCH_PORT]")]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="store, jobs, thumbnails [CLIPSEARCH_DATA_DIR]")
]
BundleOpt = Annotated[str | None, typer.Option(help="bundle folder or zoo name")]
RootOpt = Annotated[
    list[Path] | None, typer.Option("--allow-root", help="folder that ingestion may read")
]
ServerOpt = Annotated[str, typer.Option("--server", help="gateway URL")]
KeyOpt = Annotated[str | None, typer.Option("--api-key", envvar="CLIPSEARCH_API_KEY")]
DEFAULT_SERVER = "http://127.0.0.1:8000"


def _settings(**overrides: Any) -> Settings:
    """Environment first, then the options given on the command line."""
    base = Settings()
    data = base.model_dump()
    roots = overrides.pop("allowed_roots", None)
    data.update({k: v for k, v in overrides.items() if v is not None})
    if roots:
        data["sources"]["allowed_roots"] = [*base.sources.allowed_roots, *roots]
    return Settings.model_validate(data)


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _check_exposure(settings: Settings, allow_anonymous: bool) -> None:
    try:
        loopback = ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        loopback = settings.host == "localhost"
    if not loopback and not settings.auth.api_keys and not allow_anonymous:
        typer.echo(
            f"refusing to serve on {settings.host} without API keys: set "
            "CLIPSEARCH_AUTH__API_KEYS, or pass --allow-anonymous if the network is trusted",
            err=True,
        )
        raise typer.Exit(2)


def _check_bundle(settings: Settings) -> None:
    """A missing bundle is a configuration error: say so before binding, not as a 503 later."""
    from clipsearch.bundles import resolve_bundle
    from service.core.errors import ClipsearchError

    if not settings.in_process_encoder:
        return  # the workers hold the bundle
    try:
        resolve_bundle(settings, quiet=True)
    except ClipsearchError as exc:
        typer.echo(exc.message, err=True)
        raise typer.Exit(2) from exc


def _serve(settings: Settings, factory: Any, allow_anonymous: bool) -> None:
    import uvicorn

    from service.gateway.app import create_app

    _configure_logging(settings.log_level)
    _check_exposure(settings, allow_anonymous)
    _check_bundle(settings)
    uvicorn.run(
        create_app(settings, factory),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
    )


@app.command()
def serve(
    host: HostOpt = None,
    port: PortOpt = None,
    data_dir: DataDirOpt = None,
    bundle: BundleOpt = None,
    allow_root: RootOpt = None,
    allow_anonymous: Annotated[bool, typer.Option(help="serve off loopback without keys")] = False,
) -> None:
    """Run the gateway (embedded by default: encoder, store and job runner in one process)."""
    from clipsearch.bootstrap import build_components

    settings = _settings(
        host=host, port=port, data_dir=data_dir, bundle=bundle, allowed_roots=allow_root
    )
    _serve(settings, build_components, allow_anonymous)


@app.command()
def demo(
    host: HostOpt = None,
    port: PortOpt = None,
    data_dir: DataDirOpt = None,
    bundle: BundleOpt = None,
) -> None:
    """Index the demo scenes under <data-dir>/demo and serve (`make run`; the scenes come from
    `clipsearch models demo-data`)."""
    from clipsearch.bootstrap import build_components

    settings = _settings(host=host, port=port, data_dir=data_dir, bundle=bundle)
    demo_dir = (settings.data_dir / "demo").resolve()
    if not any(demo_dir.rglob("*.png")):
        where = "" if data_dir is None else f" --data-dir {data_dir}"
        typer.echo(
            f"no demo scenes in {demo_dir}: make them with `clipsearch models demo-data{where}` "
            "(`make run` does this first)",
            err=True,
        )
        raise typer.Exit(2)
    settings = _settings(
        host=host, port=port, data_dir=data_dir, bundle=bundle, allowed_roots=[demo_dir]
    )
    _configure_logging(settings.log_level)
    log = logging.getLogger("clipsearch.demo")

    def factory(s: Settings) -> Any:
        components = build_components(s)
        job_id = components.jobs.submit("ingest_directory", {"source": str(demo_dir)})
        url = f"http://{s.host}:{s.port}"
        log.info("indexing the demo scenes: job %s (GET %s/v1/jobs/%s)", job_id, url, job_id)
        cat = demo_dir / "photos" / "chelsea.png"
        text, image = (
            ("a cat", cat) if cat.is_file() else ("a red circle", demo_dir / "scene-0000.png")
        )
        typer.echo(
            f"\nclipsearch demo is serving on {url}  (API docs: {url}/docs)\ntry:\n"
            f"  curl -s {url}/v1/search -H 'content-type: application/json' "
            f'-d \'{{"text": "{text}", "limit": 3}}\'\n'
            f"  curl -s {url}/v1/search/image -F file=@{image} -F limit=3\n"
        )
        return components

    _serve(settings, factory, allow_anonymous=False)


@app.command()
def ingest(
    sources: Annotated[
        list[str],
        typer.Argument(
            help="a directory (images, videos, + .txt / .desc.txt), a .jsonl manifest, "
            "or http(s) URLs"
        ),
    ],
    server: ServerOpt = DEFAULT_SERVER,
    api_key: KeyOpt = None,
) -> None:
    """Ingest through a running gateway, with a progress bar; exit 1 if any item failed."""
    failed = remote.ingest(server, source_spec(sources), api_key)
    raise typer.Exit(1 if failed else 0)


def source_spec(sources: list[str]) -> dict[str, Any]:
    """Command-line sources → the ``source`` of ``POST /v1/ingest`` (paths made absolute: the
    gateway resolves them against its own allowed roots)."""
    urls = [s for s in sources if s.startswith(("http://", "https://"))]
    if urls:
        if len(urls) != len(sources):
            raise typer.BadParameter("give either URLs or one path, not both")
        return {"urls": urls}
    if len(sources) != 1:
        raise typer.BadParameter("give one directory or manifest (or any number of URLs)")
    path = str(Path(sources[0]).expanduser().resolve())
    return {"manifest": path} if path.endswith(".jsonl") else {"directory": path}


@app.command()
def search(
    text: Annotated[str | None, typer.Argument(help="query text")] = None,
    image: Annotated[Path | None, typer.Option(help="query image file")] = None,
    mode: Annotated[str, typer.Option(help="image|caption|description|hybrid|auto")] = "auto",
    limit: Annotated[int, typer.Option(min=1, max=100)] = 10,
    server: ServerOpt = DEFAULT_SERVER,
    api_key: KeyOpt = None,
) -> None:
    """Search a running gateway and print a table of hits."""
    if (text is None) == (image is None):
        typer.echo("give a query text or --image FILE (not both)", err=True)
        raise typer.Exit(2)
    remote.search(server, text=text, image=image, mode=mode, limit=limit, api_key=api_key)


def main() -> None:  # pragma: no cover - console entry
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    app()
