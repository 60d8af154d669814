"""Synthetic scenes: deterministic, split without leaks, rendered fast and in the layout ingestion
reads. Their texts are checked in test_scenes_texts.py."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models.data.scenes import (
    BACKGROUNDS,
    CAPTION_KINDS,
    COLOURS,
    HELD_OUT_COMBOS,
    NEGATIVE_KINDS,
    SHAPES,
    SIZES,
    SPLITS,
    TEXTURES,
    Scene,
    generate_scenes,
    generate_split,
    write_demo_dataset,
)


def _texts(scene: Scene) -> tuple[object, ...]:
    return (scene.id, scene.captions, scene.description, scene.negatives, scene.tags, scene.objects)


def _signature(scene: Scene) -> tuple[object, ...]:
    return (scene.objects, scene.background)


def test_vocabulary_is_rich_enough() -> None:
    assert len(SHAPES) >= 5 and len(COLOURS) >= 7 and SIZES == ("small", "medium", "large")
    assert {"solid", "striped", "dotted", "outlined"} <= set(TEXTURES)
    assert {b.kind for b in BACKGROUNDS.values()} == {"plain", "noisy", "gradient"}
    assert 4 <= len(HELD_OUT_COMBOS) <= 6
    assert all(c in COLOURS and s in SHAPES for c, s in HELD_OUT_COMBOS)
    # Every colour and shape of a held-out pair is still seen in train, with other partners.
    train_pairs = {(o.colour, o.shape) for s in generate_split("train", 400) for o in s.objects}
    assert {c for c, _ in HELD_OUT_COMBOS} <= {c for c, _ in train_pairs}
    assert {s for _, s in HELD_OUT_COMBOS} <= {s for _, s in train_pairs}


@pytest.mark.parametrize("split", SPLITS)
def test_split_is_deterministic_and_prefix_stable(split: str) -> None:
    a = generate_split(split, 12)
    b = generate_split(split, 12)
    assert [_texts(x) for x in a] == [_texts(y) for y in b]
    assert [_texts(x) for x in generate_split(split, 5)] == [_texts(x) for x in a[:5]]
    # Scene i depends only on (split, i): an offset window gives the same scenes.
    assert [_texts(x) for x in generate_split(split, 4, offset=8)] == [_texts(x) for x in a[8:]]
    assert [s.id for s in a[:2]] == [f"{split}-000000", f"{split}-000001"]
    assert {s.split for s in a} == {split}
    for x, y in zip(a[:4], b[:4], strict=True):
        assert x.render(64).tobytes() == y.render(64).tobytes()
        assert x.image.tobytes() == y.render(128).tobytes()


def test_demo_scenes_are_deterministic_and_prefix_stable() -> None:
    a = generate_scenes(12, seed=7)
    b = generate_scenes(12, seed=7)
    assert [_texts(x) for x in a] == [_texts(y) for y in b]
    assert [_texts(x) for x in generate_scenes(5, seed=7)] == [_texts(x) for x in a[:5]]
    assert [s.caption for s in generate_scenes(12, seed=8)] != [s.caption for s in a]
    assert [s.id for s in a[:3]] == ["scene-0000", "scene-0001", "scene-0002"]
    assert {s.split for s in a} == {"demo"}
    assert all(1 <= len(s.objects) <= 3 for s in a)
    assert np.array_equal(np.asarray(a[3].image), np.asarray(b[3].image))


def test_splits_are_disjoint() -> None:
    seen: dict[tuple[object, ...], str] = {}
    for split in SPLITS:
        for scene in generate_split(split, 1500):
            other = seen.setdefault(_signature(scene), split)
            assert other == split, f"{scene.id} also appears in {other}"
    assert len(seen) == 3 * 1500


def test_held_out_combos_never_in_train_and_often_in_test() -> None:
    for scene in generate_split("train", 3000):
        assert not scene.held_out
        assert not any((o.colour, o.shape) in HELD_OUT_COMBOS for o in scene.objects)
    test = generate_split("test", 1000)
    for scene in test:
        assert scene.held_out == any((o.colour, o.shape) in HELD_OUT_COMBOS for o in scene.objects)
    assert sum(s.held_out for s in test) >= 0.1 * len(test)
    seen = {(o.colour, o.shape) for s in test for o in s.objects}
    assert seen >= HELD_OUT_COMBOS  # every held-out pair is tested


def test_scene_contents_cover_the_spec() -> None:
    scenes = generate_split("train", 600)
    counts = {len(s.objects) for s in scenes}
    assert counts == {1, 2, 3, 4, 5, 6}
    assert {o.texture for s in scenes for o in s.objects} == set(TEXTURES)
    assert {s.background for s in scenes} == set(BACKGROUNDS)
    assert 0.1 < np.mean([s.noise > 0 for s in scenes]) < 0.5
    assert 0.05 < np.mean([s.blur > 0 for s in scenes]) < 0.5
    for scene in scenes:
        names = [o.name for o in scene.objects]
        assert len(set(names)) == len(names)  # (colour, shape) is unique within a scene
        assert set(scene.captions) == set(CAPTION_KINDS)
        assert set(scene.negatives) == set(NEGATIVE_KINDS)
        for obj in scene.objects:
            assert obj.radius < obj.x < 1 - obj.radius
            assert obj.radius < obj.y < 1 - obj.radius
            assert {obj.colour, obj.shape, obj.texture} <= set(scene.tags)
    # Some objects overlap a little (partial occlusion) ...
    overlapping = 0
    for scene in scenes:
        objs = scene.objects
        for i, a in enumerate(objs):
            for b in objs[i + 1 :]:
                gap = float(np.hypot(a.x - b.x, a.y - b.y))
                overlapping += gap < a.radius + b.radius
                # ... but never so much that one hides the other's centre.
                assert gap > max(a.radius, b.radius)
    assert overlapping > 0


@pytest.mark.parametrize("size", [32, 64, 128, 224])
def test_render_sizes_and_visible_colours(size: int) -> None:
    for scene in generate_split("val", 30):
        image = scene.render(size)
        assert image.mode == "RGB" and image.size == (size, size)
        if scene.noise or scene.blur or size < 64:
            continue
        pixels = {tuple(p) for p in np.asarray(image).reshape(-1, 3)}
        for obj in scene.objects:
            assert COLOURS[obj.colour] in pixels, (scene.id, obj)


def test_noise_and_blur_change_pixels_deterministically() -> None:
    scene = next(s for s in generate_split("train", 200) if s.noise > 0)
    clean = replace(scene, noise=0.0, blur=0.0)
    assert scene.render(64).tobytes() != clean.render(64).tobytes()
    assert scene.render(64).tobytes() == scene.render(64).tobytes()


def test_count_captions_have_exactly_one_true_count() -> None:
    for scene in generate_split("test", 50):
        pairs = scene.count_captions()
        assert [n for n, _ in pairs] == [1, 2, 3, 4, 5, 6]
        assert sum(n == len(scene.objects) for n, _ in pairs) == 1
        # One template: the captions differ in the number word only.
        words = [text.split() for _, text in pairs]
        assert all(len(w) == len(words[0]) for w in words)
        assert all(sum(a != b for a, b in zip(w, words[0], strict=True)) <= 1 for w in words)


def test_v1_accessors() -> None:
    scene = generate_scenes(1, seed=3)[0]
    assert scene.caption == scene.captions["short"][0]
    assert scene.image.size == (128, 128)


def test_write_demo_dataset_layout_and_idempotence(tmp_path: Path) -> None:
    paths = write_demo_dataset(tmp_path / "demo", n=6, seed=5)
    assert [p.name for p in paths] == [f"scene-{i:04d}.png" for i in range(6)]
    names = sorted(p.name for p in (tmp_path / "demo").iterdir())
    assert len(names) == 18
    scene = generate_scenes(6, seed=5)[2]
    assert (tmp_path / "demo" / "scene-0002.txt").read_text() == scene.caption + "\n"
    assert (tmp_path / "demo" / "scene-0002.desc.txt").read_text() == scene.description + "\n"
    before = {n: (tmp_path / "demo" / n).read_bytes() for n in names}
    write_demo_dataset(tmp_path / "demo", n=6, seed=5)
    write_demo_dataset(tmp_path / "other", n=6, seed=5)
    assert before == {n: (tmp_path / "demo" / n).read_bytes() for n in names}
    assert before == {n: (tmp_path / "other" / n).read_bytes() for n in names}


def test_default_demo_set_holds_red_circles_named_literally() -> None:
    # The demo end-to-end test searches "a red circle" over the first 40 default demo scenes.
    scenes = generate_scenes(60, seed=1234)
    red_circles = [s for s in scenes[:40] if any(o.name == "red circle" for o in s.objects)]
    assert len(red_circles) >= 2
    for scene in scenes:
        has = any(o.name == "red circle" for o in scene.objects)
        assert ("red circle" in scene.description) == has
        assert ("red circle" in scene.caption) == has
