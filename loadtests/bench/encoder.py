"""``clipsearch bench encoder``: what the dynamic batcher costs and buys, measured in one run.

On one bundle and one set of thread settings:

(a) the ceiling — raw ONNX Runtime throughput of each tower on prepared inputs at the best batch
    size (and, for images, decode + inference back to back: the work a served image also needs);
(b) served throughput under many concurrent single-item clients, in-process and through a
    ``clipsearch worker`` subprocess over gRPC, as a ratio to the ceiling;
(c) interactive latency with nothing else running, and while bulk clients saturate the encoder;
plus the text padding speed-up (batch-longest vs model maximum) and an overload run (10 x more
clients than the lane admits: how fast the excess is refused, and whether memory stays flat).
"""

from __future__ import annotations

import functools
import itertools
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.bench.load import best_rate, closed_loop, percentiles, rss_mb
from service.clients.base import EmbeddingClient
from service.core.config import LaneSettings, Settings
from service.core.errors import ClipsearchError
from service.encoder.engine import EncoderEngine, TokenizedText

TOWERS = ("text", "image")
BATCHES = (1, 8, 16, 32, 64)
BULK_REQUEST = 64


@dataclass
class Inputs:
    texts: list[str]
    pngs: list[bytes]


def make_inputs(n: int = 256) -> Inputs:
    import io

    from models.data.generate import generate_split  # the CLI may reach the offline data

    scenes = generate_split("test", n)
    pngs = []
    for scene in scenes:
        buf = io.BytesIO()
        scene.render(128).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    return Inputs([s.captions["short"][0] for s in scenes], pngs)


def ceilings(engine: EncoderEngine, inputs: Inputs, seconds: float) -> dict[str, Any]:
    tokens = engine.tokenize_texts(inputs.texts)
    tensors = np.stack([engine.preprocess_image(p) for p in inputs.pngs])
    n = len(tokens)
    per = max(1.0, seconds / len(BATCHES))  # shorter runs make the best-of-5 a lucky draw

    def text(b: int) -> Callable[[], int]:
        start = itertools.count(0, b)
        return lambda: _forward_texts(engine, tokens, next(start) % (n - b + 1), b)

    def image(b: int) -> Callable[[], int]:
        start = itertools.count(0, b)

        def run() -> int:
            i = next(start) % (n - b + 1)
            engine.forward_images(tensors[i : i + b])
            return b

        return run

    def image_e2e(b: int) -> int:
        engine.embed_images(inputs.pngs[:b])
        return b

    out: dict[str, Any] = {}
    for tower, make in (("text", text), ("image", image)):
        rates = {b: best_rate(make(b), per) for b in BATCHES}
        best = max(rates, key=lambda b: rates[b])
        out[tower] = {"best_batch": best, "items_per_s": rates[best], "by_batch": rates}
    best = out["image"]["best_batch"]
    out["image"]["decode_and_infer_items_per_s"] = best_rate(lambda: image_e2e(best), per * 2)
    out["image"]["preprocess_ms"] = preprocess_stages(engine, inputs)
    return out


def preprocess_stages(engine: EncoderEngine, inputs: Inputs, rounds: int = 3) -> dict[str, float]:
    """Median milliseconds per image of each preprocessing stage on one thread: decode (bytes
    to an upright RGB image), resize + crop to the tower's size, normalise (pixels to the
    float32 CHW tensor: ``image_to_tensor`` of an image already at size)."""
    from service.core.bundle.preprocess import decode_image, image_to_tensor, resize_and_crop

    tower = engine.bundle.manifest.image_tower
    limit = engine.settings.limits.max_image_pixels
    times: dict[str, list[float]] = {"decode": [], "resize": [], "normalise": []}
    for _ in range(rounds):
        for data in inputs.pngs:
            t0 = time.perf_counter()
            img = decode_image(data, limit)
            t1 = time.perf_counter()
            img = resize_and_crop(img, tower.image_size, tower.resize, tower.interpolation)
            t2 = time.perf_counter()
            image_to_tensor(img, tower)
            t3 = time.perf_counter()
            for stage, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                times[stage].append(seconds)
    return {stage: round(1000 * float(np.median(v)), 3) for stage, v in times.items()}


