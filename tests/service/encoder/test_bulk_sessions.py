"""Bulk image inference on its own ONNX Runtime session at the bulk OS priority (CPU), on the real
tiny bundle: the thread that runs it and ONNX Runtime's worker thread of that session are
SCHED_IDLE tasks of this process, the interactive sessions' are not, both lanes give the same
vectors, and the batcher's bulk image batches (only those) run there."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from service.core.bundle.manifest import load_bundle
from service.core.config import EncoderSettings, Settings
from service.encoder.batcher import Batcher
from service.encoder.engine import EncoderEngine

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling only")

TEXTS = ["a red circle", "a blue square on the left", "two green triangles"]


def png(color: tuple[int, int, int], size: int = 40) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def idle_tasks() -> set[int]:
    """This process's threads (Linux tasks) whose policy is SCHED_IDLE."""
    found = set()
    for task in os.listdir("/proc/self/task"):
        try:
            if os.sched_getscheduler(int(task)) == os.SCHED_IDLE:
                found.add(int(task))
        except OSError:  # ended meanwhile
            continue
    return found


def engine(bundle_dir: Path, **encoder: Any) -> EncoderEngine:
    # Two intra-op threads: ONNX Runtime starts one worker thread per session beside the caller.
    settings = Settings(encoder=EncoderSettings(provider="cpu", intra_op_threads=2, **encoder))
    made = EncoderEngine(load_bundle(bundle_dir), settings)
    made.warmup()
    return made


@pytest.fixture
def bulk(tiny_bundle_dir: Path) -> Iterator[tuple[EncoderEngine, set[int]]]:
    before = idle_tasks()
    made = engine(tiny_bundle_dir)
    yield made, idle_tasks() - before
    made.close()


def test_bulk_sessions_run_on_idle_priority_threads(
    bulk: tuple[EncoderEngine, set[int]], tiny_bundle_dir: Path
) -> None:
    made, new_idle = bulk
    assert made.bulk_sessions
    assert made._bulk is not None
    runner = made._bulk.call(threading.get_native_id)
    assert os.sched_getscheduler(runner) == os.SCHED_IDLE
    # The runner, and ORT's worker thread of the bulk image session it made.
    assert runner in new_idle and len(new_idle) >= 2, new_idle
    # The two image sessions (which never run at once) take memory from one shared arena.
    shared = "session.use_env_allocators"
    for session in (made._image, made._bulk.session):
        assert session.get_session_options().get_session_config_entry(shared) == "1"
    # An engine without them starts no idle thread: its sessions' threads run at normal priority.
    before = idle_tasks()
    plain = engine(tiny_bundle_dir, bulk_sessions=False)
    try:
        assert not plain.bulk_sessions
        assert idle_tasks() - before == set()
    finally:
        plain.close()
    normal = engine(tiny_bundle_dir, bulk_priority="normal")
    try:
        assert not normal.bulk_sessions
    finally:
        normal.close()


def test_both_lanes_give_the_same_vectors(bulk: tuple[EncoderEngine, set[int]]) -> None:
    made, _ = bulk
    items = made.tokenize_texts(TEXTS)
    for want, got in zip(
        made.forward_texts(items, "interactive"), made.forward_texts(items, "bulk"), strict=True
    ):
        np.testing.assert_allclose(got, want, atol=1e-5)
    pixels = np.stack([made.preprocess_image(png(c)) for c in ((200, 30, 30), (30, 30, 200))])
    for want, got in zip(
        made.forward_images(pixels, "interactive"),
        made.forward_images(pixels, "bulk"),
        strict=True,
    ):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_the_batchers_bulk_lane_runs_on_the_bulk_sessions(
    bulk: tuple[EncoderEngine, set[int]],
) -> None:
    made, _ = bulk
    runner = made._bulk
    assert runner is not None
    calls: list[str] = []
    original = runner.call

    def counted(run: Any) -> Any:
        calls.append("bulk")
        return original(run)

    runner.call = counted  # type: ignore[method-assign]
    batcher = Batcher(made)
    try:
        searched = batcher.embed_texts(TEXTS, lane="interactive")
        images = [png((200, 30, 30)), png((30, 200, 30))]
        shown = batcher.embed_images(images, lane="interactive")
        assert calls == []  # queries never touch the bulk sessions
        ingested = batcher.embed_texts(TEXTS, lane="bulk")
        stored = batcher.embed_images(images, lane="bulk")
        assert len(calls) >= 1  # the image batches; text batches share the one session
        np.testing.assert_allclose(ingested.joint, searched.joint, atol=1e-5)
        np.testing.assert_allclose(ingested.sentence, searched.sentence, atol=1e-5)
        for got, want in zip(stored, shown, strict=True):
            np.testing.assert_allclose(got, want, atol=1e-5)  # type: ignore[arg-type]
    finally:
        batcher.close()
