"""The dynamic batcher on the real tiny bundle and real ONNX Runtime.

The engine is the real one; the subclass below only lets a test hold the core stage (a gate) or
make it fail, the way a wedged or crashed GPU would — the one thing that cannot happen here.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from prometheus_client import generate_latest

from service.core.bundle.manifest import Bundle, load_bundle
from service.core.config import EncoderSettings, LaneSettings, Settings
from service.core.domain import Lane
from service.core.errors import ClipsearchError, ErrorType
from service.encoder.batcher import Batcher
from service.encoder.engine import EncoderEngine, TokenizedText, pad_batch
from tests.support import wait_until


class GatedEngine(EncoderEngine):
    """The real engine; records every core batch and can hold or break the core stage."""

    def __init__(self, bundle: Bundle, settings: Settings) -> None:
        super().__init__(bundle, settings)
        self.text_batches: list[list[int]] = []  # token lengths per batch
        self.image_batches: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Semaphore(0)
        self.broken: BaseException | None = None

    def _core(self) -> None:
        self.entered.release()
        self.gate.wait()
        if self.broken is not None:
            raise self.broken

    def forward_texts(
        self, items: Any, lane: Lane = "interactive"
    ) -> tuple[np.ndarray, np.ndarray]:
        self._core()
        self.text_batches.append([it.length for it in items])
        return super().forward_texts(items, lane)

    def forward_images(self, batch: np.ndarray, lane: Lane = "interactive") -> Any:
        self._core()
        self.image_batches.append(batch.shape[0])
        return super().forward_images(batch, lane)


def png(color: tuple[int, int, int], size: int = 40) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def make(bundle_dir: Path, **encoder: Any) -> tuple[GatedEngine, Batcher]:
    settings = Settings(encoder=EncoderSettings(provider="cpu", **encoder))
    engine = GatedEngine(load_bundle(bundle_dir), settings)
    engine.warmup()
    engine.text_batches.clear()
    engine.image_batches.clear()
    while engine.entered.acquire(blocking=False):
        pass
    return engine, Batcher(engine)


@pytest.fixture
def pair(tiny_bundle_dir: Path) -> Iterator[tuple[GatedEngine, Batcher]]:
    engine, batcher = make(tiny_bundle_dir)
    yield engine, batcher
    engine.gate.set()
    batcher.close()


def hold_core(engine: GatedEngine, start: Callable[[], Any]) -> Any:
    """Close the gate, start one request and wait until the core is inside its forward."""
    engine.gate.clear()
    pending = start()
    assert engine.entered.acquire(timeout=10)
    return pending


TEXTS = ["a red circle", "a blue square on the left", "two green triangles", "a yellow star"]


def test_results_equal_the_engine_in_order(pair: tuple[GatedEngine, Batcher]) -> None:
    engine, batcher = pair
    got = batcher.embed_texts(TEXTS, lane="bulk")
    want = engine.embed_texts(TEXTS)
    np.testing.assert_allclose(got.joint, want.joint, atol=1e-6)
    np.testing.assert_allclose(got.sentence, want.sentence, atol=1e-6)
    assert got.tokens is not None and want.tokens is not None
    assert got.tokens.tolist() == want.tokens.tolist()
    images = [png((200, 30, 30)), png((30, 30, 200))]
    for g, w in zip(batcher.embed_images(images), engine.embed_images(images), strict=True):
        np.testing.assert_allclose(g, w, atol=1e-6)  # type: ignore[arg-type]
    assert batcher.embed_images([]) == []
    assert batcher.queue_depth("bulk") == batcher.queue_depth("interactive") == 0
    with pytest.raises(ClipsearchError, match="unknown lane"):
        batcher.embed_texts(["x"], lane="urgent")  # type: ignore[arg-type]


def test_batches_form_under_concurrency(pair: tuple[GatedEngine, Batcher]) -> None:
    engine, batcher = pair
    first = hold_core(engine, lambda: batcher.submit_texts(["first"]))
    waiting = [batcher.submit_texts([f"query number {i}"]) for i in range(12)]
    engine.gate.set()
    first.result()
    for p in waiting:
        p.result()
    sizes = [len(b) for b in engine.text_batches]
    assert sizes[0] == 1 and max(sizes[1:]) > 1, sizes
    assert sum(sizes) == 13


def test_text_batches_are_padded_to_their_longest_item_within_the_token_budget(
    tiny_bundle_dir: Path,
) -> None:
    engine, batcher = make(tiny_bundle_dir, max_batch_tokens=24)
    try:
        first = hold_core(engine, lambda: batcher.submit_texts(["warm"]))
        short = [batcher.submit_texts(["red"]) for _ in range(4)]
        longer = batcher.submit_texts(["a red circle above a blue square and a green star"])
        engine.gate.set()
        for p in [first, *short, longer]:
            p.result()
        for lengths in engine.text_batches:
            assert len(lengths) == 1 or len(lengths) * max(lengths) <= 24, lengths
        # Short texts went together, not padded to the long one nor to the model maximum.
        assert any(len(b) > 1 and max(b) <= 4 for b in engine.text_batches), engine.text_batches
    finally:
        engine.gate.set()
        batcher.close()


def test_interactive_overtakes_a_bulk_backlog(pair: tuple[GatedEngine, Batcher]) -> None:
    engine, batcher = pair
    finished: list[str] = []
    lock = threading.Lock()

    def note(name: str) -> Callable[[Any], None]:
        def done(_: Any) -> None:
            with lock:
                finished.append(name)

        return done

    running = hold_core(engine, lambda: batcher.submit_texts(["bulk running"], lane="bulk"))
    backlog = [batcher.submit_texts([f"bulk {i} text"] * 8, lane="bulk") for i in range(10)]
    for i, p in enumerate(backlog):
        p.add_done_callback(note(f"bulk-{i}"))
    query = batcher.submit_texts(["a search query"], lane="interactive")
    query.add_done_callback(note("interactive"))
    engine.gate.set()
    query.result()
    for p in [running, *backlog]:
        p.result()
    assert finished[0] == "interactive", finished


def test_a_full_lane_refuses_at_once_with_retry_after(tiny_bundle_dir: Path) -> None:
    engine, batcher = make(tiny_bundle_dir, interactive=LaneSettings(max_queue=3))
    try:
        first = hold_core(engine, lambda: batcher.submit_texts(["one"]))
        queued = batcher.submit_texts(["two", "three"])
        with pytest.raises(ClipsearchError) as info:
            batcher.submit_texts(["four"])
        assert info.value.type is ErrorType.overloaded
        assert info.value.retry_after_s and info.value.retry_after_s > 0
        assert batcher.queue_depth("interactive") == 3
        bulk = batcher.submit_texts(["the bulk lane has its own limit"], lane="bulk")
        engine.gate.set()
        for p in (first, queued, bulk):
            p.result()
        assert batcher.queue_depth("interactive") == 0
        batcher.submit_texts(["four"]).result()  # room again
        assert 'reason="full"' in generate_latest(batcher.metrics.registry).decode()
    finally:
        engine.gate.set()
        batcher.close()


def test_a_corrupt_image_fails_alone(pair: tuple[GatedEngine, Batcher]) -> None:
    engine, batcher = pair
    good = [png((250, 0, 0)), png((0, 250, 0))]
    results = batcher.embed_images([good[0], b"\x89PNG\r\n\x1a\n broken", good[1]])
    assert isinstance(results[1], ClipsearchError)
    assert results[1].type in (ErrorType.invalid_input, ErrorType.unsupported_media)
    want = engine.embed_images(good)
    np.testing.assert_allclose(results[0], want[0], atol=1e-6)  # type: ignore[arg-type]
    np.testing.assert_allclose(results[2], want[1], atol=1e-6)  # type: ignore[arg-type]
    assert sum(engine.image_batches[:1]) == 2  # one batch of the two good images


def test_cancelled_and_expired_items_are_dropped_before_inference(
    pair: tuple[GatedEngine, Batcher],
) -> None:
    engine, batcher = pair
    first = hold_core(engine, lambda: batcher.submit_texts(["first"]))
    cancelled = batcher.submit_texts(["cancel me please now"])  # 5+ tokens: recognisable
    expired = batcher.submit_texts(["late"], deadline=0.0)
    kept = batcher.submit_texts(["kept"])
    cancelled.cancel()
    engine.gate.set()
    first.result()
    kept.result()
    with pytest.raises(ClipsearchError, match="cancelled"):
        cancelled.result()
    with pytest.raises(ClipsearchError) as info:
        expired.result()
    assert info.value.type is ErrorType.timeout
    inferred = sorted(n for b in engine.text_batches for n in b)
    assert len(inferred) == 2  # "first" and "kept" only
    text = generate_latest(batcher.metrics.registry).decode()
    assert 'reason="cancelled"' in text and 'reason="timeout"' in text
    assert batcher.queue_depth("interactive") == 0


def test_a_caller_that_times_out_gets_a_timeout_error(pair: tuple[GatedEngine, Batcher]) -> None:
    engine, batcher = pair
    first = hold_core(engine, lambda: batcher.submit_texts(["first"]))
    with pytest.raises(ClipsearchError) as info:
        batcher.embed_texts(["waits too long"], timeout_s=0.05)
    assert info.value.type is ErrorType.timeout
    engine.gate.set()
    first.result()


def test_a_failing_session_flips_readiness_until_it_works_again(tiny_bundle_dir: Path) -> None:
    engine, batcher = make(tiny_bundle_dir, probe_interval_s=0.05, hang_timeout_s=0.4)
    try:
        assert batcher.health().ready
        engine.broken = RuntimeError("CUDA error: an illegal memory access was encountered")
        with pytest.raises(ClipsearchError) as info:
            batcher.embed_texts(["a", "b"])
        assert info.value.type is ErrorType.internal
        health = batcher.health()
        assert not health.ready and "illegal memory access" in (health.reason or "")
        assert "clipsearch_encoder_healthy" in generate_latest(batcher.metrics.registry).decode()
        engine.broken = None  # the device recovers: the watchdog's probe notices
        wait_until(lambda: batcher.health().ready)
    finally:
        batcher.close()


def test_a_hung_core_stage_flips_readiness(tiny_bundle_dir: Path) -> None:
    engine, batcher = make(tiny_bundle_dir, hang_timeout_s=0.2)
    try:
        stuck = hold_core(engine, lambda: batcher.submit_texts(["stuck"]))
        wait_until(lambda: not batcher.health().ready)
        assert "stuck" in (batcher.health().reason or "")
        engine.gate.set()
        stuck.result()
        wait_until(lambda: batcher.health().ready)
    finally:
        engine.gate.set()
        batcher.close()


def test_a_crashed_core_loop_is_visible_and_fails_waiting_callers(tiny_bundle_dir: Path) -> None:
    engine, batcher = make(tiny_bundle_dir)
    try:
        running = hold_core(engine, lambda: batcher.submit_images([png((1, 2, 3))]))
        waiting = batcher.submit_images([png((4, 5, 6))])
        engine.broken = SystemExit("the loop itself died")
        engine.gate.set()
        for p in (running, waiting):
            with pytest.raises(ClipsearchError):
                p.result(timeout=10)
        health = batcher.health()
        assert not health.ready and "crashed" in (health.reason or "")
        with pytest.raises(ClipsearchError, match="down"):
            batcher.submit_images([png((7, 8, 9))])
        assert batcher.health().ready is False
        engine.broken = None
        assert batcher.embed_texts(["the text tower still works"]).joint.shape[0] == 1
    finally:
        batcher.close()


def test_bulk_batches_are_sliced_while_search_traffic_is_about(
    pair: tuple[GatedEngine, Batcher],
) -> None:
    _, batcher = pair
    image = batcher.towers["image"]
    now = 1000.0
    assert image._cost_cap("bulk", now) == 64  # no search traffic: as large as allowed
    image._traffic.note("image", now - 0.1)
    assert image._cost_cap("bulk", now) == 1.0  # nothing learned yet: one item
    image._rate, image._single_s = 2000.0, 0.004  # images/s; a query's own inference time
    assert image._cost_cap("bulk", now) == pytest.approx(2000.0 * 0.002)  # half of it
    assert image._cost_cap("interactive", now) == 32
    image.settings = image.settings.model_copy(update={"bulk_slice_ms": 8.0})
    assert image._cost_cap("bulk", now) == pytest.approx(16.0)
    text = batcher.towers["text"]
    text._traffic.note("text", now)
    text._rate, text._single_s = 1e9, 0.001
    assert text._cost_cap("bulk", now) == batcher.settings.max_batch_tokens  # token budget


def test_metrics_report_queue_batches_stages_and_provider(
    pair: tuple[GatedEngine, Batcher],
) -> None:
    _, batcher = pair
    batcher.embed_texts(TEXTS)
    batcher.embed_images([png((9, 9, 9))], lane="bulk")
    text = generate_latest(batcher.metrics.registry).decode()
    b = 'bundle="tiny-test@0.1.0"'  # every series names its bundle
    for needle in (
        f'clipsearch_encoder_queue_depth{{{b},lane="bulk",tower="image"}}',
        f'clipsearch_encoder_batch_size_count{{{b},lane="interactive",tower="text"}}',
        f'clipsearch_encoder_stage_seconds_count{{{b},lane="bulk",stage="preprocess",tower="image"}}',
        'stage="inference"',
        'stage="postprocess"',
        'stage="queue"',
        f'clipsearch_encoder_provider_info{{{b},provider="CPUExecutionProvider",tower="image"}}',
        f'clipsearch_encoder_items_total{{{b},lane="interactive",tower="text"}} 4.0',
        f'clipsearch_encoder_items_per_second{{{b},tower="text"}}',
        f'clipsearch_encoder_healthy{{{b},tower="image"}} 1.0',
    ):
        assert needle in text, needle


def test_tokenized_texts_are_unpadded(pair: tuple[GatedEngine, Batcher]) -> None:
    engine, _ = pair
    items = engine.tokenize_texts(["red", "a red circle above a square"])
    assert all(isinstance(it, TokenizedText) for it in items)
    assert items[0].length < items[1].length
    ids, mask = pad_batch([it.ids for it in items], 0)
    assert ids.shape == (2, items[1].length) and mask.sum() == items[0].length + items[1].length


@pytest.mark.parametrize("lane", ["interactive", "bulk"])
def test_an_unreadable_text_fails_its_request_with_its_index(
    pair: tuple[GatedEngine, Batcher], lane: str
) -> None:
    _, batcher = pair
    with pytest.raises(ClipsearchError, match="text 1 contains no tokens") as info:
        batcher.embed_texts(["a red circle", "\u200b"], lane=lane)  # type: ignore[arg-type]
    assert info.value.type is ErrorType.invalid_input
    assert batcher.embed_texts(["still fine"], lane=lane).joint.shape[0] == 1  # type: ignore[arg-type]
    wait_until(lambda: batcher.queue_depth(lane) == 0)  # type: ignore[arg-type]
