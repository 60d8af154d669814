"""Index maintenance for the embedded store: the HNSW graph is built out of the serving process
and swapped in (``QdrantEdgeStore.build_index``; issue 16).

Why out of process: ``EdgeShard.optimize`` holds the GIL for the whole build (48 s for 100k
312-dim points on 2 cores), so in the serving process every request would wait for it, and
Qdrant's optimizer has no bounded step to slice it into. So:

1. the store freezes writes (searches go on), flushes the shard if it has unflushed writes,
   copies its folder to ``build.<n>`` and starts recording the ids every write touches; writes
   resume (they wait for the copy only: :func:`copy_shard` runs without the GIL);
2. a niced subprocess (``service.store._edge_build``) loads the copy with the HNSW config,
   optimizes it and writes ``built.json``;
3. the store loads the built shard and catches it up: the recorded ids are read from the live
   shard and upserted into the new one (or deleted from it), a slice under the lock at a time,
   until few are left; then, writes frozen again, the last ones; the collection's
   ``clipsearch.json`` names the new folder (the commit), the shard object is swapped and the old
   shard closed and removed.

A builder that dies, or a process killed mid-build, leaves the serving shard as it was: the
next load of the collection removes every folder that ``clipsearch.json`` does not name.

The policy (:class:`IndexPolicy`) is checked by a maintenance thread: a collection is rebuilt
once it holds enough points that are in no graph yet. Qdrant's optimizers only index segments
that are not indexed yet (and merge small ones), so a later build costs about the new points.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.store._edge_build import BUILT_FILE

BUILD_PREFIX = "build."
SHARD_PREFIX = "shard."
_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class IndexPolicy:
    """When the maintenance thread rebuilds a collection's index.

    A collection is built once it holds ``min_points`` and the points in no graph yet (written
    since the last build) reach ``max(min_unindexed, unindexed_fraction * points)``: a brute-force
    scan of 20k 312-dim points costs about 1.4 ms, so at most that is added to a search.
    """

    enabled: bool = True
    min_points: int = 20_000
    min_unindexed: int = 20_000
    unindexed_fraction: float = 0.02
    check_interval_s: float = 30.0
    builder_threads: int = max(1, (os.cpu_count() or 2) // 2)  # leaves cores to the queries
    builder_timeout_s: float = 6 * 3600.0
    indexing_threshold_kb: int | None = None  # Qdrant's (10 MB): smaller segments stay plain
    # Loading the built shard and closing the replaced one hold the GIL: each waits for a pause
    # of ``swap_quiet_s`` in the searches, ``swap_max_wait_s`` at most.
    swap_quiet_s: float = 0.5
    swap_max_wait_s: float = 30.0
    catchup_slice: int = 64  # ids read and rewritten per turn of the lock
    final_catchup: int = 256  # at most this many left for the frozen final step

    def due(self, points: int, indexed: int) -> bool:
        if not self.enabled or points < self.min_points:
            return False
        return points - indexed >= max(self.min_unindexed, self.unindexed_fraction * points)


@dataclass
class Build:
    """One build in flight: the ids written since the copy, and whether to give it up."""

    collection: str
    number: int
    touched: set[str] = field(default_factory=set)
    cancelled: threading.Event = field(default_factory=threading.Event)
    process: subprocess.Popen[bytes] | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase
    marks: dict[str, float] = field(default_factory=dict)  # when each phase began


def shard_dir(collection_dir: Path, meta: dict[str, Any]) -> Path:
    """The folder of a collection's live shard: ``shard.<n>`` once an index was built, the
    collection folder itself before (formats 1 and 2)."""
    name = meta.get("shard")
    return collection_dir / name if isinstance(name, str) and name else collection_dir


def remove_leftovers(collection_dir: Path, meta_file: str, meta: dict[str, Any]) -> list[str]:
    """Remove what a crashed build or swap left in the folder: builds, shards that the meta
    does not name, and the pre-index shard's own entries once a ``shard.<n>`` serves."""
    current = meta.get("shard")
    removed = []
    for entry in collection_dir.iterdir():
        name = entry.name
        if name in (meta_file, current) or name.startswith(f".{meta_file}."):
            continue  # the meta, the live shard, a write of the meta in flight (files.py)
        nested = name.startswith((BUILD_PREFIX, SHARD_PREFIX))
        if not nested and not current:
            continue  # the shard lives in the collection folder itself
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(name)
    return removed


def copy_shard(source: Path, target: Path) -> int:
    """Copy a shard folder, leaving out the collection's own entries (its meta, nested builds
    and shards); returns the bytes copied. File copies go through ``sendfile``, outside the
    GIL."""
    total = 0

    def ignore(folder: str, names: list[str]) -> list[str]:
        if Path(folder) != source:
            return []
        return [
            n
            for n in names
            if n.startswith((BUILD_PREFIX, SHARD_PREFIX, ".clipsearch.json."))
            or n == "clipsearch.json"
        ]

    def copy(src: str, dst: str) -> str:
        nonlocal total
        shutil.copyfile(src, dst)
        total += os.path.getsize(dst)
        return dst

    shutil.copytree(source, target, ignore=ignore, copy_function=copy)
    return total


def warm_files(folder: Path) -> int:
    """Make the builder's files durable (``fsync``: the commit that follows names this folder,
    so it must survive a power cut) and read them once, so that loading the shard finds them in
    the page cache. Both release the GIL; the load that follows holds it."""
    total = 0
    buf = bytearray(_COPY_CHUNK)
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        with path.open("rb", buffering=0) as fh:
            os.fsync(fh.fileno())
            while n := fh.readinto(buf):
                total += n
    for sub in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
        fd = os.open(sub, os.O_RDONLY)
        try:
            os.fsync(fd)  # the directory entries too
        finally:
            os.close(fd)
    return total


def start_builder(
    folder: Path, meta: dict[str, Any], policy: IndexPolicy, log: Path
) -> subprocess.Popen[bytes]:
    settings = {
        "dims": meta["dims"],
        "multivectors": meta.get("multivectors", []),
        "threads": policy.builder_threads,
        "indexing_threshold_kb": policy.indexing_threshold_kb,
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "service.store._edge_build", str(folder), json.dumps(settings)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(Path(__file__).resolve().parents[2]),  # the checkout: ``service`` importable
        )


def read_built(folder: Path) -> dict[str, Any] | None:
    path = folder / BUILT_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text("utf-8"))
    return data if isinstance(data, dict) else None
