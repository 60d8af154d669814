"""One model file's ONNX Runtime ceiling: sentences per second at a fixed batch, in-process, on
pre-tokenised batches padded to their longest item (what a server's forward pass costs, nothing
of its request path). Run by each server's own interpreter (``.venv`` for clipsearch,
``.venv-peers`` for infinity), so it imports numpy, onnxruntime and tokenizers alone; prints one
JSON object.

    python loadtests/peers/ceiling.py MODEL.onnx TOKENIZER.json SENTENCES.txt [--batch 32]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

DTYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


def batches(
    tokenizer: Tokenizer, sentences: list[str], batch: int, max_tokens: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``sentences`` in order, ``batch`` at a time (the last batch wraps around), each as
    (ids, attention mask) padded with 0 to the batch's longest."""
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_tokens)
    ids = [e.ids for e in tokenizer.encode_batch(sentences)]
    out = []
    for start in range(0, len(ids), batch):
        chunk = [ids[(start + i) % len(ids)] for i in range(batch)]
        width = max(len(c) for c in chunk)
        padded = np.zeros((batch, width), np.int64)
        mask = np.zeros((batch, width), np.int64)
        for row, item in enumerate(chunk):
            padded[row, : len(item)] = item
            mask[row, : len(item)] = 1
        out.append((padded, mask))
    return out


def feeds(
    session: ort.InferenceSession, ids: np.ndarray, mask: np.ndarray
) -> dict[str, np.ndarray]:
    given = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    out = {}
    for spec in session.get_inputs():
        if spec.name not in given:
            raise SystemExit(f"{spec.name}: an input this script does not know how to fill")
        out[spec.name] = given[spec.name].astype(DTYPES.get(spec.type, np.int64))
    return out


def ceiling(model: Path, tokenizer: Path, sentences: list[str], *, batch: int, seconds: float,
            windows: int, max_tokens: int, spin: bool) -> dict[str, object]:  # fmt: skip
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spin:  # as clipsearch's encoder (spin_wait off); optimum keeps ORT's default (on)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    prepared = [
        feeds(session, ids, mask)
        for ids, mask in batches(Tokenizer.from_file(str(tokenizer)), sentences, batch, max_tokens)
    ]
    for feed in prepared:  # warm-up: one pass over every shape
        session.run(None, feed)
    rates = []
    for _ in range(windows):  # best of a few windows: the machine is shared
        items, start, i = 0, time.perf_counter(), 0
        while (elapsed := time.perf_counter() - start) < seconds / windows or items == 0:
            session.run(None, prepared[i % len(prepared)])
            items, i = items + batch, i + 1
        rates.append(items / elapsed)
    return {
        "model": str(model),
        "batch": batch,
        "sentences": len(sentences),
        "items_per_s": max(rates),
        "windows_items_per_s": rates,
        "onnxruntime": ort.__version__,
        "intra_op_threads": "onnxruntime default",
        "spinning": spin,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", type=Path)
    parser.add_argument("tokenizer", type=Path)
    parser.add_argument("sentences", type=Path)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument(
        "--no-spin", action="store_true", help="ORT threads do not spin (clipsearch's setting)"
    )
    args = parser.parse_args()
    sentences = [s for s in args.sentences.read_text(encoding="utf-8").splitlines() if s]
    result = ceiling(
        args.model, args.tokenizer, sentences, batch=args.batch, seconds=args.seconds,
        windows=args.windows, max_tokens=args.max_tokens, spin=not args.no_spin,
    )  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
