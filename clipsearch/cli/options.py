"""The options every client command of the CLI takes (``jobs``, ``collections``)."""

from __future__ import annotations

from typing import Annotated

import typer

ServerOpt = Annotated[str, typer.Option("--server", help="gateway URL")]
KeyOpt = Annotated[str | None, typer.Option("--api-key", envvar="CLIPSEARCH_API_KEY")]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="print the result as JSON on stdout (the API's shape)")
]
DEFAULT_SERVER = "http://127.0.0.1:8000"
