"""Lanes: interactive callers overtake bulk ones; a full lane refuses at once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from service.core.config import EncoderSettings, Settings
from service.core.embeddings import TextEmbeddings
from service.core.errors import ClipsearchError, ErrorType
from service.core.manifest import Bundle, load_bundle
from service.encoder.batcher import Batcher, PriorityGate
from service.encoder.engine import EncoderEngine


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    tick = threading.Event()
    for _ in range(int(timeout / 0.005)):
        if predicate():
            return
        tick.wait(0.005)
    raise AssertionError("condition not reached")


class RecordingEngine(EncoderEngine):
    """The real engine, recording the order in which text chunks reach the model."""

    def __init__(self, bundle: Bundle, settings: Settings) -> None:
        super().__init__(bundle, settings)
        self.calls: list[str] = []

    def run_texts(self, texts: Sequence[str]) -> TextEmbeddings:
        self.calls.append(texts[0] if texts else "")
        return super().run_texts(texts)


@pytest.fixture
def engine(tiny_bundle_dir: Path) -> RecordingEngine:
    settings = Settings(encoder=EncoderSettings(max_batch_size=2, max_queue=4))
    return RecordingEngine(load_bundle(tiny_bundle_dir), settings)


def test_gate_serves_interactive_before_bulk() -> None:
    gate = PriorityGate()
    order: list[str] = []

    def take(lane: str) -> None:
        with gate.hold(lane):  # type: ignore[arg-type]
            order.append(lane)

    with gate.hold("bulk"):
        threads = []
        for lane in ("bulk", "bulk", "interactive"):
            thread = threading.Thread(target=take, args=(lane,))
            thread.start()
            threads.append(thread)
            wait_until(lambda: gate.waiting("bulk") + gate.waiting("interactive") == len(threads))
    for thread in threads:
        thread.join(10)
    assert order == ["interactive", "bulk", "bulk"]


def test_batcher_results_equal_the_engine(engine: RecordingEngine) -> None:
    batcher = Batcher(engine)
    texts = ["a red circle", "a blue square", "a green triangle"]  # two chunks of <= 2
    got = batcher.embed_texts(texts, lane="bulk")
    want = engine.embed_texts(texts)
    np.testing.assert_allclose(got.joint, want.joint, atol=1e-6)
    np.testing.assert_allclose(got.sentence, want.sentence, atol=1e-6)
    assert batcher.queue_depth("bulk") == 0
    bad = batcher.embed_images([b"junk"], lane="interactive")
    assert isinstance(bad[0], ClipsearchError)
    with pytest.raises(ClipsearchError, match="unknown lane"):
        batcher.embed_texts(["x"], lane="urgent")  # type: ignore[arg-type]


def test_interactive_overtakes_a_waiting_bulk_request(engine: RecordingEngine) -> None:
    batcher = Batcher(engine)
    results: dict[str, object] = {}

    def call(name: str, texts: list[str], lane: str) -> None:
        results[name] = batcher.embed_texts(texts, lane=lane)  # type: ignore[arg-type]

    gate = batcher._gates["text"]  # hold the tower so that both requests have to queue
    with gate.hold("interactive"):
        bulk = threading.Thread(
            target=call, args=("bulk", ["bulk one", "bulk two", "bulk 3"], "bulk")
        )
        bulk.start()
        wait_until(lambda: gate.waiting("bulk") == 1)
        query = threading.Thread(target=call, args=("query", ["query"], "interactive"))
        query.start()
        wait_until(lambda: gate.waiting("interactive") == 1)
    bulk.join(10)
    query.join(10)
    assert engine.calls == ["query", "bulk one", "bulk 3"]
    assert isinstance(results["bulk"], TextEmbeddings) and results["bulk"].joint.shape == (3, 64)


def test_full_lane_refuses_at_once(engine: RecordingEngine) -> None:
    batcher = Batcher(engine)
    gate = batcher._gates["text"]
    with gate.hold("interactive"):
        waiting = threading.Thread(
            target=batcher.embed_texts, args=(["a", "b", "c"],), kwargs={"lane": "bulk"}
        )
        waiting.start()
        wait_until(lambda: gate.waiting("bulk") == 1)
        assert batcher.queue_depth("bulk") == 3
        with pytest.raises(ClipsearchError) as info:
            batcher.embed_texts(["d", "e"], lane="bulk")
        assert info.value.type is ErrorType.overloaded
        assert info.value.retry_after_s and info.value.retry_after_s > 0
        assert batcher.queue_depth("bulk") == 3
    waiting.join(10)
    assert batcher.queue_depth("bulk") == 0


def test_close_wakes_waiters_with_unavailable(engine: RecordingEngine) -> None:
    batcher = Batcher(engine)
    errors: list[ClipsearchError] = []

    def call() -> None:
        try:
            batcher.embed_texts(["late"], lane="bulk")
        except ClipsearchError as exc:
            errors.append(exc)

    gate = batcher._gates["text"]
    with gate.hold("interactive"):
        thread = threading.Thread(target=call)
        thread.start()
        wait_until(lambda: gate.waiting("bulk") == 1)
        batcher.close()
    thread.join(10)
    assert [e.type for e in errors] == [ErrorType.unavailable]
    with pytest.raises(ClipsearchError, match="shutting down"):
        batcher.embed_images([b""])
