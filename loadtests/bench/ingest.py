"""``clipsearch bench ingest``: end-to-end ingestion of images against the encoder, in one run.

On one bundle and one set of settings, over the same N scene PNGs written to a temp folder:

(a) the encoder reference — ``EncoderEngine.embed_images`` on the PNGs at batch 64 back to back
    (decode + inference, no batcher: the encoder's raw throughput for this input), and ONNX
    Runtime alone on the preprocessed tensors;
(b) ingestion of the folder through a real ``InProcessJobQueue`` over the in-process embedding
    client and an embedded ``QdrantEdgeStore`` (read → decode → embed on the bulk lane →
    upsert), timed from submit to job completion;
(c) the same PNGs as webdataset shards (``KEY.png`` members, img2dataset's naming, 20 shards;
    no captions, so that the work is the folder's), ingested as a ``webdataset`` source from
    local disk, and from an S3-compatible server on the loopback (moto's standalone server, when
    moto is installed: the dev extra), each into a fresh store;
(d) the references once more: the ratios are to the mean of (a) and (d), so that the machine
    drifting during the run (it is shared) shows in ``reference_drift`` instead of in the ratio;
and a check that each collection then holds exactly N points.
"""

from __future__ import annotations

import importlib.util
import io
import os
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from loadtests.bench.encoder import make_inputs
from loadtests.bench.load import machine
from service.core.config import Settings, SourcesSettings
from service.core.domain import collection_dims
from service.encoder.engine import EncoderEngine

if TYPE_CHECKING:
    from indexer.jobs.local import InProcessJobQueue
    from service.clients.base import EmbeddingClient

BATCH = 64
SHARDS = 20
TARGET_RATIO = 0.8
JOB_TIMEOUT_S = 3600.0
DONE_STATES = frozenset({"completed", "failed", "cancelled", "interrupted"})


def run_ingest_bench(settings: Settings, bundle: Path, *, images: int) -> dict[str, Any]:
    from loadtests.bench.load import in_process_embedder

    pngs = make_inputs(images).pngs
    with tempfile.TemporaryDirectory(prefix="clipsearch-bench-ingest-") as tmp:
        root = Path(tmp)
        folder = root / "images"
        folder.mkdir()
        for i, data in enumerate(pngs):
            (folder / f"scene-{i:06d}.png").write_bytes(data)
        settings = settings.model_copy(
            update={
                "bundle": str(bundle),
                "data_dir": root / "data",
                "sources": SourcesSettings(allowed_roots=[root]),
            }
        )
        shards = root / "shards"
        write_shards(shards, pngs, SHARDS)
        pattern = f"{{{0:05d}..{SHARDS - 1:05d}}}.tar"
        # The same engine serves the references and the jobs: one bundle, one set of threads.
        embedder = in_process_embedder(settings, bundle)
        try:
            engine = embedder.engine
            report: dict[str, Any] = {
                "bundle": engine.bundle.manifest.ref,
                "provider": engine.provider,
                "machine": machine(),
                "settings": settings.encoder.model_dump(mode="json", exclude={"endpoints"}),
                "images": images,
                "image_px": 128,
                "reference_batch": BATCH,
                "shards": SHARDS,
            }
            before = references(engine, pngs)
            report["ingest"] = ingest(
                settings, embedder, {"directory": str(folder)}, root / "data-folder"
            )
            report["ingest_shards_local"] = ingest(
                settings, embedder, {"webdataset": str(shards / pattern)}, root / "data-shards"
            )
            with s3_shards(root, shards) as (prefix, env):
                if prefix is None:
                    report["ingest_shards_s3"] = {"skipped": env["why"]}
                else:
                    s3 = settings.model_copy(
                        update={"sources": SourcesSettings(allowed_roots=[root, prefix])}
                    )
                    source = {"webdataset": f"{prefix}/{pattern}"}
                    report["ingest_shards_s3"] = ingest(s3, embedder, source, root / "data-s3")
            after = references(engine, pngs)
        finally:
            embedder.close()
    report["reference"] = {k: (before[k] + after[k]) / 2 for k in before}
    report["reference_before"], report["reference_after"] = before, after
    key = "decode_and_infer_items_per_s"
    report["reference_drift"] = after[key] / before[key]
    ref, got = report["reference"], report["ingest"]
    report["ratio_to_decode_and_infer"] = got["items_per_s"] / ref["decode_and_infer_items_per_s"]
    report["ratio_to_ort_only"] = got["items_per_s"] / ref["ort_only_items_per_s"]
    report["target_ratio"] = TARGET_RATIO
    report["meets_target"] = report["ratio_to_decode_and_infer"] >= TARGET_RATIO
    report["points_ok"] = got["points"] == images and got["state"] == "completed"
    for name in ("ingest_shards_local", "ingest_shards_s3"):
        run = report[name]
        if "items_per_s" in run:
            run["ratio_to_decode_and_infer"] = (
                run["items_per_s"] / ref["decode_and_infer_items_per_s"]
            )
            run["points_ok"] = run["points"] == images and run["state"] == "completed"
    return report


