"""HTTP client side of the CLI: ingest with a progress bar, search as a table."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

POLL_S = 0.5


def _client(server: str, api_key: str | None) -> httpx.Client:
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.Client(base_url=server.rstrip("/"), headers=headers, timeout=60.0)


def _check(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            message = f"{error['type']}: {error['message']}"
        except (ValueError, KeyError, TypeError):
            message = response.text[:500]
        typer.echo(f"error {response.status_code}: {message}", err=True)
        raise typer.Exit(1)
    return response.json()


def _connect(server: str) -> typer.Exit:
    typer.echo(f"cannot reach {server}: is `clipsearch serve` running?", err=True)
    return typer.Exit(1)


def ingest(server: str, source: dict[str, Any], api_key: str | None) -> int:
    """Start a job and follow it; returns the number of failed items."""
    return _start_and_follow(server, api_key, "/v1/ingest", {"source": source})


def job_action(server: str, job_id: str, action: str, api_key: str | None) -> int:
    """``clipsearch jobs``: show or cancel a job (print it; 0 unless the request failed), or
    resume one / retry its failed items (follow the job it answers with, as ``ingest`` does)."""
    if action in ("retry", "retry-failed"):
        return _start_and_follow(server, api_key, f"/v1/jobs/{job_id}/{action}", None)
    method = "DELETE" if action == "cancel" else "GET"
    try:
        with _client(server, api_key) as http:
            job = _check(http.request(method, f"/v1/jobs/{job_id}"))
    except httpx.TransportError:
        raise _connect(server) from None
    _summary(Console(stderr=True), job)
    return 0


def _start_and_follow(
    server: str, api_key: str | None, path: str, body: dict[str, Any] | None
) -> int:
    console = Console(stderr=True)
    try:
        with _client(server, api_key) as http:
            job_id = _check(http.post(path, json=body))["job_id"]
            job = _follow(http, job_id, console)
    except httpx.TransportError:
        raise _connect(server) from None
    _summary(console, job)
    if job["state"] != "completed":
        return max(1, job["failed"])
    return int(job["failed"])


def _follow(http: httpx.Client, job_id: str, console: Console) -> dict[str, Any]:
    """Poll the job with a progress bar (rate and ETA as the server reports them) until it
    ends; the last record."""
    columns = (
        TextColumn("[bold]ingest"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[eta]}"),
        TextColumn("[yellow]{task.fields[note]}"),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("ingest", total=None, rate="", eta="", note="")
        while True:
            job: dict[str, Any] = _check(http.get(f"/v1/jobs/{job_id}"))
            rate, eta, note = progress_fields(job)
            bar.update(
                task,
                total=job["total"] or None,
                completed=job["done"] + job["failed"],
                rate=rate,
                eta=eta,
                note=note,
            )
            if job["state"] not in ("queued", "running"):
                return job
            time.sleep(POLL_S)


def _summary(console: Console, job: dict[str, Any]) -> None:
    # soft_wrap: paths stay whole on one line, so they can be copied and grepped.
    skipped = f" ({job['skipped']} already indexed)" if job.get("skipped") else ""
    console.print(
        f"job {job['id']}: {job['state']}, {job['done']} indexed{skipped}, {job['failed']} "
        f"failed, {job['total']} in all",
        soft_wrap=True,
    )
    for err in job["errors"]:
        console.print(f"  [red]failed[/red] {err['item']}: {err['reason']}", soft_wrap=True)
    if job["state"] not in ("completed", "queued", "running"):
        console.print(
            f"[red]job ended {job['state']}[/red] {job.get('error') or ''}", soft_wrap=True
        )


def progress_fields(job: dict[str, Any]) -> tuple[str, str, str]:
    """The bar's rate, ETA and note, as the job reports them (the server knows the rate)."""
    rate, eta = job.get("rate_per_s"), job.get("eta_s")
    running = job["state"] == "running"
    waiting = bool(job.get("waiting_for_writer"))
    return (
        f"{rate:.1f} items/s" if rate else "",
        f"ETA {_duration(eta)}" if eta is not None and running else "",
        "waiting for the writer (points stream full)" if waiting else "",
    )


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


def search(
    server: str,
    *,
    text: str | None,
    image: Path | None,
    mode: str,
    limit: int,
    api_key: str | None,
) -> None:
    body: dict[str, Any] = {"mode": mode, "limit": limit}
    if image is not None:
        try:
            body["image"] = base64.b64encode(image.read_bytes()).decode()
        except OSError as exc:
            typer.echo(f"cannot read {image}: {exc.strerror}", err=True)
            raise typer.Exit(2) from None
    else:
        body["text"] = text
    try:
        with _client(server, api_key) as http:
            result = _check(http.post("/v1/search", json=body))
    except httpx.TransportError:
        raise _connect(server) from None
    table = Table(
        title=f"{len(result['hits'])} hits · {result['took_ms']:.1f} ms · {result['model']}"
    )
    for column in ("score", "kind", "caption", "uri"):
        table.add_column(column)
    for hit in result["hits"]:
        table.add_row(
            f"{hit['score']:.4f}",
            hit.get("kind") or "",
            hit.get("caption") or "",
            hit.get("uri") or "",
        )
    Console().print(table)
