"""The HNSW builder: ``python -m service.store._edge_build <shard dir> <settings json>``.

Runs in its own process, niced, on a *copy* of a collection's shard that the serving store made
(``QdrantEdgeStore.build_index``): it loads the copy with the index settings, runs Qdrant's
optimizers (segments merged, HNSW built), flushes, closes and writes ``built.json`` next to the
segments. ``EdgeShard.optimize`` holds the GIL for the whole build (48 s for 100k points), so it
never runs in the process that serves queries; Qdrant Edge locks one data directory per process,
and the copy is a directory of its own. A builder that dies leaves no ``built.json``: the
serving store never loads its folder, and removes it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import qdrant_edge as qe

BUILT_FILE = "built.json"

# Qdrant's own defaults for the graph; the builder's thread count comes from the store.
HNSW_M = 16
HNSW_EF_CONSTRUCT = 100
HNSW_FULL_SCAN_KB = 10_000


def index_config(
    dims: dict[str, int], multi: list[str], threads: int, indexing_threshold_kb: int | None = None
) -> qe.EdgeConfig:
    """The shard's own vectors (as ``QdrantEdgeStore.ensure_collection`` made them) and an HNSW
    config; persisted by ``EdgeShard.load``, so the serving store reopens it as it is."""
    max_sim = qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim)
    return qe.EdgeConfig(
        vectors={
            name: qe.EdgeVectorParams(
                size=size,
                distance=qe.Distance.Cosine,
                multivector_config=max_sim if name in multi else None,
            )
            for name, size in dims.items()
        },
        hnsw_config=qe.HnswIndexConfig(
            m=HNSW_M,
            ef_construct=HNSW_EF_CONSTRUCT,
            full_scan_threshold=HNSW_FULL_SCAN_KB,
            max_indexing_threads=threads,
        ),
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=indexing_threshold_kb),
    )


def build(shard_dir: Path, settings: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    config = index_config(
        {str(k): int(v) for k, v in settings["dims"].items()},
        [str(v) for v in settings.get("multivectors", ())],
        int(settings.get("threads", 1)),
        settings.get("indexing_threshold_kb"),
    )
    shard = qe.EdgeShard.load(str(shard_dir), config)
    try:
        changed = bool(shard.optimize())
        shard.flush()
        info = shard.info()
        result = {
            "changed": changed,
            "points": int(info.points_count),
            "indexed_vectors": int(info.indexed_vectors_count),
            "segments": int(info.segments_count),
            "seconds": round(time.monotonic() - started, 3),
        }
    finally:
        shard.close()
    tmp = shard_dir / (BUILT_FILE + ".tmp")
    tmp.write_text(json.dumps(result), "utf-8")
    os.replace(tmp, shard_dir / BUILT_FILE)  # the marker of a finished build
    return result


def _die_with_parent() -> None:
    """On Linux, the kernel kills the builder when the store's process dies (its copy is then
    removed by the next load, so finishing it would be wasted work)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before the call
        sys.exit(3)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(
            "usage: python -m service.store._edge_build <shard dir> <settings json>",
            file=sys.stderr,
        )
        return 2
    _die_with_parent()
    os.nice(int(os.environ.get("CLIPSEARCH_INDEX_BUILDER_NICE", "10")))  # queries come first
    result = build(Path(argv[0]), json.loads(argv[1]))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