def _forward_texts(engine: EncoderEngine, tokens: list[TokenizedText], i: int, b: int) -> int:
    engine.forward_texts(tokens[i : i + b])
    return b


def padding_speedup(engine: EncoderEngine, inputs: Inputs, seconds: float) -> dict[str, Any]:
    """Short queries at batch 32: padded to the batch's longest vs to the model maximum."""
    tt = engine.bundle.manifest.text_tower
    batch = engine.tokenize_texts(inputs.texts[:32])
    width = tt.max_tokens

    def padded_to_max() -> int:
        ids = np.full((len(batch), width), tt.pad_id, np.int64)
        mask = np.zeros_like(ids)
        for row, item in enumerate(batch):
            ids[row, : item.length] = item.ids
            mask[row, : item.length] = 1
        feeds = {tt.input_ids_name: ids}
        if tt.attention_mask_name:
            feeds[tt.attention_mask_name] = mask
        engine._text.run(None, feeds)
        return len(batch)

    longest = best_rate(lambda: _forward_texts(engine, batch, 0, len(batch)), seconds / 2)
    maximum = best_rate(padded_to_max, seconds / 2)
    return {
        "batch": len(batch),
        "longest_tokens": max(t.length for t in batch),
        "model_max_tokens": width,
        "batch_longest_items_per_s": longest,
        "model_max_items_per_s": maximum,
        "speedup": longest / maximum,
    }


def _one(client: EmbeddingClient, tower: str, inputs: Inputs, lane: str) -> Callable[[int], int]:
    turn = itertools.count()

    def call(_: int) -> int:
        k = next(turn)
        if tower == "text":
            client.embed_texts([inputs.texts[k % len(inputs.texts)]], lane=lane)  # type: ignore[arg-type]
            return 1
        [result] = client.embed_images([inputs.pngs[k % len(inputs.pngs)]], lane=lane)  # type: ignore[arg-type]
        if isinstance(result, ClipsearchError):
            raise result
        return 1

    return call


def _bulk(client: EmbeddingClient, tower: str, inputs: Inputs) -> Callable[[int], int]:
    def call(index: int) -> int:
        start = (index * BULK_REQUEST) % (len(inputs.texts) - BULK_REQUEST)
        if tower == "text":
            client.embed_texts(inputs.texts[start : start + BULK_REQUEST], lane="bulk")
        else:
            client.embed_images(inputs.pngs[start : start + BULK_REQUEST], lane="bulk")
        return BULK_REQUEST

    return call


def served(
    client: EmbeddingClient,
    inputs: Inputs,
    *,
    clients: int,
    bulk_clients: int,
    seconds: float,
    endpoint: str | None = None,
) -> dict[str, Any]:
    """Per tower: throughput under ``clients`` single-item clients; interactive latency idle
    and while ``bulk_clients`` keep the bulk lane full. With a worker ``endpoint`` the bulk
    clients run in their own process, as an indexer would: in this one, their request
    building would compete with the measured query for this process's GIL."""
    out: dict[str, Any] = {}
    for tower in TOWERS:
        cpu0, wall0 = time.process_time(), time.monotonic()
        load = closed_loop(_one(client, tower, inputs, "interactive"), clients, seconds)
        # The load generator shares this machine's CPUs with the encoder: say how much it took.
        client_cores = (time.process_time() - cpu0) / (time.monotonic() - wall0)
        idle = closed_loop(_one(client, tower, inputs, "interactive"), 1, seconds)
        front = functools.partial(
            closed_loop, _one(client, tower, inputs, "interactive"), 1, seconds
        )
        back: Callable[[], Any]
        if endpoint is None:
            back = functools.partial(
                closed_loop, _bulk(client, tower, inputs), bulk_clients, seconds + 1.0, warmup_s=0.0
            )
        else:
            back = functools.partial(
                _bulk_elsewhere, endpoint, tower, inputs, bulk_clients, seconds + 1.0
            )
        busy = _with_background(front, back)
        idle_p, busy_p = percentiles(idle.latencies_ms()), percentiles(busy[0].latencies_ms())
        out[tower] = {
            "served_items_per_s": load.items_per_s,
            "bench_process_cpu_cores": round(client_cores, 2),
            "errors": load.errors,
            "latency_idle": idle_p,
            "latency_under_bulk": busy_p,
            "bulk_items_per_s": busy[1].items_per_s,
            "p99_ratio": busy_p.get("p99_ms", float("nan")) / idle_p.get("p99_ms", float("nan")),
        }
    return out


