"""Keyframe thumbnails of video segments under the data dir: a point's thumbnail path, and its
atomic write.

The indexer encodes the JPEG (``indexer.pipeline.video_segments.thumbnail_jpeg``); the process
that holds the data dir the gateway serves from writes it. The in-process job runner and the
reindex run in the gateway and write it at once. A Celery indexer sends the bytes in the points
stream entry and the writer stores them, so indexer processes need no volume shared with the
gateway.
"""

from __future__ import annotations

import re
from pathlib import Path

from service.core.errors import invalid
from service.store.files import write_atomic

THUMBNAILS = "thumbnails"
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_-]")
# A collection name as the stores accept it (service.store._checks): no separator, no dot first.
_COLLECTION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,254}$")


def thumbnail_path(collection: str, name: str) -> str:
    """``thumbnails/<collection>/<name>.jpg``, relative to the data dir (the payload's
    ``thumbnail``). ``name`` is a point id; anything in it but letters, digits, ``_`` and ``-``
    becomes ``_``, so the path can never leave its folder."""
    safe = _UNSAFE_NAME.sub("_", name)[:128]
    if not safe.strip("_"):
        raise invalid(f"unusable thumbnail name {name!r}")
    if not _COLLECTION.fullmatch(collection):
        raise invalid(f"unusable collection name for a thumbnail: {collection!r}")
    return f"{THUMBNAILS}/{collection}/{safe}.jpg"


def write_thumbnail(data_dir: Path, relpath: str, data: bytes) -> Path:
    """Write ``data`` at ``data_dir/relpath`` atomically: readers (the gateway serving it) see
    the old file or the new one, never half of one. ``relpath`` must be one that
    :func:`thumbnail_path` makes; it is checked, since it may come from a stream entry."""
    parts = relpath.split("/")
    ok = len(parts) == 3 and parts[0] == THUMBNAILS and parts[2].endswith(".jpg")
    if not ok or thumbnail_path(parts[1], parts[2].removesuffix(".jpg")) != relpath:
        raise invalid(f"not a thumbnail path: {relpath!r}")
    target = data_dir / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, data, durable=False)  # a lost thumbnail is made again by a reindex
    return target
