"""Several bundles served by one engine registry: two real tiny bundles of different dimensions
(tiny-test: 64-dim joint space, tiny-narrow: 32), each request embedded by the bundle it names,
bundles added and dropped while another bundle's requests run."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import generate_latest

from service.core.bundle.manifest import Bundle, load_bundle
from service.core.config import Settings
from service.core.errors import ClipsearchError, ErrorType
from service.encoder import registry as registry_module
from service.encoder.engine import EncoderEngine
from service.encoder.registry import BundleRegistry
from tests.service.worker.harness import png_images
from tests.support import wait_until

TINY = "tiny-test@0.1.0"
NARROW = "tiny-narrow@0.1.0"
TEXTS = ["a red circle", "two blue squares on a white background"]


def alone(bundle_dir: Path) -> EncoderEngine:
    """The bundle served by an engine of its own: what every request must equal."""
    return EncoderEngine(load_bundle(bundle_dir), Settings())


@pytest.fixture
def both(tiny_bundle_dir: Path, tiny_narrow_bundle_dir: Path) -> Iterator[BundleRegistry]:
    registry = BundleRegistry(Settings())
    registry.add(EncoderEngine(load_bundle(tiny_bundle_dir), registry.settings))
    registry.add(EncoderEngine(load_bundle(tiny_narrow_bundle_dir), registry.settings))
    registry.warmup()
    yield registry
    registry.close()


def raised(call: object, *args: object, **kwargs: object) -> ClipsearchError:
    with pytest.raises(ClipsearchError) as err:
        call(*args, **kwargs)  # type: ignore[operator]
    return err.value


def test_each_request_is_embedded_by_the_bundle_it_names(
    both: BundleRegistry, tiny_bundle_dir: Path, tiny_narrow_bundle_dir: Path
) -> None:
    images = png_images(3)
    for ref, folder, dim in ((TINY, tiny_bundle_dir, 64), (NARROW, tiny_narrow_bundle_dir, 32)):
        reference = alone(folder)
        batcher = both.get(ref).batcher
        for lane in ("interactive", "bulk"):
            texts = batcher.embed_texts(TEXTS, lane=lane)
            want = reference.embed_texts(TEXTS)
            assert texts.joint.shape == (2, dim)
            np.testing.assert_allclose(texts.joint, want.joint, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(texts.sentence, want.sentence, rtol=1e-5, atol=1e-6)
            got = batcher.embed_images(images, lane=lane)
            for g, w in zip(got, reference.embed_images(images), strict=True):
                assert isinstance(g, np.ndarray) and isinstance(w, np.ndarray)
                assert g.shape == (dim,)
                np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_the_default_answers_requests_that_name_no_bundle(both: BundleRegistry) -> None:
    assert both.get(None).ref == both.get("").ref == TINY == both.refs()[0]
    assert both.info().bundle == TINY and both.info().spaces["image"] == 64
    narrow = both.info(NARROW)
    assert narrow.bundle == NARROW and narrow.spaces["image"] == 32
    listing = both.describe()
    assert [(b.ref, b.default, b.spaces["image"]) for b in listing] == [
        (TINY, True, 64),
        (NARROW, False, 32),
    ]
    assert listing[0].domain is None  # the tiny bundle has no card
    assert listing[1].domain == "test colour layouts (32-dim tiny bundle)"
    assert (listing[1].name, listing[1].version) == ("tiny-narrow", "0.1.0")
    assert narrow.bundles == listing
    both.set_default(NARROW)
    assert both.get(None).ref == NARROW and both.describe()[0].ref == NARROW


def test_an_unknown_bundle_is_not_found_naming_the_bundles_served(both: BundleRegistry) -> None:
    err = raised(both.get, "tiny-test@9.9.9")
    assert err.type is ErrorType.not_found
    assert "tiny-test@9.9.9" in err.message
    assert TINY in err.message and NARROW in err.message
    assert err.detail == {"bundle": "tiny-test@9.9.9", "served": [TINY, NARROW]}
    assert raised(both.get, "tiny-test").type is ErrorType.not_found  # name@version, exactly
    assert raised(both.get, 42).type is ErrorType.invalid_input
    assert raised(both.drop, "nope@1").type is ErrorType.not_found
    assert raised(both.drop, TINY).type is ErrorType.conflict  # the default stays
    assert raised(both.add, both.get(NARROW).engine).type is ErrorType.conflict


def test_metrics_carry_each_bundle_and_a_dropped_bundle_leaves_none(
    both: BundleRegistry,
) -> None:
    for ref in (TINY, NARROW):
        both.get(ref).batcher.embed_texts(TEXTS)
        both.get(ref).batcher.embed_images(png_images(1), lane="bulk")
    text = generate_latest(both.metrics.registry).decode()
    for ref, n in ((TINY, 2.0), (NARROW, 2.0)):
        b = f'bundle="{ref}"'
        assert f'clipsearch_encoder_items_total{{{b},lane="interactive",tower="text"}} {n}' in text
        assert f'clipsearch_encoder_items_total{{{b},lane="bulk",tower="image"}} 1.0' in text
        assert f'clipsearch_encoder_queue_depth{{{b},lane="bulk",tower="image"}} 0.0' in text
        assert f'clipsearch_encoder_healthy{{{b},tower="text"}} 1.0' in text
    engine = weakref.ref(both.get(NARROW).engine)
    both.drop(NARROW)
    gc.collect()
    assert engine() is None  # nothing holds the dropped model (its sessions, device memory)
    text = generate_latest(both.metrics.registry).decode()
    assert f'bundle="{NARROW}"' not in text and f'bundle="{TINY}"' in text
    assert both.refs() == [TINY]
    assert raised(both.get, NARROW).type is ErrorType.not_found
    assert both.health().detail["bundles"] == {TINY: {"ready": True}}


class _SlowEngine(EncoderEngine):
    """A real engine whose warm-up waits for the test: a load that takes as long as it likes."""

    started = threading.Event()
    release = threading.Event()

    def warmup(self) -> None:
        type(self).started.set()
        assert type(self).release.wait(60), "the test never released the load"
        super().warmup()


def test_requests_to_other_bundles_never_wait_on_a_load(
    tiny_bundle_dir: Path, tiny_narrow_bundle_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = BundleRegistry.of(alone(tiny_bundle_dir))
    registry.warmup()
    monkeypatch.setattr(registry_module, "EncoderEngine", _SlowEngine)
    _SlowEngine.started.clear()
    _SlowEngine.release.clear()
    loaded: list[object] = []
    loader = threading.Thread(
        target=lambda: loaded.append(registry.load(load_bundle(tiny_narrow_bundle_dir)))
    )
    loader.start()
    try:
        assert _SlowEngine.started.wait(60)
        # The load is stuck in its warm-up: the default serves, lookups answer, and the new
        # bundle is not visible half-loaded.
        pending = registry.get(TINY).batcher.submit_texts(TEXTS)
        assert pending.result(timeout=30).joint.shape == (2, 64)
        assert registry.refs() == [TINY]
        assert raised(registry.get, NARROW).type is ErrorType.not_found
        assert raised(registry.load, load_bundle(tiny_narrow_bundle_dir)).type is (
            ErrorType.conflict  # the same bundle twice at once
        )
    finally:
        _SlowEngine.release.set()
        loader.join(60)
    assert loaded and registry.refs() == [TINY, NARROW]
    assert registry.get(NARROW).batcher.embed_texts(TEXTS).joint.shape == (2, 32)
    registry.close()


def test_adding_and_dropping_a_bundle_while_another_serves_fails_no_request(
    tiny_bundle_dir: Path, tiny_narrow_bundle_dir: Path
) -> None:
    registry = BundleRegistry.of(alone(tiny_bundle_dir))
    registry.warmup()
    reference = alone(tiny_bundle_dir).embed_texts(TEXTS).joint
    stop = threading.Event()
    errors: list[BaseException] = []
    done = [0, 0]

    def hammer(slot: int, lane: str) -> None:
        images = png_images(2, seed=slot)
        while not stop.is_set():
            try:
                got = registry.get(None).batcher.embed_texts(TEXTS, lane=lane)  # type: ignore[arg-type]
                np.testing.assert_allclose(got.joint, reference, rtol=1e-5, atol=1e-6)
                out = registry.get(TINY).batcher.embed_images(images, lane=lane)  # type: ignore[arg-type]
                assert all(isinstance(v, np.ndarray) and v.shape == (64,) for v in out)
                done[slot] += 1
            except BaseException as exc:  # every failure is the test's finding
                errors.append(exc)
                return

    threads = [
        threading.Thread(target=hammer, args=(0, "interactive")),
        threading.Thread(target=hammer, args=(1, "bulk")),
    ]
    for t in threads:
        t.start()
    try:
        for _ in range(2):  # load, use, drop, and again: the same name comes back cleanly
            before = list(done)
            narrow = registry.load(load_bundle(tiny_narrow_bundle_dir))
            assert narrow.batcher.embed_texts(TEXTS).joint.shape == (2, 32)
            queued = narrow.batcher.submit_images(png_images(4), lane="bulk")
            registry.drop(NARROW, grace_s=30)  # queued work of the dropped bundle finishes
            embedded = queued.result(timeout=30)
            assert all(not isinstance(v, ClipsearchError) for v in embedded)
            assert {v.joint.shape for v in embedded if not isinstance(v, ClipsearchError)} == {
                (32,)
            }
            assert raised(registry.get, NARROW).type is ErrorType.not_found
            wait_until(lambda b=before: done != b or bool(errors))  # the other bundle answers on
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors, errors
    assert all(n > 0 for n in done)
    assert registry.health().ready
    registry.close()


def test_a_bundle_that_fails_to_load_leaves_the_registry_as_it_was(
    tiny_bundle_dir: Path, tiny_narrow_bundle_dir: Path, tmp_path: Path
) -> None:
    registry = BundleRegistry.of(alone(tiny_bundle_dir))
    registry.warmup()
    good = load_bundle(tiny_narrow_bundle_dir)
    broken = Bundle(root=tmp_path, manifest=good.manifest)  # its files are not there
    with pytest.raises(Exception):  # noqa: B017 - onnxruntime's own error for a missing file
        registry.load(broken)
    assert registry.refs() == [TINY]
    registry.load(good)  # the failed attempt reserved nothing
    assert registry.refs() == [TINY, NARROW]
    registry.close()


def _bulk_image_batches(registry: BundleRegistry, ref: str) -> tuple[float, float]:
    """(batches, items) through ``ref``'s image tower on the bulk lane so far."""
    labels = {"bundle": ref, "tower": "image", "lane": "bulk"}
    get = registry.metrics.registry.get_sample_value
    return get("clipsearch_encoder_batch_size_count", labels) or 0.0, get(
        "clipsearch_encoder_batch_size_sum", labels
    ) or 0.0


