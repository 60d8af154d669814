"""``celery -A clipsearch.celery_app worker -Q clipsearch.index``: the indexer's Celery app for
Celery's own command line, which has no way to hand settings in. ``app`` is built from the
environment (``Settings()``) when first asked for; importing the module builds nothing.
``clipsearch indexer`` is the usual way to run the same worker (it warms the model up first).
"""

from __future__ import annotations

import functools
from typing import Any

from celery import Celery

from clipsearch.bootstrap import indexer_resources
from indexer.distributed.app import make_celery
from service.core.config import Settings


@functools.cache
def _entry_point_app() -> Celery:
    settings = Settings()
    return make_celery(settings, indexer_resources(settings))


def __getattr__(name: str) -> Any:
    if name == "app":
        return _entry_point_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