@dataclass
class _Rate:
    items_per_s: float


def _bulk_elsewhere(
    endpoint: str, tower: str, inputs: Inputs, clients: int, seconds: float
) -> _Rate:
    """Bulk clients of a worker in a process of their own (see :func:`served`)."""
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(
        target=_bulk_process, args=(endpoint, tower, inputs, clients, seconds, results)
    )
    proc.start()
    try:
        return _Rate(float(results.get(timeout=seconds + 120)))
    finally:
        proc.join(30)


def _bulk_process(
    endpoint: str, tower: str, inputs: Inputs, clients: int, seconds: float, results: Any
) -> None:
    from service.clients.grpc import GrpcEmbeddingClient
    from service.core.config import EncoderSettings

    client = GrpcEmbeddingClient([endpoint], EncoderSettings())
    try:
        load = closed_loop(_bulk(client, tower, inputs), clients, seconds, warmup_s=0.0)
        results.put(load.items_per_s)
    finally:
        client.close()


def _with_background(front: Callable[[], Any], back: Callable[[], Any]) -> tuple[Any, Any]:
    box: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: box.update(back=back()), daemon=True)
    thread.start()
    time.sleep(1.5)  # let the bulk clients start and fill the lane before measuring
    result = front()
    thread.join(120)
    return result, box["back"]


def overload(engine: EncoderEngine, inputs: Inputs, seconds: float) -> dict[str, Any]:
    """10 x more concurrent clients than the interactive lane admits (text tower)."""
    from service.clients.inprocess import InProcessEmbeddingClient
    from service.encoder.batcher import Batcher

    limit = 16
    enc = engine.settings.encoder.model_copy(
        update={"interactive": LaneSettings(max_queue=limit, max_batch_size=16)}
    )
    client = InProcessEmbeddingClient(engine, batcher=Batcher(engine, enc))
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(seconds / 8):
            samples.append(round(rss_mb(), 1))

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        before = rss_mb()
        sampler.start()
        call = _one(client, "text", inputs, "interactive")
        result = closed_loop(call, 10 * limit, seconds, backoff_s=0.01)
        after = rss_mb()
    finally:
        stop.set()
        sampler.join(5)
        client.close()
    half = samples[len(samples) // 2 :] or [after]
    return {
        "max_queue": limit,
        "clients": 10 * limit,
        "refused": percentiles(result.latencies_ms(refused=True)),
        "accepted": percentiles(result.latencies_ms()),
        "accepted_items_per_s": result.items_per_s,
        "errors": result.errors,
        "rss_mb_before": round(before, 1),
        "rss_mb_after": round(after, 1),
        "rss_mb_samples": samples,
        # Flat memory: the second half of the run grows no further than noise.
        "rss_mb_growth_second_half": round(max(half) - half[0], 1),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_worker(bundle: Path, settings: Settings, port: int) -> subprocess.Popen[bytes]:
    enc = settings.encoder
    env = os.environ | {
        "CLIPSEARCH_BUNDLE": str(bundle),
        "CLIPSEARCH_ENCODER__PROVIDER": enc.provider,
        "CLIPSEARCH_ENCODER__INTRA_OP_THREADS": str(enc.intra_op_threads),
        "CLIPSEARCH_ENCODER__INTER_OP_THREADS": str(enc.inter_op_threads),
        "CLIPSEARCH_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "clipsearch", "worker", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--metrics-port", "0"]
    return subprocess.Popen(command, env=env)