def test_a_search_on_one_bundle_slices_every_bundles_bulk_batches(
    tiny_bundle_dir: Path, tiny_narrow_bundle_dir: Path
) -> None:
    """Shared scheduling: a rebuild on tiny-narrow runs in large batches while nobody searches,
    and in one-item slices while tiny-test is searched, exactly as behind tiny-test's own."""
    encoder = Settings().encoder.model_copy(
        update={
            "interactive_quiet_s": 120.0,  # the query below counts for the whole test
            "bulk_slice_ms": 0.001,  # a slice holds one item
            "bulk": Settings().encoder.bulk.model_copy(
                update={"max_batch_size": 16, "max_wait_ms": 500.0}
            ),
        }
    )
    registry = BundleRegistry(Settings(encoder=encoder))
    try:
        registry.add(EncoderEngine(load_bundle(tiny_bundle_dir), registry.settings))
        registry.add(EncoderEngine(load_bundle(tiny_narrow_bundle_dir), registry.settings))
        registry.warmup()
        images = png_images(32)
        narrow = registry.get(NARROW).batcher
        assert all(
            not isinstance(r, ClipsearchError) for r in narrow.embed_images(images, lane="bulk")
        )
        quiet_batches, quiet_items = _bulk_image_batches(registry, NARROW)
        assert quiet_items == 32 and quiet_batches <= 8  # batches of 4 or more on average

        registry.get(TINY).batcher.embed_images(images[:1], lane="interactive")  # a search on A
        assert all(
            not isinstance(r, ClipsearchError) for r in narrow.embed_images(images, lane="bulk")
        )
        batches, items = _bulk_image_batches(registry, NARROW)
        assert (batches - quiet_batches, items - quiet_items) == (32, 32)  # one item each
    finally:
        registry.close()
