"""Deleting items and whole videos on a real Qdrant Edge store: segments found by id across gaps,
thumbnails removed with their points, and never a file a payload names outside the thumbnails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.core.config import VideoSettings
from service.core.domain import Point, point_id
from service.core.errors import ClipsearchError, ErrorType
from service.items.delete import delete_records, video_segments
from service.store.edge import QdrantEdgeStore

COLL = "media"


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[QdrantEdgeStore]:
    opened = QdrantEdgeStore(tmp_path / "store")
    opened.ensure_collection(COLL, {"image": 4, "caption": 4, "description": 4})
    yield opened
    opened.close()


def _segment(video_id: str, index: int, data_dir: Path) -> Point:
    pid = point_id(COLL, video_id, index)
    thumb = f"thumbnails/{COLL}/{pid}.jpg"
    (data_dir / thumb).parent.mkdir(parents=True, exist_ok=True)
    (data_dir / thumb).write_bytes(b"jpeg")
    payload: dict[str, Any] = {"video_id": video_id, "kind": "video_segment", "thumbnail": thumb}
    return Point(id=pid, vectors={"image": [1.0, 0.0, 0.0, index + 1.0]}, payload=payload)


def test_a_videos_segments_are_found_across_gaps_and_deleted_with_thumbnails(
    store: QdrantEdgeStore, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    # Segments 1, 3 and 4 could not be read: indices 0, 2, 5 are stored; another video beside.
    clip = [_segment("file:///v/clip.mp4", i, data) for i in (0, 2, 5)]
    other = [_segment("file:///v/other.mp4", i, data) for i in (0, 1)]
    store.upsert(COLL, clip + other)

    found = video_segments(store, COLL, "file:///v/clip.mp4", VideoSettings())
    assert sorted(r.id for r in found) == sorted(p.id for p in clip)
    delete_records(store, COLL, data, found)
    assert store.count(COLL) == 2
    assert not any((data / p.payload["thumbnail"]).exists() for p in clip)
    assert all((data / p.payload["thumbnail"]).exists() for p in other)

    with pytest.raises(ClipsearchError) as info:
        video_segments(store, COLL, "file:///v/clip.mp4", VideoSettings())
    assert info.value.type is ErrorType.not_found


def test_a_payload_cannot_name_a_file_outside_the_thumbnails(
    store: QdrantEdgeStore, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"keep me")
    (data / "keep.jpg").write_bytes(b"keep me too")
    hostile = ["../secret.jpg", "thumbnails/../../secret.jpg", "keep.jpg", str(secret), 7]
    points = [
        Point(
            id=point_id(COLL, f"item-{n}"),
            vectors={"image": [1.0, 0.0, 0.0, 0.0]},
            payload={"thumbnail": path},
        )
        for n, path in enumerate(hostile)
    ]
    store.upsert(COLL, points)
    records = store.retrieve(COLL, [p.id for p in points])
    delete_records(store, COLL, data, records)
    assert store.count(COLL) == 0
    assert secret.read_bytes() == b"keep me"
    assert (data / "keep.jpg").read_bytes() == b"keep me too"
