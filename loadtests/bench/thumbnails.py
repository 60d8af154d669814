"""Where video thumbnails live so every gateway replica serves them (issue 17): files on a shared
volume, or the points' payload. Measures both on this machine.

    python -m loadtests.bench.thumbnails --photos DIR [--points 2000] [--searches 300]
        [--out bench-results]

``--photos``: real photographs (JPEG/PNG), standing in for video keyframes; each becomes a
thumbnail as the indexer makes it (``thumbnail_jpeg``: 256 px a side, quality 85).

* size: bytes per thumbnail (p50, p95, mean), and as base64 in a JSON payload;
* files: an atomic thumbnail write (``write_thumbnail``) and a read back, per thumbnail;
* payload: ``--points`` points in the embedded store (Qdrant Edge, the engine a Qdrant server
  runs) with the tiny bundle's dims, without and with a base64 thumbnail in each payload:
  the store's size on disk, a top-10 search's latency (hits with their payload, as the
  search API reads them), and the bytes those 10 payloads add to every search answer.

Writes ``<out>/thumbnails.json``.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from indexer.pipeline.thumbnails import thumbnail_path, write_thumbnail
from indexer.pipeline.video_segments import thumbnail_jpeg
from service.core.domain import Point
from service.store.edge import QdrantEdgeStore

ROOT = Path(__file__).resolve().parents[2]
DIMS = {"image": 64, "caption": 64, "description": 32}  # the tiny bundle's spaces
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def thumbnails_of(folder: Path) -> list[bytes]:
    photos = sorted(p for p in folder.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES)
    if not photos:
        raise SystemExit(f"no photos under {folder}")
    out = []
    for path in photos:
        with Image.open(path) as image:
            out.append(thumbnail_jpeg(image))
    return out


def files(thumbs: list[bytes], n: int, root: Path) -> dict[str, Any]:
    write_ms, read_ms = [], []
    for i in range(n):
        rel = thumbnail_path("media", str(uuid.UUID(int=i)))
        started = time.perf_counter()
        written = write_thumbnail(root, rel, thumbs[i % len(thumbs)])
        write_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        written.read_bytes()
        read_ms.append((time.perf_counter() - started) * 1000)
    return {
        "write_p50_ms": _pct(write_ms, 50),
        "read_p50_ms": _pct(read_ms, 50),
        "disk_bytes": sum(p.stat().st_size for p in root.rglob("*.jpg")),
    }


def payload(
    thumbs: list[bytes], n: int, searches: int, root: Path, *, with_thumb: bool
) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    store = QdrantEdgeStore(root)
    try:
        store.ensure_collection("media", DIMS)  # type: ignore[arg-type]
        batch: list[Point] = []
        for i in range(n):
            vectors = {
                k: rng.standard_normal(d).astype(np.float32).tolist() for k, d in DIMS.items()
            }
            body: dict[str, Any] = {"media_id": f"v#{i}", "kind": "video_segment", "video_id": "v"}
            if with_thumb:
                body["thumbnail_jpeg"] = base64.b64encode(thumbs[i % len(thumbs)]).decode()
            batch.append(Point(str(uuid.UUID(int=i)), vectors, body))
            if len(batch) == 256:
                store.upsert("media", batch)
                batch = []
        if batch:
            store.upsert("media", batch)
        latency, answer_bytes = [], []
        for _ in range(searches):
            query = rng.standard_normal(DIMS["image"]).astype(np.float32).tolist()
            started = time.perf_counter()
            hits = store.search("media", "image", query, limit=10)
            latency.append((time.perf_counter() - started) * 1000)
            answer_bytes.append(len(json.dumps([h.payload for h in hits])))
        started = time.perf_counter()
        for i in range(min(n, 200)):
            store.retrieve("media", [str(uuid.UUID(int=i))])
        retrieve_ms = (time.perf_counter() - started) * 1000 / min(n, 200)
    finally:
        store.close()
    return {
        "search_top10_p50_ms": _pct(latency, 50),
        "search_top10_p95_ms": _pct(latency, 95),
        "payload_bytes_per_search": statistics.mean(answer_bytes),
        "retrieve_one_ms": retrieve_ms,
        "disk_bytes": sum(p.stat().st_size for p in root.rglob("*") if p.is_file()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--points", type=int, default=2000)
    parser.add_argument("--searches", type=int, default=300)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = parser.parse_args()
    thumbs = thumbnails_of(args.photos)
    sizes = [float(len(t)) for t in thumbs]
    report: dict[str, Any] = {
        "photos": len(thumbs),
        "points": args.points,
        "thumbnail_bytes": {
            "p50": _pct(sizes, 50),
            "p95": _pct(sizes, 95),
            "mean": statistics.mean(sizes),
            "base64_mean": statistics.mean(len(base64.b64encode(t)) for t in thumbs),
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        report["files"] = files(thumbs, args.points, Path(tmp) / "files")
        report["payload_without"] = payload(
            thumbs, args.points, args.searches, Path(tmp) / "plain", with_thumb=False
        )
        report["payload_with"] = payload(
            thumbs, args.points, args.searches, Path(tmp) / "thumbs", with_thumb=True
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "thumbnails.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