def write_shards(folder: Path, pngs: list[bytes], shards: int) -> None:
    """``folder/00000.tar`` ...: the PNGs as webdataset members (``KEY.png``, 9-digit keys)."""
    folder.mkdir()
    per = -(-len(pngs) // shards)
    for s in range(shards):
        with tarfile.open(folder / f"{s:05d}.tar", "w") as tar:
            for i in range(s * per, min(len(pngs), (s + 1) * per)):
                info = tarfile.TarInfo(f"{i:09d}.png")
                info.size = len(pngs[i])
                tar.addfile(info, io.BytesIO(pngs[i]))


@contextmanager
def s3_shards(root: Path, shards: Path) -> Iterator[tuple[str | None, dict[str, str]]]:
    """The shards in a bucket of moto's S3 server on the loopback, the AWS variables pointing at
    it for the duration; ``(None, {"why": ...})`` where moto is not installed."""
    if importlib.util.find_spec("moto") is None:
        yield None, {"why": "moto is not installed (pip install -e '.[dev]')"}
        return
    from loadtests.s3server import aws_env, moto_s3, upload

    with moto_s3(root) as endpoint:
        env = aws_env(endpoint)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            upload(endpoint, shards, "bench", "shards")
            yield "s3://bench/shards", env
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def references(engine: EncoderEngine, pngs: list[bytes]) -> dict[str, float]:
    """One pass over all PNGs each (after a warm-up batch): decode + inference, then ORT alone."""
    engine.embed_images(pngs[:BATCH])
    start = time.perf_counter()
    for i in range(0, len(pngs), BATCH):
        engine.embed_images(pngs[i : i + BATCH])
    decode_and_infer = len(pngs) / (time.perf_counter() - start)

    start = time.perf_counter()
    tensors = np.stack([engine.preprocess_image(p) for p in pngs])
    decode_only = len(pngs) / (time.perf_counter() - start)
    engine.forward_images(tensors[:BATCH])
    start = time.perf_counter()
    for i in range(0, len(tensors), BATCH):
        engine.forward_images(tensors[i : i + BATCH])
    ort_only = len(tensors) / (time.perf_counter() - start)
    return {
        "decode_and_infer_items_per_s": decode_and_infer,
        "ort_only_items_per_s": ort_only,
        "decode_only_items_per_s": decode_only,
    }


def ingest(
    settings: Settings, embedder: EmbeddingClient, source: dict[str, Any], data_dir: Path
) -> dict[str, Any]:
    """``source`` ingested by a real in-process job runner into a fresh store in ``data_dir``."""
    from indexer.jobs.local import InProcessJobQueue
    from service.store.edge import QdrantEdgeStore

    settings = settings.model_copy(update={"data_dir": data_dir})
    store = QdrantEdgeStore(settings.data_dir)
    try:
        # Every space the bundle writes (the photo bundle adds ``visual``), as the gateway does.
        store.ensure_collection(settings.collection, collection_dims(embedder.info().spaces))
        jobs = InProcessJobQueue(settings=settings, embedder=embedder, store=store)
        try:
            start = time.perf_counter()
            job_id = jobs.submit("ingest", {"source": source})
            record = _wait(jobs, job_id)
            seconds = time.perf_counter() - start
        finally:
            jobs.close()
        points = store.count(settings.collection)
    finally:
        store.close()
    return {
        "state": record["state"],
        "seconds": seconds,
        "items_per_s": record["done"] / seconds,
        "done": record["done"],
        "failed": record["failed"],
        "errors": record["errors"][:5],
        "points": points,
    }


def _wait(jobs: InProcessJobQueue, job_id: str) -> dict[str, Any]:
    # The job queue's protocol offers status() only, no completion event: poll it. A 5 ms
    # period is noise next to a job of seconds, and status() is a dict copy under a lock.
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while (record := jobs.status(job_id))["state"] not in DONE_STATES:
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {record['state']} after {JOB_TIMEOUT_S} s")
        time.sleep(0.005)
    return record
