"""Train clipsearch's scenes CLIP variant (synthetic scenes) and export it as a bundle.

    python -m models.train --out models/zoo/scenes --seed 0
    python -m models.train --out /tmp/no-hn --seed 0 --no-hard-negatives   # eval baseline
    python -m models.train --out /tmp/init --seed 0 --init-only            # untrained image tower
    python -m models.train --out /tmp/no-conj --seed 0 --no-conjunction    # ablation baseline

Pipeline: scenes -> rendered images + distinct texts -> MiniLM token-state cache -> CLIP
training of the image CNN and the text head (global and conjunction parts) -> ONNX export with
parity gates -> sanity evaluation -> TRAINING.md in the bundle.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from models.data.scenes import generate_split
from models.export.quantize import compact_minilm
from models.export.scenes import export_scenes_bundle
from models.train.cache import cached_token_states
from models.train.dataset import build_train_data
from models.train.loop import TrainConfig, TrainResult, train
from models.train.minilm import load_minilm, load_tokenizer
from models.train.report import training_markdown
from models.train.sanity import sanity_eval
from models.train.towers import ClipModel, TowerConfig

logger = logging.getLogger("models.train")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m models.train", description=__doc__.split("\n")[1])
    p.add_argument("--out", type=Path, required=True, help="bundle folder to (re)write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=defaults.steps)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--train-scenes", type=int, default=6000)
    p.add_argument("--image-size", type=int, default=TowerConfig.image_size)
    p.add_argument("--no-hard-negatives", action="store_true", help="plain CLIP loss (baseline)")
    p.add_argument("--init-only", action="store_true", help="export the towers at initialisation")
    p.add_argument(
        "--no-conjunction",
        action="store_true",
        help="leave the colour x shape conjunction channel out (ablation baseline)",
    )
    p.add_argument("--eval-scenes", type=int, default=1000, help="0 skips the sanity evaluation")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument(
        "--cache-dir", type=Path, default=Path(".cache/clipsearch"), help="text-embedding cache"
    )
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, object]:
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    # The text rows of a batch are gathered with repeats (a caption is some scene's positive and
    # another's negative); the backward of such a gather accumulates with a parallel
    # index_put_, whose default CPU kernel sums in a thread-timing order. Deterministic mode
    # sorts first, so the same seed and thread count give byte-identical bundles.
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    tcfg = TowerConfig(image_size=args.image_size, conjunction=not args.no_conjunction)
    cfg = TrainConfig(
        steps=0 if args.init_only else args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        hard_negatives=not args.no_hard_negatives,
        conj_weight=0.0 if args.no_conjunction else TrainConfig.conj_weight,
    )
    minilm = load_minilm()
    model = ClipModel(tcfg)
    timings: dict[str, float] = {}
    result = TrainResult(steps=0, seconds=0.0, final_loss=float("nan"), logit_scale=0.0)
    data_info: dict[str, object] = {}
    if not args.init_only:
        t = time.perf_counter()
        scenes = generate_split("train", args.train_scenes)
        data = build_train_data(scenes, tcfg.image_size, seed=args.seed)
        timings["data_s"] = time.perf_counter() - t
        t = time.perf_counter()
        states = cached_token_states(
            compact_minilm(minilm), load_tokenizer(), data.index.texts, cache_dir=args.cache_dir
        )
        timings["text_cache_s"] = time.perf_counter() - t
        data_info = {
            "train_scenes": len(data),
            "distinct_texts": len(data.index),
            "text_tokens": len(states.flat),
        }
        result = train(model, data, states, cfg, seed=args.seed)
        del states  # ~1 GB of token states; export and evaluation do not need them
        timings["train_s"] = result.seconds
    t = time.perf_counter()
    summary = (
        "clipsearch scenes: frozen all-MiniLM-L6-v2 text tower with a trained head, a small "
        "CNN image tower trained from scratch on synthetic shape scenes, and a colour-shape "
        "conjunction channel in both."
    )
    if args.no_conjunction:
        summary = (
            "Ablation baseline: the scenes recipe without the colour-shape conjunction channel "
            "(global embedding only)."
        )
    if args.init_only:
        summary = "Untrained baseline: image tower and text projection at initialisation."
    report = export_scenes_bundle(
        args.out,
        minilm=minilm,
        model=model,
        trained=not args.init_only,
        summary=summary,
    )
    timings["export_s"] = time.perf_counter() - t
    t = time.perf_counter()
    metrics = sanity_eval(args.out, n=args.eval_scenes) if args.eval_scenes else {}
    timings["eval_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - start
    info: dict[str, object] = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "train": cfg.to_dict(),
        "towers": tcfg.to_dict(),
        "data": data_info,
        "result": {
            "final_loss": result.final_loss,
            "logit_scale": result.logit_scale,
            "conj_scale": float(model.conj_scale.detach()),
            "history": result.history,
        },
        "timings": timings,
        "export": report.to_dict(),
        "sanity": metrics,
    }
    (args.out / "TRAINING.md").write_text(training_markdown(info), encoding="utf-8")
    logger.info("sanity: %s", json.dumps(metrics))
    logger.info("timings: %s", json.dumps(timings))
    return info


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for noisy in ("onnx_ir", "onnxscript", "torch.onnx"):  # the exporter logs every pass
        logging.getLogger(noisy).setLevel(logging.WARNING)
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
