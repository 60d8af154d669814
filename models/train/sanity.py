"""A quick sanity evaluation of a written bundle, through ONNX Runtime and the serving
preprocessing: retrieval on test scenes and CPU throughput. The full report is ``models/eval``;
this only checks that a training run produced something sensible, for TRAINING.md.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.data.scenes import generate_split
from service.core.manifest import Bundle, load_bundle
from service.core.preprocess import image_to_tensor
from service.core.tokenize import TextTokenizer

logger = logging.getLogger(__name__)

SHORT_QUERIES = (
    "a red circle",
    "two blue squares",
    "a small green star at the top left",
    "three objects",
    "a yellow hexagon next to a pink cross",
    "an orange diamond on a black background",
    "a striped cyan triangle",
    "the number of objects is five",
)


def _normed(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class BundleRunner:
    """ORT sessions for a bundle with the serving session options and a fixed thread count."""

    def __init__(self, root: Path, *, threads: int = 2) -> None:
        import onnxruntime as ort

        self.bundle: Bundle = load_bundle(root)
        m = self.bundle.manifest
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        cpu = ["CPUExecutionProvider"]
        self.image = ort.InferenceSession(
            str(self.bundle.path(m.image_tower.file)), opts, providers=cpu
        )
        self.text = ort.InferenceSession(
            str(self.bundle.path(m.text_tower.file)), opts, providers=cpu
        )
        self.tokenizer = TextTokenizer(
            self.bundle.path(m.text_tower.tokenizer),
            max_tokens=m.text_tower.max_tokens,
            pad_id=m.text_tower.pad_id,
        )

    def text_feeds(self, texts: list[str]) -> dict[str, np.ndarray]:
        enc = self.tokenizer.encode(texts)
        return {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask}

    def embed_texts(self, texts: list[str], batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        joint = np.zeros((len(texts), self.bundle.manifest.spaces.caption), np.float32)
        sent = np.zeros((len(texts), self.bundle.manifest.spaces.description), np.float32)
        for s in range(0, len(order), batch):
            idx = order[s : s + batch]
            j, t = self.text.run(None, self.text_feeds([texts[i] for i in idx]))
            joint[idx], sent[idx] = j, t
        return _normed(joint), _normed(sent)

    def embed_pixels(self, pixels: np.ndarray, batch: int = 32) -> np.ndarray:
        outs = [
            self.image.run(None, {"pixel_values": pixels[s : s + batch]})[0]
            for s in range(0, len(pixels), batch)
        ]
        return _normed(np.concatenate(outs))


def _recall(scores: np.ndarray, k: int) -> float:
    """scores [queries, items], the right item of query i is item i."""
    right = np.diag(scores)[:, None]
    rank = (scores > right).sum(axis=1)
    return float(np.mean(rank < k))


def _pairwise(images: np.ndarray, right: np.ndarray, wrong: np.ndarray) -> float:
    return float(np.mean(np.sum(images * right, 1) > np.sum(images * wrong, 1)))


def sanity_eval(root: Path, *, n: int = 1000, threads: int = 2) -> dict[str, Any]:
    runner = BundleRunner(root, threads=threads)
    tower = runner.bundle.manifest.image_tower
    scenes = generate_split("test", n)
    pixels = np.stack([image_to_tensor(s.render(tower.image_size), tower) for s in scenes])
    images = runner.embed_pixels(pixels)
    long_joint, long_sent = runner.embed_texts([s.captions["long"][0] for s in scenes])
    _, desc_sent = runner.embed_texts([s.description for s in scenes])
    t2i = long_joint @ images.T
    metrics: dict[str, Any] = {
        "scenes": n,
        "long_t2i_r1": _recall(t2i, 1),
        "long_t2i_r10": _recall(t2i, 10),
        "description_r1": _recall(long_sent @ desc_sent.T, 1),
    }
    counts = runner.embed_texts([c for _, c in scenes[0].count_captions()])[0]
    guess = np.argmax(images @ counts.T, axis=1) + 1
    metrics["count_acc"] = float(np.mean(guess == np.array([len(s.objects) for s in scenes])))
    for kind, neg_kind in (("short", "attribute"), ("compositional", "relation")):
        pairs = [(i, neg) for i, s in enumerate(scenes) for neg in s.negatives.get(neg_kind, ())]
        rows = np.array([i for i, _ in pairs])
        right = runner.embed_texts([s.captions[kind][0] for s in scenes])[0][rows]
        wrong = runner.embed_texts([neg for _, neg in pairs])[0]
        metrics[f"{neg_kind}_pair_acc"] = _pairwise(images[rows], right, wrong)
    metrics.update(throughput(runner, pixels[:32]))
    return metrics


def throughput(runner: BundleRunner, pixels: np.ndarray, *, repeats: int = 20) -> dict[str, Any]:
    feeds = runner.text_feeds([SHORT_QUERIES[i % len(SHORT_QUERIES)] for i in range(32)])
    result: dict[str, Any] = {"query_tokens": int(feeds["input_ids"].shape[1])}
    for name, session, feed in (
        ("image_per_s", runner.image, {"pixel_values": pixels}),
        ("text_per_s", runner.text, feeds),
    ):
        session.run(None, feed)
        start = time.perf_counter()
        for _ in range(repeats):
            session.run(None, feed)
        result[name] = 32 * repeats / (time.perf_counter() - start)
    return result
