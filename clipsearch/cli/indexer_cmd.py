"""``clipsearch indexer``: a Celery worker that runs the ingestion tasks
(``indexer/distributed/tasks.py``)."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from service.core.config import Settings

log = logging.getLogger("clipsearch.indexer")

PoolOpt = Annotated[str, typer.Option(help="Celery pool: solo (one task at a time), threads")]
ConcurrencyOpt = Annotated[int, typer.Option(min=1, help="tasks run at once (pool threads)")]
NameOpt = Annotated[str | None, typer.Option("--name", "-n", help="worker node name")]
ProbePortOpt = Annotated[
    int | None,
    typer.Option(
        min=0, max=65535, help="serve /health/live, /health/ready, /metrics here (0 = none)"
    ),
]


def indexer(
    pool: PoolOpt = "solo",
    concurrency: ConcurrencyOpt = 1,
    name: NameOpt = None,
    probe_port: ProbePortOpt = None,
) -> None:
    """Run an indexer worker: reads sources, embeds media, feeds the writer (needs
    CLIPSEARCH_BROKER__URL)."""
    from clipsearch.bootstrap import indexer_resources
    from indexer.distributed.app import make_celery
    from service.core.errors import ClipsearchError
    from service.core.tasks import INDEX_QUEUE

    settings = Settings()
    if probe_port is not None:
        broker = settings.broker.model_copy(update={"probe_port": probe_port})
        settings = settings.model_copy(update={"broker": broker})
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    resources = indexer_resources(settings)
    try:
        app = make_celery(settings, resources)
        # Warm up before taking tasks: the first batch does not wait for the model, and a
        # broken bundle stops the worker here instead of failing every task.
        resources.embedder()
    except (ClipsearchError, OSError) as exc:
        log.error("the indexer cannot start: %s", exc)
        raise typer.Exit(1) from exc
    argv = ["worker", "-Q", INDEX_QUEUE, "--pool", pool, "--concurrency", str(concurrency)]
    argv += ["--loglevel", settings.log_level.upper(), "--without-gossip", "--without-mingle"]
    if name:
        argv += ["-n", name]
    try:
        app.worker_main(argv)
    finally:
        resources.close()
