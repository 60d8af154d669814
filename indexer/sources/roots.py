"""Where ingestion may read from: local paths only under the configured allowed roots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from service.core.config import Settings
from service.core.errors import ClipsearchError, ErrorType, invalid

# The process that reads a source, which an error tells how to allow a folder: the gateway
# (its own job runner, or its check before it sends a job) or a Celery indexer.
Reader = Literal["gateway", "indexer"]


def resolve_local_dir(source: str, allowed: Sequence[Path], reader: Reader = "gateway") -> Path:
    """Resolve ``source`` (symlinks included) and require it to be a directory under one of the
    ``allowed`` roots (those of the ``reader`` process, which its errors name)."""
    if not source or "\0" in source:
        raise invalid("source must be a directory path")
    path = Path(source).expanduser().resolve()
    if not allowed:
        raise ClipsearchError(
            ErrorType.forbidden,
            "local ingestion is disabled: no allowed roots are configured; "
            + how_to_allow(path, reader),
        )
    roots = [Path(r).expanduser().resolve() for r in allowed]
    if not under_roots(path, roots):
        raise ClipsearchError(
            ErrorType.forbidden,
            f"path {source!r} is outside the allowed roots "
            f"({', '.join(str(r) for r in roots)}); {how_to_allow(path, reader)}",
            {"allowed_roots": [str(r) for r in roots]},
        )
    if not path.exists():
        raise invalid(f"source {source!r} does not exist")
    if not path.is_dir():
        raise invalid(f"source {source!r} is not a directory")
    return path


def how_to_allow(folder: Path, reader: Reader = "gateway") -> str:
    """What a user does to let the ``reader`` process read ``folder``, named by that process's
    own setting: the roots are fixed at start-up."""
    if reader == "indexer":
        return (
            f"to allow it, add {folder} to CLIPSEARCH_SOURCES__ALLOWED_ROOTS (comma-separated) of "
            "this `clipsearch indexer` and restart it: each indexer reads the files with its own "
            "roots (the gateway checks its own, `clipsearch serve --allow-root`, before it sends "
            "a job)"
        )
    return (
        f"to allow it, restart the gateway with `--allow-root {folder}` "
        f"(`clipsearch serve` or `demo`; `make run ALLOW={folder}`) "
        f"or add it to CLIPSEARCH_SOURCES__ALLOWED_ROOTS (comma-separated; with a broker, "
        f"the setting of the `clipsearch indexer` processes, which read the files)"
    )


def under_roots(path: Path, roots: list[Path]) -> bool:
    """Whether a resolved ``path`` is one of ``roots`` or inside one."""
    return any(path == root or root in path.parents for root in roots)


def allowed_roots(settings: Settings) -> list[Path]:
    """The configured allowed roots, resolved (symlinks included)."""
    return [Path(r).expanduser().resolve() for r in settings.sources.allowed_roots]
