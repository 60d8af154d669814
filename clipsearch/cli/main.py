"""``clipsearch``: serve, demo, ingest and search from the command line."""

from __future__ import annotations

import importlib.util
import ipaddress
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Annotated, Any, TypedDict

import typer
from pydantic import ValidationError

from clipsearch.cli import client as remote
from clipsearch.cli.bench_cmd import app as bench_app
from clipsearch.cli.collections_cmd import app as collections_app
from clipsearch.cli.indexer_cmd import indexer as indexer_command
from clipsearch.cli.jobs_cmd import app as jobs_app
from clipsearch.cli.models_cmd import app as models_app
from clipsearch.cli.worker_cmd import worker as worker_command
from clipsearch.cli.writer_cmd import writer as writer_command
from clipsearch.memory import limit_malloc_arenas
from service.core.config import Settings

app = typer.Typer(help="clipsearch: multimodal search service", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(bench_app, name="bench")
app.add_typer(jobs_app, name="jobs")
app.add_typer(collections_app, name="collections")
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
    list[str] | None,
    typer.Option(
        "--allow-root", help="folder, or object-store prefix (s3://bucket/pre), ingestion may read"
    ),
]
ServerOpt = Annotated[str, typer.Option("--server", help="gateway URL")]
KeyOpt = Annotated[str | None, typer.Option("--api-key", envvar="CLIPSEARCH_API_KEY")]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="print the result as JSON on stdout (the API's shape)")
]
CollectionOpt = Annotated[
    str | None,
    typer.Option("--collection", help="the collection it acts on; default: the gateway's own"),
]
DEFAULT_SERVER = "http://127.0.0.1:8000"


def _settings(**overrides: Any) -> Settings:
    """Environment first, then the options given on the command line. Invalid settings are
    one message per problem and exit 2 (never a traceback; no value is quoted: it may be a key)."""
    try:
        base = Settings()
        data = base.model_dump()
        roots = overrides.pop("allowed_roots", None)
        data.update({k: v for k, v in overrides.items() if v is not None})
        if roots:
            data["sources"]["allowed_roots"] = [*base.sources.allowed_roots, *roots]
        return Settings.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors(include_input=False, include_url=False):
            where = ".".join(str(part) for part in error["loc"]) or "settings"
            typer.echo(f"invalid setting {where}: {error['msg']}", err=True)
        raise typer.Exit(2) from None


def _given_roots(roots: list[str] | None) -> list[Path | str]:
    """``--allow-root`` folders, made absolute; a folder that is not there is a typo to report
    now, not a 403 at the first ingest. An object-store prefix (``s3://bucket/pre``) is kept as
    given (``sources.allowed_prefixes``)."""
    given: list[Path | str] = []
    for root in roots or []:
        if "://" in root:
            given.append(root)
            continue
        path = Path(root).expanduser().resolve()
        if not path.is_dir():
            typer.echo(f"--allow-root {path}: no such folder", err=True)
            raise typer.Exit(2)
        given.append(path)
    return given


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


def _listen(host: str, port: int) -> socket.socket:
    """Bind the HTTP port before anything loads: a port in use is one line and exit 1, not a
    traceback after the model has loaded (uvicorn listens on this socket)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on connections whose socket says
    # it is TCP. Without it uvicorn's separate header and body writes meet Nagle's algorithm and
    # the client's delayed ACK: every response took ~40 ms more on loopback.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        typer.echo(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; is another server running "
            "there? Choose another port with --port (CLIPSEARCH_PORT; `make run PORT=...`)",
            err=True,
        )
        raise typer.Exit(1) from None
    return sock


def _stop_on_failure(runtime: Any, server: Any) -> None:
    """A failed start-up (data dir locked, corrupt bundle) stops the server: the process exits
    with the reason instead of answering 503 for ever."""
    if not runtime.wait():
        server.should_exit = True


def _with_grpc(app: Any, settings: Settings, sock: socket.socket) -> None:
    """The gRPC API on ``grpc_port`` (0 = none), bound now and served for the app's lifespan;
    a port in use is one line and exit 1, as for HTTP."""
    from service.core.errors import ClipsearchError
    from service.gateway.grpc import serve_grpc

    if settings.grpc_port:
        try:
            serve_grpc(app, host=settings.host, port=settings.grpc_port)
        except ClipsearchError as exc:
            sock.close()
            typer.echo(exc.message, err=True)
            raise typer.Exit(1) from None


class _IO(TypedDict):
    loop: str
    http: str


def _fast_io() -> _IO:
    """uvicorn's event loop and HTTP parser: uvloop and httptools (C) when installed (they are
    dependencies; not on every platform), else uvicorn's choice. The pure-Python h11 parser alone
    was ~19 % of the event loop's time under the embeddings load test."""

    def have(module: str) -> bool:
        return importlib.util.find_spec(module) is not None

    return _IO(
        loop="uvloop" if have("uvloop") else "auto",
        http="httptools" if have("httptools") else "auto",
    )


def _serve(settings: Settings, factory: Any, allow_anonymous: bool) -> None:
    import uvicorn

    from service.gateway.app import create_app

    _configure_logging(settings.log_level)
    _check_exposure(settings, allow_anonymous)
    _check_bundle(settings)
    sock = _listen(settings.host, settings.port)
    app = create_app(settings, factory)
    _with_grpc(app, settings, sock)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level.lower(),
            **_fast_io(),
        )
    )
    runtime = app.state.runtime
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    url = f"http://{host}:{sock.getsockname()[1]}"
    logging.getLogger("clipsearch.serve").info("serving on %s (API docs: %s/docs)", url, url)
    threading.Thread(
        target=_stop_on_failure, args=(runtime, server), name="startup-watch", daemon=True
    ).start()
    server.run(sockets=[sock])
    if runtime.error is not None:
        typer.echo(f"clipsearch cannot start: {runtime.error}", err=True)
        raise typer.Exit(1)


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
        host=host,
        port=port,
        data_dir=data_dir,
        bundle=bundle,
        allowed_roots=_given_roots(allow_root),
    )
    _serve(settings, build_components, allow_anonymous)


