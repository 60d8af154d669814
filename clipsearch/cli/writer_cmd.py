"""``clipsearch writer``: the points writer as its own process (clusters; the gateway runs one
by default)."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from service.core.config import Settings

ProbePortOpt = Annotated[
    int | None,
    typer.Option(
        min=0, max=65535, help="serve /health/live, /health/ready, /metrics here (0 = none)"
    ),
]


def writer(probe_port: ProbePortOpt = None) -> None:
    """Upsert the points indexer workers produce into the store (needs CLIPSEARCH_BROKER__URL)."""
    from indexer.distributed.writer import run_writer
    from service.core.errors import ClipsearchError

    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log = logging.getLogger("clipsearch.writer")
    try:
        check_writer_settings(settings)
        code = run_writer(settings, probe_port=probe_port)
    except ClipsearchError as exc:
        log.error("the writer cannot start: %s", exc.message)
        raise typer.Exit(2) from exc
    raise typer.Exit(code)


def check_writer_settings(settings: Settings) -> None:
    """Refuse to start when this writer's cluster-wide settings disagree with those its
    collection records. A writer embeds nothing (no bundle to compare); it still carries the
    segmenting and chunking settings, and one that disagrees was configured apart from the
    indexers whose points it writes: a drift to stop at start, not after a reindex."""
    from clipsearch.bootstrap import check_collection_settings, own_settings, until_reachable
    from service.store.factory import open_store

    store = open_store(settings)  # closed again: run_writer opens its own
    try:
        own = own_settings(settings, None)
        # A Qdrant server not up yet is waited for, as the gateway waits for it.
        until_reachable(
            settings,
            f"the Qdrant server at {settings.qdrant.url}" if settings.qdrant.url else "store",
            lambda: check_collection_settings(store, settings.collection, own, served=None),
        )
    finally:
        store.close()
