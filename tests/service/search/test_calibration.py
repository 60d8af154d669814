"""The null a fused search standardises each channel by: measured per bundle on the probe set,
from pairs of different probes (unrelated query-item pairs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.search.calibration import PROBE_TEXTS, measure_null, null_scales, probe_images
from service.search.fusion import MIN_SPREAD


@pytest.fixture(scope="module")
def embedder(tiny_bundle_dir: Path) -> Iterator[Any]:
    from service.clients.inprocess import InProcessEmbeddingClient
    from service.core.bundle.manifest import load_bundle
    from service.core.config import Settings
    from service.encoder.engine import EncoderEngine

    client = InProcessEmbeddingClient(EncoderEngine(load_bundle(tiny_bundle_dir), Settings()))
    yield client
    client.close()


def test_the_null_is_the_mean_and_spread_of_pairs_of_different_probes() -> None:
    rng = np.random.default_rng(0)
    texts, sentences, images = (rng.standard_normal((6, 5)) for _ in range(3))
    null = null_scales(texts, sentences, images, None)

    def unit(m: np.ndarray) -> np.ndarray:
        return m / np.linalg.norm(m, axis=1, keepdims=True)

    others = ~np.eye(6, dtype=bool)
    caption = (unit(texts) @ unit(texts).T)[others]  # never a text against itself
    assert null.text_text.mean == pytest.approx(caption.mean())
    assert null.text_text.spread == pytest.approx(caption.std())
    text_image = unit(texts) @ unit(images).T
    assert null.text_image is not None and null.text_image.mean == pytest.approx(text_image.mean())
    assert null.image_image is not None
    assert null.image_image.mean == pytest.approx((unit(images) @ unit(images).T)[others].mean())
    assert null.sentence.mean == pytest.approx((unit(sentences) @ unit(sentences).T)[others].mean())
    assert null.visual is None  # no visual features given
    same = null_scales(np.ones((4, 3)), np.ones((4, 3)), None, None)
    assert same.text_text.spread == MIN_SPREAD  # identical probes: the floor, not a 0 spread
    assert same.text_image is None and set(same.channels("text")) == {"caption", "description"}


def test_each_channel_takes_the_null_of_what_its_query_compares() -> None:
    """A text query's image channel compares a text with pictures; an image query's compares
    pictures, and its caption channel a picture with texts; an item compares like with like."""
    rng = np.random.default_rng(1)
    null = null_scales(*(rng.standard_normal((5, 4)) for _ in range(4)))
    assert null.channels("text") == {
        "image": null.text_image,
        "caption": null.text_text,
        "description": null.sentence,
        "visual": null.visual,
    }
    image = null.channels("image")
    assert (image["image"], image["caption"], image["visual"]) == (
        null.image_image,
        null.text_image,
        null.visual,
    )
    item = null.channels("item")
    assert (item["image"], item["caption"]) == (null.image_image, null.text_text)


def test_the_probe_set_is_fixed() -> None:
    assert probe_images() == probe_images()  # seeded: the same pictures every time
    assert len(probe_images()) == 48 and len(set(PROBE_TEXTS)) == len(PROBE_TEXTS) == 48


def test_a_bundles_null_is_measured_for_every_channel_it_serves(embedder: Any) -> None:
    null = measure_null(embedder)
    for kind in ("text", "image", "item"):
        assert {"image", "caption", "description"} <= set(null.channels(kind))  # type: ignore[arg-type]
        for scale in null.channels(kind).values():  # type: ignore[arg-type]
            assert -1.0 < scale.mean < 1.0 and MIN_SPREAD <= scale.spread < 1.0
    # a probe text against itself is a perfect match: many spreads above its null
    emb = embedder.embed_texts([PROBE_TEXTS[0]])
    joint = np.asarray(emb.joint[0])
    assert null.text_text.standardise(float(joint @ joint)) > 2.0
    assert measure_null(embedder) == null  # the same probes, the same null


def test_concurrent_first_searches_measure_the_null_once(
    embedder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight first searches at once (one per collection's service, sharing one cache) measure
    the bundle's null once and all get it: before, each measured, putting the probe set on the
    interactive queue eight times over, which filled it (429s on a fresh gateway)."""
    import threading

    from service.search import planner

    calls: list[str | None] = []
    real = planner.measure_null

    def counted(client: Any, *, bundle: str | None = None) -> Any:
        calls.append(bundle)
        return real(client, bundle=bundle)

    monkeypatch.setattr(planner, "measure_null", counted)
    nulls = planner.NullCache()
    services = [
        planner.SearchService(embedder, store=None, collection=f"c{i}", nulls=nulls)  # type: ignore[arg-type]
        for i in range(8)
    ]
    start = threading.Barrier(len(services))
    got: list[Any] = []

    def first(service: planner.SearchService) -> None:
        start.wait()
        got.append(service.null_scales())

    threads = [threading.Thread(target=first, args=(s,)) for s in services]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert calls == [None]
    assert len(got) == 8 and all(g == got[0] for g in got)
