"""Throughput of a bundle's towers on this machine, through the serving engine.

    python -m loadtests.bench.bundle [BUNDLE] [--threads 2] [--seconds 5] [--out bench-results]

Measures, at batch 32 with ONNX Runtime on the configured provider:
- ``image_core_per_s``: image tower inference on preprocessed tensors;
- ``image_e2e_per_s``: PNG bytes → decode, resize, normalise, inference (the ingestion path);
- ``text_per_s``: short queries (the search path: tokenization + one text forward, both
  outputs), padded to the batch's longest query, not to the model maximum.
Each figure is also given as a ratio to the issue's target (300/s), measured in this one run.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from models.data.scenes import generate_split
from service.core.bundle.manifest import load_bundle
from service.core.config import EncoderSettings, Settings
from service.encoder.engine import EncoderEngine

ROOT = Path(__file__).resolve().parents[2]

BATCH = 32
TARGET_PER_S = 300.0


def rate(run: Callable[[], object], items: int, seconds: float) -> float:
    """Items per second of ``run`` over at least ``seconds`` (after one warm-up call)."""
    run()
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or calls < 3:
        run()
        calls += 1
    return items * calls / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", nargs="?", type=Path, default=ROOT / "models/zoo/default")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    parser.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    bundle = load_bundle(args.bundle)
    settings = Settings(encoder=EncoderSettings(intra_op_threads=args.threads))
    engine = EncoderEngine(bundle, settings)
    engine.warmup()

    scenes = generate_split("test", BATCH)
    pngs = []
    for scene in scenes:
        buf = io.BytesIO()
        scene.render(128).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    tensors = np.stack([r for r in engine.preprocess_images(pngs) if isinstance(r, np.ndarray)])
    queries = [scene.captions["short"][0] for scene in scenes]

    result = {
        "bundle": bundle.manifest.ref,
        "provider": engine.provider,
        "threads": args.threads,
        "batch": BATCH,
        "query_words_mean": float(np.mean([len(q.split()) for q in queries])),
        "image_core_per_s": rate(lambda: engine.run_images(tensors), BATCH, args.seconds),
        "image_e2e_per_s": rate(lambda: engine.embed_images(pngs), BATCH, args.seconds),
        "text_per_s": rate(lambda: engine.run_texts(queries), BATCH, args.seconds),
        "target_per_s": TARGET_PER_S,
    }
    for key in ("image_core_per_s", "image_e2e_per_s", "text_per_s"):
        result[key.replace("_per_s", "_vs_target")] = result[key] / TARGET_PER_S

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bundle.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    sys.stdout.write(
        f"{result['bundle']} on {result['provider']}, {args.threads} threads, batch {BATCH}\n"
        f"  image tower (core)     {result['image_core_per_s']:8.0f}/s  "
        f"x{result['image_core_vs_target']:.2f} of target\n"
        f"  image (decode + core)  {result['image_e2e_per_s']:8.0f}/s  "
        f"x{result['image_e2e_vs_target']:.2f}\n"
        f"  short text queries     {result['text_per_s']:8.0f}/s  "
        f"x{result['text_vs_target']:.2f}\n"
        f"wrote {path}\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
