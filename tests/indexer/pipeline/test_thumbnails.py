"""Thumbnail paths under the data dir and their atomic write (``indexer.pipeline.thumbnails``)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from indexer.pipeline.thumbnails import thumbnail_path, write_thumbnail
from service.core.errors import ClipsearchError


def test_a_point_id_makes_a_path_under_its_collection() -> None:
    pid = str(uuid.uuid4())
    assert thumbnail_path("media", pid) == f"thumbnails/media/{pid}.jpg"
    # Anything but letters, digits, _ and - becomes _: the name never leaves its folder.
    assert thumbnail_path("media", "../../etc/passwd") == "thumbnails/media/______etc_passwd.jpg"
    for collection, name in (("media", "../"), ("../media", "a"), (".hidden", "a"), ("a/b", "x")):
        with pytest.raises(ClipsearchError):
            thumbnail_path(collection, name)


def test_write_replaces_atomically_and_leaves_nothing_else(tmp_path: Path) -> None:
    path = thumbnail_path("media", str(uuid.uuid4()))
    target = write_thumbnail(tmp_path, path, b"first")
    assert target == tmp_path / path and target.read_bytes() == b"first"
    write_thumbnail(tmp_path, path, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == [target.name]


@pytest.mark.parametrize(
    "path",
    [
        "thumbnails/../../etc/x.jpg",
        "thumbnails/media/../x.jpg",
        "/etc/x.jpg",
        "elsewhere/media/x.jpg",
        "thumbnails/media/x.png",
        "thumbnails/media/a b.jpg",
        "thumbnails/media/sub/x.jpg",
    ],
)
def test_only_paths_thumbnail_path_makes_are_written(tmp_path: Path, path: str) -> None:
    with pytest.raises(ClipsearchError, match="not a thumbnail path"):
        write_thumbnail(tmp_path / "data", path, b"x")
    assert not any(tmp_path.rglob("*.jpg")) and not (tmp_path / "data").exists()


def test_a_failed_write_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_replace(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_thumbnail(tmp_path, thumbnail_path("media", "abc"), b"x")
    assert list((tmp_path / "thumbnails" / "media").iterdir()) == []
