"""Throughput of a bundle's towers on this machine, through the serving engine.

    python -m loadtests.bench.bundle [BUNDLE ...] [--threads 2] [--seconds 5] [--out bench-results]

Measures, at batch 32 with ONNX Runtime on the configured provider:
- ``image_core_per_s``: image tower inference on preprocessed tensors;
- ``image_e2e_per_s``: PNG bytes → decode, resize, normalise, inference (the ingestion path);
- ``text_per_s``: short queries (the search path: tokenization + one text forward, both
  outputs), padded to the batch's longest query, not to the model maximum.
Each figure is also given as a ratio to the issue's target (300/s), and with two or more bundles
(by default the zoo's: photo, then scenes) the first's image rate over the second's, measured in
this one run on the same PNGs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from loadtests.bench.encoder import make_inputs
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


def measure(
    path: Path, threads: int, seconds: float, pngs: list[bytes], queries: list[str]
) -> dict:  # type: ignore[type-arg]
    """One bundle's towers on this machine: the same PNGs and queries for every bundle."""
    bundle = load_bundle(path)
    engine = EncoderEngine(bundle, Settings(encoder=EncoderSettings(intra_op_threads=threads)))
    engine.warmup()
    tensors = np.stack([r for r in engine.preprocess_images(pngs) if isinstance(r, np.ndarray)])
    rates = {
        "image_core_per_s": rate(lambda: engine.run_images(tensors), BATCH, seconds),
        "image_e2e_per_s": rate(lambda: engine.embed_images(pngs), BATCH, seconds),
        "text_per_s": rate(lambda: engine.run_texts(queries), BATCH, seconds),
    }
    return {
        "bundle": bundle.manifest.ref,
        "provider": engine.provider,
        "image_size": bundle.manifest.image_tower.image_size,
        **rates,
        **{k.replace("_per_s", "_vs_target"): v / TARGET_PER_S for k, v in rates.items()},
    }


def zoo_bundles() -> list[Path]:
    """The shipped bundles, the default (photo) first."""
    zoo = ROOT / "models" / "zoo"
    return [zoo / n for n in ("photo", "scenes") if (zoo / n / "manifest.json").is_file()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundles", nargs="*", type=Path, help="default: the zoo's bundles")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    parser.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    inputs = make_inputs(BATCH)  # the encoder benchmark's: 128 px scene PNGs, short captions
    pngs, queries = inputs.pngs, inputs.texts
    bundles = [
        measure(b, args.threads, args.seconds, pngs, queries) for b in args.bundles or zoo_bundles()
    ]
    report: dict = {  # type: ignore[type-arg]
        "threads": args.threads,
        "batch": BATCH,
        "query_words_mean": float(np.mean([len(q.split()) for q in queries])),
        "target_per_s": TARGET_PER_S,
        "bundles": bundles,
    }
    if len(bundles) > 1:  # measured in this one run: a ratio, not two figures from two days
        first, second = bundles[0], bundles[1]
        report["image_e2e_ratio"] = first["image_e2e_per_s"] / second["image_e2e_per_s"]
        report["ratio_of"] = f"{first['bundle']} / {second['bundle']}"

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bundle.json"
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    lines = [f"{args.threads} threads, batch {BATCH}"]
    for r in bundles:
        lines += [
            f"{r['bundle']} on {r['provider']} ({r['image_size']} px)",
            f"  image tower (core)     {r['image_core_per_s']:8.0f}/s  "
            f"x{r['image_core_vs_target']:.2f} of target",
            f"  image (decode + core)  {r['image_e2e_per_s']:8.0f}/s  "
            f"x{r['image_e2e_vs_target']:.2f}",
            f"  short text queries     {r['text_per_s']:8.0f}/s  x{r['text_vs_target']:.2f}",
        ]
    if "image_e2e_ratio" in report:
        lines.append(
            f"image (decode + core) {report['ratio_of']}: x{report['image_e2e_ratio']:.2f}"
        )
    sys.stdout.write("\n".join([*lines, f"wrote {path}", ""]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
