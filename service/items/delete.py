"""Deleting items: their points, and the keyframe thumbnails of video segments with them; a whole
video's segments in one go.

A segment's point id is ``point_id(collection, video_id, index)`` (``indexer.pipeline.entries``),
so a video's segments are found by id from its segment count, with no vector search: indices run
from 0, and only a segment that could not be read leaves a gap.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path

from service.core.config import VideoSettings
from service.core.domain import Record, point_id
from service.core.errors import not_found
from service.store.base import VectorStore

log = logging.getLogger(__name__)

# A payload's ``thumbnail`` as the indexer writes it (``indexer.pipeline.thumbnails``); anything
# else is never deleted, so no payload can name a file outside the thumbnails folder.
_THUMBNAIL = re.compile(r"^thumbnails/[A-Za-z0-9][A-Za-z0-9_.@-]{0,254}/[A-Za-z0-9_-]{1,128}\.jpg$")
_LOOKUP = 256  # segment ids retrieved per call


def delete_records(
    store: VectorStore, collection: str, data_dir: Path, records: Sequence[Record]
) -> None:
    """Delete the points, then their thumbnails: a failed delete leaves no point whose
    thumbnail is gone; a thumbnail that cannot be removed is only logged."""
    store.delete(collection, [r.id for r in records])
    for record in records:
        relpath = record.payload.get("thumbnail")
        if not isinstance(relpath, str) or not _THUMBNAIL.fullmatch(relpath):
            continue
        try:
            (data_dir / relpath).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not remove the thumbnail %s of %s: %s", relpath, record.id, exc)


def video_segments(
    store: VectorStore,
    collection: str,
    video_id: str,
    video: VideoSettings,
    *,
    version: str | None = None,
) -> list[Record]:
    """Every stored segment of ``video_id`` (in the collection's ``version``, by default the
    one it serves); not_found if it has none."""
    where = version or collection
    expected = store.count(where, {"video_id": video_id})
    if expected == 0:
        raise not_found(f"no video {video_id!r}")
    # The most segments a video the indexer takes can have: fixed segments of segment_s, or
    # shots of at least one sampled frame each.
    longest = video.max_duration_s
    most = max(math.ceil(longest / video.segment_s), math.ceil(longest * video.sample_fps)) + 1
    found: list[Record] = []
    for start in range(0, most, _LOOKUP):
        ids = [point_id(collection, video_id, i) for i in range(start, min(most, start + _LOOKUP))]
        found += [r for r in store.retrieve(where, ids) if r.payload.get("video_id") == video_id]
        if len(found) >= expected:
            break
    if len(found) < expected:
        log.warning("video %s: %d of its %d segments found by id", video_id, len(found), expected)
    return found
