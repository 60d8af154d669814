"""``clipsearch collections``: list, show, create and delete the collections of a running
gateway (``/v1/collections``).

``list`` prints one line per collection (name, points, bundle, ``(default)`` for the configured
one); ``show`` and ``create`` print the collection as ``name: value`` lines and its versions;
``delete`` prints the versions it dropped. ``--json`` prints the API's JSON. A refusal (a bad
name, one that exists, an unknown bundle, the configured collection) is an error on stderr and
exit 1.
"""

from __future__ import annotations

from typing import Annotated

import typer

from clipsearch.cli import client as remote
from clipsearch.cli.options import DEFAULT_SERVER, JsonOpt, KeyOpt, ServerOpt

app = typer.Typer(help="List, show, create and delete collections.", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="the collection's name")]


@app.command("list")
def list_collections(
    server: ServerOpt = DEFAULT_SERVER, api_key: KeyOpt = None, as_json: JsonOpt = False
) -> None:
    """List the collections the key sees: name, points, bundle, one line each."""
    remote.collections(server, api_key, "list", as_json=as_json)


@app.command("show")
def show(
    name: NameArg,
    server: ServerOpt = DEFAULT_SERVER,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print a collection: its bundle, points and versions."""
    remote.collections(server, api_key, "show", name, as_json=as_json)


@app.command("create")
def create(
    name: Annotated[
        str,
        typer.Argument(help="lower-case letters, digits, '-' and '_' (no '__'), 63 at most"),
    ],
    bundle: Annotated[
        str | None,
        typer.Option(
            help="the bundle its vectors are made with: a served name@version or name, a zoo "
            "name, a bundle folder or `tiny`; default: the gateway's configured bundle"
        ),
    ] = None,
    server: ServerOpt = DEFAULT_SERVER,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an empty collection searched and written with BUNDLE."""
    remote.collections(server, api_key, "create", name, bundle=bundle, as_json=as_json)


@app.command("delete")
def delete(
    name: NameArg,
    server: ServerOpt = DEFAULT_SERVER,
    api_key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete a collection: every version, its items and thumbnails (not the configured one)."""
    remote.collections(server, api_key, "delete", name, as_json=as_json)
