"""Ingestion pipeline as plain functions: scan a source, load items, embed them, upsert points.

The in-process job runner (``indexer/local.py``) and the Celery tasks call these same functions;
nothing here knows which one is driving it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from service.clients.base import EmbeddingClient
from service.clients.indexing import Item, build_points, clean_text, validate_item
from service.core.config import LimitsSettings
from service.core.domain import Point
from service.core.errors import ClipsearchError, invalid, too_large
from service.store.base import VectorStore

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class ItemOutcome:
    item: str
    error: str | None = None


def scan_directory(root: Path) -> list[SourceItem]:
    """Image files under ``root`` (recursively, sorted, symlinks leaving ``root`` skipped)."""
    root = root.resolve()
    found: list[SourceItem] = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        real = path.resolve()
        if real != root and root not in real.parents:
            log.warning("skipping %s: it links outside the source root", path)
            continue
        found.append(SourceItem(path=path))
    return found


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
    validate_item(item, max_text_chars=limits.max_text_chars)
    return item


def batched(items: Sequence[SourceItem], size: int) -> Iterator[Sequence[SourceItem]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def index_sources(
    sources: Sequence[SourceItem],
    *,
    embedder: EmbeddingClient,
    store: VectorStore,
    collection: str,
    limits: LimitsSettings,
) -> list[ItemOutcome]:
    """Load, embed (bulk lane) and upsert one batch; each item's failure is its own."""
    outcomes: dict[int, ItemOutcome] = {}
    loaded: list[tuple[int, Item]] = []
    for i, source in enumerate(sources):
        try:
            loaded.append((i, load_item(source, limits)))
        except ClipsearchError as exc:
            outcomes[i] = ItemOutcome(str(source.path), exc.message)
        except OSError as exc:
            outcomes[i] = ItemOutcome(str(source.path), f"cannot read: {exc.strerror or exc}")
    results = build_points(embedder, collection, [item for _, item in loaded], lane="bulk")
    points: list[Point] = []
    for (i, _), result in zip(loaded, results, strict=True):
        if isinstance(result, ClipsearchError):
            outcomes[i] = ItemOutcome(str(sources[i].path), result.message)
        else:
            points.append(result)
            outcomes[i] = ItemOutcome(str(sources[i].path))
    if points:
        store.upsert(collection, points)
    return [outcomes[i] for i in range(len(sources))]
