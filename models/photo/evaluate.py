"""Measure a built photo bundle the way serving runs it: ONNX Runtime sessions, the serving
preprocessing and tokenizer, on the dev photos and queries.

Figures: text→image R@1 / mean rank / mAP per query group; image→image near-duplicate R@1 (each
dev photo re-encoded as a cropped, shrunk, JPEG-recompressed copy must find its original) with
the ``visual`` output and, for comparison, with ``image_embeds``; and the image tower's
throughput (onnxruntime, CPU, 2 threads, batch 32).
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
from PIL import Image

from models.photo.dev.devset import (
    GROUPS,
    DevPhoto,
    load_photos,
    load_queries,
    photo_file,
    relevance,
    score_groups,
)
from service.core.bundle.manifest import Manifest
from service.core.bundle.preprocess import decode_image, image_to_tensor
from service.core.bundle.tokenize import TextTokenizer

MAX_PIXELS = 40_000_000
BATCH = 32


def _session(path: Path, threads: int | None = None) -> object:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def near_duplicate(img: Image.Image) -> Image.Image:
    """A copy as a re-upload would make it: 5% cropped off each side, half size, JPEG q=50."""
    w, h = img.size
    box = (w // 20, h // 20, w - w // 20, h - h // 20)
    small = img.crop(box).resize(
        (max(1, w * 9 // 20), max(1, h * 9 // 20)), Image.Resampling.BILINEAR
    )
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=50)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _embed_images(sess: object, manifest: Manifest, images: list[Image.Image]) -> list[np.ndarray]:
    spec = manifest.image_tower
    names = ["image_embeds", spec.visual_output_name or "image_embeds"]
    outs: list[list[np.ndarray]] = [[], []]
    for start in range(0, len(images), BATCH):
        pixels = np.stack([image_to_tensor(im, spec) for im in images[start : start + BATCH]])
        got = sess.run(names, {spec.input_name: pixels})  # type: ignore[attr-defined]
        for acc, arr in zip(outs, got, strict=True):
            acc.append(arr)
    return [np.concatenate(o) for o in outs]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _dup_r_at_1(originals: np.ndarray, copies: np.ndarray) -> float:
    sims = _unit(copies) @ _unit(originals).T
    return float((sims.argmax(axis=1) == np.arange(len(copies))).mean())


def dev_figures(root: Path, manifest: Manifest, dev_root: Path) -> dict[str, float]:
    """``dev.<group>.<metric>`` and ``dev.near_duplicate.*`` figures for the card."""
    photos: list[DevPhoto] = load_photos()
    queries = load_queries()
    images = [decode_image(photo_file(dev_root, p).read_bytes(), MAX_PIXELS) for p in photos]
    image_sess = _session(root / manifest.image_tower.file)
    embeds, visual = _embed_images(image_sess, manifest, images)
    tt = manifest.text_tower
    tokenizer = TextTokenizer(root / tt.tokenizer, max_tokens=tt.max_tokens, pad_id=tt.pad_id)
    enc = tokenizer.encode([q.text for q in queries])
    text_sess = _session(root / tt.file)
    [query_vecs] = text_sess.run(  # type: ignore[attr-defined]
        [tt.output_name], {tt.input_ids_name: enc.input_ids, "attention_mask": enc.attention_mask}
    )
    groups = score_groups(query_vecs @ embeds.T, relevance(photos, queries), queries)
    figures = {
        f"dev.{g}.{k}": round(v, 4) for g, s in groups.items() for k, v in s.to_dict().items()
    }
    figures["dev.macro_r_at_1"] = round(float(np.mean([groups[g].r_at_1 for g in GROUPS])), 4)
    dup_embeds, dup_visual = _embed_images(
        image_sess, manifest, [near_duplicate(i) for i in images]
    )
    figures["dev.near_duplicate.visual_r_at_1"] = round(_dup_r_at_1(visual, dup_visual), 4)
    figures["dev.near_duplicate.image_r_at_1"] = round(_dup_r_at_1(embeds, dup_embeds), 4)
    figures["dev.photos"] = float(len(photos))
    figures["dev.queries"] = float(len(queries))
    return figures


def images_per_second(path: Path, image_size: int, *, threads: int = 2, repeats: int = 5) -> float:
    """Image tower throughput on random pixels: onnxruntime CPU, ``threads`` threads, batch 32;
    the best of ``repeats`` timed runs after one warm-up (the least disturbed by other load)."""
    sess = _session(path, threads)
    name = sess.get_inputs()[0].name  # type: ignore[attr-defined]
    pixels = np.random.default_rng(0).standard_normal((BATCH, 3, image_size, image_size))
    feeds = {name: pixels.astype(np.float32)}
    sess.run(None, feeds)  # type: ignore[attr-defined]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        sess.run(None, feeds)  # type: ignore[attr-defined]
        best = min(best, time.perf_counter() - start)
    return BATCH / best
