"""Shared loading helpers of the ingestion paths: file suffixes, a local image item, batching.

``indexer/entries.py`` (the in-process job runner) and ``indexer/distributed.py`` (the Celery
tasks) both load local items through here; nothing here knows which one is driving it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from service.clients.indexing import Item, clean_text, validate_item
from service.core.config import LimitsSettings
from service.core.errors import invalid, too_large

log = logging.getLogger(__name__)
T = TypeVar("T")

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
CAPTION_SUFFIX = ".txt"
DESCRIPTION_SUFFIX = ".desc.txt"


@dataclass(frozen=True)
class SourceItem:
    """One thing to index, named by where it came from."""

    path: Path

    @property
    def uri(self) -> str:
        return self.path.as_uri()


def _read_text(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        return clean_text(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise invalid(f"{path.name} is not UTF-8 text") from exc


def load_item(source: SourceItem, limits: LimitsSettings) -> Item:
    """Read the image and its optional same-name ``.txt`` caption and ``.desc.txt`` description."""
    size = source.path.stat().st_size
    if size > limits.max_upload_bytes:
        raise too_large(f"{size} bytes; the limit is {limits.max_upload_bytes}")
    stem = source.path.with_suffix("")
    item = Item(
        image=source.path.read_bytes(),
        caption=_read_text(stem.with_suffix(CAPTION_SUFFIX)),
        description=_read_text(Path(f"{stem}{DESCRIPTION_SUFFIX}")),
        source_id=source.uri,
        uri=source.uri,
    )
    validate_item(item, limits)
    return item


def batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
