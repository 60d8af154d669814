"""``clipsearch jobs``: list, look at, cancel and resume ingestion jobs on a running gateway.

``list`` prints one line per job, newest first; ``show`` and ``cancel`` print the job (stdout;
``--json`` for the API's JSON); ``retry`` (resume an interrupted, failed or cancelled job
under its own id, skipping what is indexed) and ``retry-failed`` (a new job over the failed
items) follow the job with a progress bar, as ``clipsearch ingest`` does, and exit 1 if any
item failed or the job did not complete.
"""

from __future__ import annotations

from typing import Annotated

import typer

from clipsearch.cli import client as remote
from clipsearch.cli.options import DEFAULT_SERVER, JsonOpt, KeyOpt, ServerOpt

app = typer.Typer(help="Look at, cancel and resume ingestion jobs.", no_args_is_help=True)

JobArg = Annotated[str, typer.Argument(help="job id, as `clipsearch ingest` and the API print it")]


@app.command("list")
def list_jobs(
    limit: Annotated[int, typer.Option(min=1, max=100, help="jobs to show")] = 20,
    offset: Annotated[int, typer.Option(min=0, help="newest jobs to skip")] = 0,
    collection: Annotated[
        str | None,
        typer.Option(
            "--collection", help="its jobs only; default: every collection the key ingests into"
        ),
    ] = None,
    server: ServerOpt = DEFAULT_SERVER,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List jobs, newest first: id, state and counts, one line each."""
    remote.list_jobs(
        server, api_key, limit=limit, offset=offset, as_json=as_json, collection=collection
    )


@app.command("show")
def show(
    job_id: JobArg,
    server: ServerOpt = DEFAULT_SERVER,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print a job's state, counts and errors."""
    raise typer.Exit(remote.job_action(server, job_id, "show", api_key, as_json=as_json))


@app.command("cancel")
def cancel(
    job_id: JobArg,
    server: ServerOpt = DEFAULT_SERVER,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Cancel a queued or running job; what is indexed stays indexed."""
    raise typer.Exit(remote.job_action(server, job_id, "cancel", api_key, as_json=as_json))


@app.command("retry")
def retry(
    job_id: JobArg,
    server: ServerOpt = DEFAULT_SERVER,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Resume an interrupted, failed or cancelled job under its id and follow it; exit 1 if
    any item failed."""
    failed = remote.job_action(server, job_id, "retry", api_key, as_json=as_json)
    raise typer.Exit(1 if failed else 0)


@app.command("retry-failed")
def retry_failed(
    job_id: JobArg,
    server: ServerOpt = DEFAULT_SERVER,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a new job over this job's failed items and follow it; exit 1 if any failed again."""
    failed = remote.job_action(server, job_id, "retry-failed", api_key, as_json=as_json)
    raise typer.Exit(1 if failed else 0)
