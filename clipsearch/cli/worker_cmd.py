"""``clipsearch worker``: one encoder worker process (one per GPU) serving gRPC ``Encoder``.

``--bundle A --bundle B`` serves both bundles (A the default for requests that name none); the
environment's equivalent is ``CLIPSEARCH_BUNDLE=A`` with ``CLIPSEARCH_ENCODER__EXTRA_BUNDLES=B``.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Annotated

import typer

from service.core.config import Settings

log = logging.getLogger("clipsearch.worker")

PortOpt = Annotated[
    int | None, typer.Option(min=0, max=65535, help="gRPC port, 0 = any [CLIPSEARCH_WORKER__PORT]")
]
HostOpt = Annotated[str | None, typer.Option(help="bind address [CLIPSEARCH_WORKER__HOST]")]
MetricsPortOpt = Annotated[
    int | None,
    typer.Option(
        min=0, max=65535, help="Prometheus port, 0 = off [CLIPSEARCH_WORKER__METRICS_PORT]"
    ),
]
BundleOpt = Annotated[
    list[str] | None,
    typer.Option(
        help="bundle folder or zoo name; repeat to serve several, the first the default "
        "[CLIPSEARCH_BUNDLE, CLIPSEARCH_ENCODER__EXTRA_BUNDLES]"
    ),
]


def worker_settings(
    port: int | None = None,
    host: str | None = None,
    metrics_port: int | None = None,
    bundle: str | list[str] | None = None,
) -> Settings:
    """Environment first, then the options given on the command line: the bundles given
    replace the environment's default and extra bundles."""
    settings = Settings()
    given = {"port": port, "host": host, "metrics_port": metrics_port}
    worker = settings.worker.model_copy(update={k: v for k, v in given.items() if v is not None})
    update: dict[str, object] = {"worker": worker}
    bundles = [bundle] if isinstance(bundle, str) else list(bundle or [])
    if bundles:
        update["bundle"] = bundles[0]
        update["encoder"] = settings.encoder.model_copy(update={"extra_bundles": bundles[1:]})
    return settings.model_copy(update=update)


def worker(
    port: PortOpt = None,
    host: HostOpt = None,
    metrics_port: MetricsPortOpt = None,
    bundle: BundleOpt = None,
) -> None:
    """Run an encoder worker: the model on this machine's accelerator behind gRPC."""
    from functools import partial

    from clipsearch.bootstrap import build_registry, rollout_bundle
    from service.core.errors import ClipsearchError
    from service.worker.server import WorkerServer

    settings = worker_settings(port, host, metrics_port, bundle)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    stop = threading.Event()
    # Installed before the (possibly long) warm-up: a SIGTERM meanwhile stops the worker cleanly
    # as soon as start() returns, instead of killing it half-initialised.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server = WorkerServer(
            settings,
            registry=build_registry(settings),
            resolve_bundle=partial(rollout_bundle, settings),  # LoadBundle: a gateway's rollout
        )
        server.start()
    except (ClipsearchError, OSError) as exc:
        log.error("the encoder worker cannot start: %s", exc)
        raise typer.Exit(1) from exc
    log.info("encoder worker ready on port %d; SIGTERM or Ctrl-C stops it", server.port)
    stop.wait()
    log.info("stopping the encoder worker")
    server.stop()
