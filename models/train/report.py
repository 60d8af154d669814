"""TRAINING.md: how a bundle was made (command, seed, steps, wall time) and what it reached."""

from __future__ import annotations

import json
from typing import Any

TARGETS = {
    "long_t2i_r1": ">= 0.60",
    "long_t2i_r10": ">= 0.95",
    "count_acc": ">= 0.85",
    "attribute_pair_acc": ">= 0.80",
    "description_r1": ">= 0.90",
    "image_per_s": ">= 300",
    "text_per_s": ">= 300",
}


def _command(args: dict[str, str]) -> str:
    parts = ["python -m models.train", f"--out {args['out']}", f"--seed {args['seed']}"]
    for flag in ("steps", "batch_size", "train_scenes", "image_size", "lr"):
        parts.append(f"--{flag.replace('_', '-')} {args[flag]}")
    if args.get("no_hard_negatives") == "True":
        parts.append("--no-hard-negatives")
    if args.get("init_only") == "True":
        parts.append("--init-only")
    if args.get("no_conjunction") == "True":
        parts.append("--no-conjunction")
    return " ".join(parts)


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def training_markdown(info: dict[str, Any]) -> str:
    args = info["args"]
    timings = info["timings"]
    sizes = info["export"]["sizes"]
    lines = [
        "# default bundle: how it was trained",
        "",
        "Reproduce (CPU, deterministic for a seed and thread count):",
        "",
        "```",
        f"HF_HUB_OFFLINE=1 {_command(args)}",
        "```",
        "",
        f"- seed: {args['seed']}; threads: {args['threads']}",
        f"- steps: {info['train']['steps']} x batch {info['train']['batch_size']}; "
        f"hard negatives: {info['train']['hard_negatives']}",
        f"- data: {json.dumps(info['data'])}",
        f"- towers: {json.dumps(info['towers'])}",
        "- wall time: "
        + ", ".join(f"{k.removesuffix('_s')} {v:.0f} s" for k, v in timings.items()),
        f"- final training loss {_fmt(info['result']['final_loss'])}, "
        f"learnt logit scale {_fmt(info['result']['logit_scale'])}, "
        f"conjunction weight {_fmt(info['result'].get('conj_scale', float('nan')))}",
        "",
        "## Sanity evaluation (test split, ONNX Runtime, serving preprocessing)",
        "",
        "Not the full report (that is `models/eval`): text->image recall of the canonical long",
        "caption among all test images; description R@1 is long caption -> description in the",
        "MiniLM sentence space; count accuracy picks the best of the six count captions; pair",
        "accuracies compare the true caption with each hard negative. Throughput: batch 32 on this",
        "machine's CPU with 2 threads (short queries for text).",
        "",
        "| metric | value | issue target |",
        "|---|---|---|",
    ]
    for key, value in info["sanity"].items():
        lines.append(f"| {key} | {_fmt(value)} | {TARGETS.get(key, '')} |")
    lines += [
        "",
        "## Export",
        "",
        "| file | bytes |",
        "|---|---|",
        *(f"| {name} | {size:,} |" for name, size in sizes.items()),
        f"| total | {sum(sizes.values()):,} |",
        "",
        "Parity (batches 1/8/32): ",
        "",
    ]
    for name, rep in info["export"]["parity"].items():
        worst_diff = max(rep["max_abs_diff"].values())
        worst_cos = min(rep["min_cosine"].values())
        lines.append(
            f"- {name} ({rep['precision']} gate): passed={rep['passed']}, "
            f"max abs diff {worst_diff:.2e}, min row cosine {worst_cos:.6f}"
        )
    lines += ["", "## Loss history", "", "| step | loss |", "|---|---|"]
    lines += [f"| {s} | {loss:.4f} |" for s, loss in info["result"]["history"]]
    return "\n".join(lines) + "\n"
