"""HTTP client side of the CLI: ingest with a progress bar, search, jobs, collections.

Results go to stdout, whole (ids and full file names, never cut to the terminal's width), or as
JSON with ``--json``; progress, counts and errors go to stderr, so ``clipsearch search ... | head``
and ``--json | jq`` see results alone.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit
from urllib.request import url2pathname

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

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


def print_json(data: Any) -> None:
    """``--json``: one JSON document on stdout, the API's own shape."""
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def ingest(
    server: str,
    source: dict[str, Any],
    api_key: str | None,
    *,
    as_json: bool = False,
    collection: str | None = None,
) -> int:
    """Start a job (into ``collection``; None: the gateway's configured one) and follow it;
    returns the number of failed items."""
    body: dict[str, Any] = {"source": source}
    if collection:
        body["collection"] = collection
    return _start_and_follow(server, api_key, "/v1/ingest", body, as_json)


def export(
    server: str, body: dict[str, Any], api_key: str | None, *, as_json: bool = False
) -> None:
    """``clipsearch export``: ``POST /v1/admin/export``; the files written on stdout."""
    try:
        # An export of a large collection takes a while: no read timeout.
        with _client(server, api_key) as http:
            result = _check(http.post("/v1/admin/export", json=body, timeout=None))
    except httpx.TransportError:
        raise _connect(server) from None
    if as_json:
        print_json(result)
        return
    typer.echo(f"{result['points']} points of {result['bundle']}", err=True)
    for path in result["files"]:
        typer.echo(path)


def job_action(
    server: str, job_id: str, action: str, api_key: str | None, *, as_json: bool = False
) -> int:
    """``clipsearch jobs``: show or cancel a job (print it; 0 unless the request failed), or
    resume one / retry its failed items (follow the job it answers with, as ``ingest`` does)."""
    if action in ("retry", "retry-failed"):
        return _start_and_follow(server, api_key, f"/v1/jobs/{job_id}/{action}", None, as_json)
    method = "DELETE" if action == "cancel" else "GET"
    try:
        with _client(server, api_key) as http:
            job = _check(http.request(method, f"/v1/jobs/{job_id}"))
    except httpx.TransportError:
        raise _connect(server) from None
    if as_json:
        print_json(job)
    else:
        _summary(job)
    return 0


def list_jobs(
    server: str,
    api_key: str | None,
    *,
    limit: int,
    offset: int,
    as_json: bool = False,
    collection: str | None = None,
) -> None:
    """``clipsearch jobs list``: one line per job, newest first (``GET /v1/jobs``): those of
    ``collection``, else of every collection the key may ingest into."""
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if collection:
        params["collection"] = collection
    try:
        with _client(server, api_key) as http:
            page = _check(http.get("/v1/jobs", params=params))
    except httpx.TransportError:
        raise _connect(server) from None
    if as_json:
        print_json(page)
        return
    shown = len(page["jobs"])
    first = page["offset"] + 1 if shown else page["offset"]
    typer.echo(f"jobs {first}-{page['offset'] + shown} of {page['total']}", err=True)
    for job in page["jobs"]:
        typer.echo(_job_line(job))


def _start_and_follow(
    server: str, api_key: str | None, path: str, body: dict[str, Any] | None, as_json: bool
) -> int:
    try:
        with _client(server, api_key) as http:
            job_id = _check(http.post(path, json=body))["job_id"]
            typer.echo(f"job {job_id} started", err=True)
            job = _follow(http, job_id, Console(stderr=True))
    except httpx.TransportError:
        raise _connect(server) from None
    if as_json:
        print_json(job)
    else:
        _summary(job)
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


def _job_line(job: dict[str, Any]) -> str:
    skipped = f" ({job['skipped']} already indexed)" if job.get("skipped") else ""
    return (
        f"job {job['id']}: {job['state']}, {job['done']} indexed{skipped}, {job['failed']} "
        f"failed, {job['total']} in all"
    )


def _summary(job: dict[str, Any]) -> None:
    """The job on stdout as plain lines: paths whole on one line each (no wrapping, no markup
    read into a file name), so they can be copied and grepped."""
    typer.echo(_job_line(job))
    for err in job["errors"]:
        typer.echo(f"  failed {display_uri(err['item'])}: {err['reason']}")
    if job.get("redelivered"):
        typer.echo(f"  {job['redelivered']} tasks the broker lost were sent again")
    if job["state"] not in ("completed", "queued", "running"):
        error = job.get("error")
        typer.echo(f"job ended {job['state']}" + (f": {error}" if error else ""))


def display_uri(uri: str) -> str:
    """A ``file:`` URI as the local path it names (``my%20scenes`` back to ``my scenes``), to
    copy into a shell; any other URI as it is."""
    parts = urlsplit(uri)
    if parts.scheme != "file":
        return uri
    return url2pathname(parts.path)


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
    as_json: bool = False,
    grpc_target: str | None = None,
    collection: str | None = None,
) -> None:
    body: dict[str, Any] = {"mode": mode, "limit": limit}
    if collection:
        body["collection"] = collection
    if image is not None:
        try:
            body["image"] = base64.b64encode(image.read_bytes()).decode()
        except OSError as exc:
            typer.echo(f"cannot read {image}: {exc.strerror}", err=True)
            raise typer.Exit(2) from None
    else:
        body["text"] = text
    if grpc_target is not None:
        print_hits(search_grpc(grpc_target, body, api_key), as_json=as_json)
        return
    try:
        with _client(server, api_key) as http:
            result = _check(http.post("/v1/search", json=body))
    except httpx.TransportError:
        raise _connect(server) from None
    print_hits(result, as_json=as_json)


