"""A video's long caption: one multivector of its chunks, shared by every segment (and found by
MaxSim); a caption over limits.max_caption_chars fails the video with the limit named."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from indexer.pipeline.entries import video_entry_points
from indexer.sources.read import SourceEntry
from service.clients.inprocess import InProcessEmbeddingClient
from service.core.bundle.manifest import load_bundle
from service.core.config import Settings
from service.core.domain import Point
from service.core.errors import ClipsearchError, ErrorType
from service.encoder.engine import EncoderEngine
from tests.indexer.pipeline.test_video import make_video
from tests.service.items.test_points import PARAGRAPHS


@pytest.fixture(scope="module")
def embedder(tiny_bundle_dir: Path) -> Iterator[InProcessEmbeddingClient]:
    client = InProcessEmbeddingClient(EncoderEngine(load_bundle(tiny_bundle_dir), Settings()))
    yield client
    client.close()


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("videos") / "shots.mp4"
    make_video(path)
    return path


def segments(
    video: Path, embedder: InProcessEmbeddingClient, tmp_path: Path, caption: str
) -> list[Point]:
    settings = Settings(data_dir=tmp_path)
    entry = SourceEntry(
        str(video), "vid", caption=caption, description="a short film", kind="video"
    )
    points, partial = video_entry_points(entry, embedder, "media", settings)
    assert partial == []
    return points


def test_every_segment_carries_the_whole_caption_as_chunks(
    video: Path, embedder: InProcessEmbeddingClient, tmp_path: Path
):
    caption = " ".join(["A white dot is next to a grey line."] * 60) + "\n\n" + PARAGRAPHS
    points = segments(video, embedder, tmp_path, caption)
    assert len(points) > 1
    first = np.asarray(points[0].vectors["caption"])
    assert first.ndim == 2 and first.shape[0] > 3
    for point in points:
        np.testing.assert_array_equal(point.vectors["caption"], first)
        assert np.ndim(point.vectors["description"]) == 1
        assert point.payload["caption"] == caption


def test_a_caption_over_the_limit_fails_the_video_naming_it(
    video: Path, embedder: InProcessEmbeddingClient, tmp_path: Path
):
    with pytest.raises(ClipsearchError) as err:
        segments(video, embedder, tmp_path, "word " * 2001)
    assert err.value.type is ErrorType.invalid_input
    assert "the limit is 10000 (limits.max_caption_chars)" in err.value.message


def test_segments_of_an_undescribed_video_get_descriptions_from_their_frames(
    video: Path, tiny_labelled_bundle_dir: Path, tmp_path: Path
) -> None:
    """With a bundle that names classes: each segment's description says what its frames show
    (here: the shot's colour), its visual vector pools theirs; a given description wins."""
    engine = EncoderEngine(load_bundle(tiny_labelled_bundle_dir), Settings())
    labelled = InProcessEmbeddingClient(engine)
    try:
        entry = SourceEntry(str(video), "vid", kind="video")
        points, _ = video_entry_points(entry, labelled, "media", Settings(data_dir=tmp_path))
        given = SourceEntry(str(video), "vid", description="a short film", kind="video")
        described, _ = video_entry_points(given, labelled, "media", Settings(data_dir=tmp_path))
    finally:
        labelled.close()
    assert len(points) > 1
    texts = [p.payload["description"] for p in points]
    assert all(t.startswith("A photo of ") and "scene" in t for t in texts)
    assert len(set(texts)) > 1  # the shots differ in colour, so do their descriptions
    for point in points:
        assert point.payload["description_generated"] is True
        assert point.payload["labels"][0]["name"] in point.payload["description"]
        assert {"image", "visual", "description"} <= set(point.vectors)
    assert all(p.payload["description"] == "a short film" for p in described)
    assert not any(p.payload["description_generated"] for p in described)
