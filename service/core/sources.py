"""Where ingestion may read from: local paths only under the configured allowed roots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from service.core.errors import ClipsearchError, ErrorType, invalid


def resolve_local_dir(source: str, allowed_roots: Sequence[Path]) -> Path:
    """Resolve ``source`` (symlinks included) and require it to be a directory under a root."""
    if not source or "\0" in source:
        raise invalid("source must be a directory path")
    if not allowed_roots:
        raise ClipsearchError(
            ErrorType.forbidden,
            "local ingestion is disabled: no allowed roots are configured "
            "(set CLIPSEARCH_SOURCES__ALLOWED_ROOTS or pass --allow-root to serve)",
        )
    path = Path(source).expanduser().resolve()
    roots = [Path(r).expanduser().resolve() for r in allowed_roots]
    if not any(path == root or root in path.parents for root in roots):
        raise ClipsearchError(
            ErrorType.forbidden,
            f"path {source!r} is outside the allowed roots",
            {"allowed_roots": [str(r) for r in roots]},
        )
    if not path.exists():
        raise invalid(f"source {source!r} does not exist")
    if not path.is_dir():
        raise invalid(f"source {source!r} is not a directory")
    return path
