"""``clipsearch writer``: the points writer as its own process (clusters; the gateway runs one
by default)."""

from __future__ import annotations

import logging

import typer

from service.core.config import Settings


def writer() -> None:
    """Upsert the points indexer workers produce into the store (needs CLIPSEARCH_BROKER__URL)."""
    from indexer.distributed.writer import run_writer
    from service.core.errors import ClipsearchError

    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code = run_writer(settings)
    except ClipsearchError as exc:
        logging.getLogger("clipsearch.writer").error("the writer cannot start: %s", exc.message)
        raise typer.Exit(2) from exc
    raise typer.Exit(code)
