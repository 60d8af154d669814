"""Synthetic scenes: deterministic, well described, written in the layout ingestion reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.data.scenes import COLOURS, SHAPES, generate_scenes, write_demo_dataset


def test_same_seed_same_scenes_and_prefix_stable() -> None:
    a = generate_scenes(12, seed=7)
    b = generate_scenes(12, seed=7)
    short = generate_scenes(5, seed=7)
    for x, y in zip(a, b, strict=True):
        assert (x.id, x.caption, x.description, x.tags, x.objects) == (
            y.id,
            y.caption,
            y.description,
            y.tags,
            y.objects,
        )
        assert np.array_equal(np.asarray(x.image), np.asarray(y.image))
    assert [s.description for s in short] == [s.description for s in a[:5]]
    assert [s.caption for s in generate_scenes(12, seed=8)] != [s.caption for s in a]


def test_scene_contents() -> None:
    scenes = generate_scenes(40, seed=1234)
    assert [s.id for s in scenes[:3]] == ["scene-0000", "scene-0001", "scene-0002"]
    for scene in scenes:
        assert scene.image.mode == "RGB" and scene.image.size == (128, 128)
        assert 1 <= len(scene.objects) <= 3
        for obj in scene.objects:
            assert obj.shape in SHAPES and obj.colour in COLOURS
            assert f"{obj.colour} {obj.shape}" in scene.caption
            assert f"{obj.colour} {obj.shape}" in scene.description
            assert obj.colour in scene.tags and obj.shape in scene.tags
        assert scene.description.endswith(".")
        assert f"{scene.background} background" in scene.description
    # Phrasing varies across scenes (synonyms and templates), not only the content.
    assert len({s.description.split(":")[0].split()[0] for s in scenes}) > 1


def test_objects_are_drawn_in_their_colour() -> None:
    scene = generate_scenes(1, seed=3)[0]
    pixels = {tuple(p) for p in np.asarray(scene.image).reshape(-1, 3)}
    for obj in scene.objects:
        assert COLOURS[obj.colour] in pixels


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