def search_grpc(target: str, body: dict[str, Any], api_key: str | None) -> dict[str, Any]:
    """``POST /v1/search``'s body sent over the gateway's gRPC API; the answer in REST's shape."""
    from service.clients.search_grpc import SearchClient
    from service.core.errors import ClipsearchError

    image = base64.b64decode(body["image"]) if "image" in body else None
    try:
        with SearchClient(target, api_key=api_key, timeout_s=60.0) as grpc_client:
            answer = grpc_client.search(
                text=body.get("text"),
                image=image,
                mode=body["mode"],
                limit=body["limit"],
                collection=body.get("collection"),
            )
    except ClipsearchError as exc:
        typer.echo(f"error (gRPC {target}): {exc.type.value}: {exc.message}", err=True)
        raise typer.Exit(1) from None
    return answer.model_dump(mode="json")


def _hit_name(hit: dict[str, Any]) -> str:
    """How a hit line names its item: the id it was added with (a document's own id, a file
    document's path), or the point id where the URI column names the item already (a file, a
    URL, a video segment of one) or it has no media id."""
    media_id, uri = hit.get("media_id"), hit.get("uri")
    if not media_id or (uri and (media_id == uri or str(media_id).startswith(uri + "#"))):
        return str(hit["id"])
    return display_uri(media_id) if "://" in media_id else str(media_id)


def print_hits(result: dict[str, Any], *, as_json: bool = False) -> None:
    """A search answer (``SearchResponse``): a count line on stderr, then one line per hit on
    stdout: rank, score, kind, a name (:func:`_hit_name`), the whole URI (a video segment's
    time range as a media fragment, ``#t=start,end``) and the caption; or the answer as JSON."""
    if as_json:
        print_json(result)
        return
    hits = result["hits"]
    typer.echo(
        f"{len(hits)} hits · {result['took_ms']:.1f} ms · {result['model']} · "
        f"mode {result.get('mode', '?')}",
        err=True,
    )
    kind_width = max((len(hit.get("kind") or "-") for hit in hits), default=1)
    ids = [_hit_name(hit) for hit in hits]
    id_width = max(map(len, ids), default=1)
    for rank, (hit, hit_id) in enumerate(zip(hits, ids, strict=True), 1):
        uri = display_uri(hit.get("uri") or "-")
        if hit.get("t_start") is not None and hit.get("t_end") is not None:
            uri = f"{uri}#t={hit['t_start']:g},{hit['t_end']:g}"
        caption = (
            f"  {json.dumps(hit['caption'], ensure_ascii=False)}" if hit.get("caption") else ""
        )
        typer.echo(
            f"{rank:>3}  {hit['score']:>7.4f}  {(hit.get('kind') or '-'):<{kind_width}}  "
            f"{hit_id:<{id_width}}  {uri}{caption}"
        )


# -- collections -------------------------------------------------------------------------------


def collections(
    server: str,
    api_key: str | None,
    action: str,
    name: str | None = None,
    *,
    bundle: str | None = None,
    as_json: bool = False,
) -> None:
    """``clipsearch collections``: ``list``, ``show`` NAME, ``create`` NAME (with ``bundle``) or
    ``delete`` NAME through ``/v1/collections``; the answer on stdout, a 4xx as an error."""
    try:
        with _client(server, api_key) as http:
            if action == "list":
                answer = _check(http.get("/v1/collections"))
            elif action == "create":
                body = {"name": name, **({"bundle": bundle} if bundle else {})}
                # Creating one may load its bundle into the encoder: no read timeout.
                answer = _check(http.post("/v1/collections", json=body, timeout=None))
            elif action == "delete":
                answer = _check(http.delete(f"/v1/collections/{quote(str(name), safe='')}"))
            else:
                answer = _check(http.get(f"/v1/collections/{quote(str(name), safe='')}"))
    except httpx.TransportError:
        raise _connect(server) from None
    if as_json:
        print_json(answer)
    elif action == "list":
        listed = answer["collections"]
        typer.echo(f"{len(listed)} collections", err=True)
        width = max((len(c["alias"]) for c in listed), default=1)
        for info in listed:
            typer.echo(_collection_line(info, width))
    elif action == "delete":
        versions = answer["deleted_versions"]
        count = f"{len(versions)} version{'' if len(versions) == 1 else 's'}"
        typer.echo(f"deleted collection {answer['collection']}: {count}", err=True)
        for version in versions:
            typer.echo(version)
    else:
        if action == "create":
            typer.echo(f"created collection {answer['alias']}", err=True)
        _collection_details(answer)


def _collection_line(info: dict[str, Any], width: int) -> str:
    """name, points, bundle, and whether it is the default: one line."""
    default = "  (default)" if info.get("default") else ""
    bundle = info.get("bundle") or "-"
    return f"{info['alias']:<{width}}  {info['points']:>8} points  {bundle}{default}"


def _collection_details(info: dict[str, Any]) -> None:
    """A collection as ``name: value`` lines, then one line per version."""
    typer.echo(f"name: {info['alias']}")
    typer.echo(f"default: {'yes' if info.get('default') else 'no'}")
    typer.echo(f"bundle: {info.get('bundle') or '-'}")
    typer.echo(f"served: {'yes' if info.get('served') else 'no'}")
    typer.echo(f"points: {info['points']}")
    for role in ("current", "building", "previous"):
        if info.get(role):
            typer.echo(f"{role}: {info[role]}")
    for role in ("domain", "intended_use"):
        if info.get(role):
            typer.echo(f"{role.replace('_', ' ')}: {info[role]}")
    for version in info.get("versions", []):
        role = f" ({version['role']})" if version.get("role") else ""
        typer.echo(
            f"  version {version['name']}{role}: {version['points']} points, "
            f"{version.get('bundle') or '-'}"
        )