@app.command()
def demo(
    host: HostOpt = None,
    port: PortOpt = None,
    data_dir: DataDirOpt = None,
    bundle: BundleOpt = None,
    allow_root: RootOpt = None,
) -> None:
    """Index the demo scenes under <data-dir>/demo and serve (`make run`; the scenes come from
    `clipsearch models demo-data`); --allow-root lets you ingest a folder of your own too
    (`make run ALLOW=DIR`)."""
    from clipsearch.bootstrap import build_components

    roots = _given_roots(allow_root)
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
        host=host, port=port, data_dir=data_dir, bundle=bundle, allowed_roots=[demo_dir, *roots]
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


ColumnOpt = Annotated[str | None, typer.Option(help="a table's column for it")]


@app.command()
def ingest(
    sources: Annotated[
        list[str],
        typer.Argument(
            help="a directory (images, videos, + .txt / .desc.txt), a .jsonl manifest, "
            "http(s) URLs, webdataset shards (.tar; brace patterns such as "
            "'s3://bucket/shards/{00000..00019}.tar') or a table (.parquet, .csv, .tsv; with "
            "--table for a .jsonl); paths, http(s):// or s3://"
        ),
    ],
    url_col: ColumnOpt = None,
    caption_col: ColumnOpt = None,
    id_col: ColumnOpt = None,
    description_col: ColumnOpt = None,
    table: Annotated[
        bool, typer.Option("--table", help="read the one source as a table (a .jsonl too)")
    ] = False,
    collection: CollectionOpt = None,
    server: ServerOpt = DEFAULT_SERVER,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ingest through a running gateway (into --collection), with a progress bar (stderr);
    print the job (stdout); exit 1 if any item failed."""
    columns = {
        role: name
        for role, name in (
            ("uri", url_col),
            ("caption", caption_col),
            ("id", id_col),
            ("description", description_col),
        )
        if name is not None
    }
    spec = source_spec(sources, columns=columns, table=table)
    failed = remote.ingest(server, spec, api_key, as_json=as_json, collection=collection)
    raise typer.Exit(1 if failed else 0)


@app.command()
def export(
    dest: Annotated[
        str, typer.Argument(help="a folder or s3:// prefix under the gateway's allowed roots")
    ],
    collection: Annotated[str | None, typer.Option(help="default: the served one")] = None,
    rows_per_file: Annotated[int, typer.Option(min=1, help="points per parquet file")] = 10_000,
    server: ServerOpt = DEFAULT_SERVER,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Export a collection (ids, every named vector, payload; the bundle in each file's
    metadata) as parquet files; `clipsearch ingest DEST/part-00000.parquet` brings them back
    (with the same bundle, without the encoder). Prints the files written."""
    body: dict[str, Any] = {"to": dest if "://" in dest else str(Path(dest).expanduser().resolve())}
    body["rows_per_file"] = rows_per_file
    if collection:
        body["collection"] = collection
    remote.export(server, body, api_key, as_json=as_json)


TABLE_SUFFIXES = (".parquet", ".pq", ".csv", ".tsv", ".ndjson")


def source_spec(
    sources: list[str], *, columns: dict[str, str] | None = None, table: bool = False
) -> dict[str, Any]:
    """Command-line sources → the ``source`` of ``POST /v1/ingest`` (paths made absolute: the
    gateway resolves them against its own allowed roots). ``.tar`` sources are webdataset
    shards, tables go by suffix (``--table`` for a ``.jsonl`` table); ``columns`` (the
    ``--*-col`` options) go with a table only."""

    def absolute(source: str) -> str:
        return source if "://" in source else str(Path(source).expanduser().resolve())

    shards = [s for s in sources if s.split("?", 1)[0].endswith(".tar")]
    if shards:
        if len(shards) != len(sources) or columns or table:
            raise typer.BadParameter("give either .tar shards or another source, not both")
        return {"webdataset": [absolute(s) for s in shards]}
    if table or sources[0].split("?", 1)[0].lower().endswith(TABLE_SUFFIXES):
        if len(sources) != 1:
            raise typer.BadParameter("give one table")
        spec: dict[str, Any] = {"table": absolute(sources[0])}
        if columns:
            spec["columns"] = columns
        return spec
    if columns:
        raise typer.BadParameter("--url-col and the other column options go with a table")
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
    collection: CollectionOpt = None,
    server: ServerOpt = DEFAULT_SERVER,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
    grpc: Annotated[
        str | None, typer.Option("--grpc", help="ask the gRPC API at HOST:PORT, not --server")
    ] = None,
) -> None:
    """Search a running gateway (--collection): one line per hit on stdout (rank, score, kind,
    id, URI, caption), or --json."""
    if (text is None) == (image is None):
        typer.echo("give a query text or --image FILE (not both)", err=True)
        raise typer.Exit(2)
    remote.search(
        server,
        text=text,
        image=image,
        mode=mode,
        limit=limit,
        api_key=api_key,
        as_json=as_json,
        grpc_target=grpc,
        collection=collection,
    )


def main() -> None:  # pragma: no cover - console entry
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        limit_malloc_arenas()  # before any thread starts (clipsearch.memory)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
    app()
