"""Index source entries (``indexer.sources.read``): images, video segments and text-only documents.

The in-process job runner calls :func:`index_entries` batch by batch (it upserts), a Celery task
:func:`entry_points` (it appends to the points stream); each entry ends as indexed or with its
own reason. An image comes from a local path under the allowed roots or from a URL
(fetched through the SSRF guard); a video becomes one point per segment — its sampled frames
embedded on the bulk lane and mean-pooled into the segment's ``image`` vector, with ``video_id``,
``t_start``, ``t_end`` and a keyframe thumbnail; readable segments of a damaged video are indexed
and the unreadable ranges reported.

Every embedding names its bundle: ``bundles`` (default: the encoder's default) lists those an
entry is embedded with, one point per bundle, as during a model rollout
(``VersionedStore.write_bundles``); the store routes each point to its bundle's version.
"""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np

from indexer.pipeline.thumbnails import thumbnail_path, write_thumbnail
from indexer.pipeline.video import SegmentError, VideoReader, pool_frames, thumbnail_jpeg
from indexer.sources.objects import read_object, scheme_of
from indexer.sources.read import SourceEntry
from service.clients.base import EmbeddingClient
from service.core.config import Settings
from service.core.domain import Kind, Point, VectorValue, point_id
from service.core.embeddings import ImageEmbedding
from service.core.errors import ClipsearchError, invalid, too_large
from service.items.describe import describe, label_summary, merge_labels
from service.items.fetch import Fetcher
from service.items.points import (
    Item,
    build_versioned_points,
    caption_multivectors,
    content_sha256,
    validate_item,
)
from service.store.base import VectorStore

log = logging.getLogger(__name__)


@dataclass
class EntryOutcome:
    """An entry's result: an error (the entry failed), and notes on parts that failed alone
    (a video's unreadable segments) while the rest was indexed; or skipped."""

    item: str
    error: str | None = None
    partial: list[str] = field(default_factory=list)
    skipped: bool = False  # already indexed with the same content (a resumed job)


def local_path(uri: str) -> Path:
    parsed = urlparse(uri)
    return Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(uri)


def _read_local(uri: str, limit: int) -> bytes:
    path = local_path(uri)
    size = path.stat().st_size
    if size > limit:
        raise too_large(f"{size} bytes; the limit is {limit}")
    return path.read_bytes()


def _is_object(entry: SourceEntry) -> bool:
    """Media in an object store (``s3://``), read through fsspec (``indexer.sources.objects``)."""
    return entry.data is None and entry.uri is not None and scheme_of(entry.uri) == "s3"


def load_image_item(entry: SourceEntry, settings: Settings, fetcher: Fetcher) -> Item:
    limits = settings.limits
    data = None
    if entry.data is not None:
        if len(entry.data) > limits.max_upload_bytes:
            raise too_large(f"{len(entry.data)} bytes; the limit is {limits.max_upload_bytes}")
        data = entry.data
    elif entry.uri is not None:
        if entry.is_url:
            data = fetcher.fetch(entry.uri, accept=("image/*",)).data
        elif _is_object(entry):
            data = read_object(entry.uri, settings, limits.max_upload_bytes)
        else:
            data = _read_local(entry.uri, limits.max_upload_bytes)
    item = Item(
        image=data,
        caption=entry.caption,
        description=entry.description,
        source_id=entry.id,
        uri=entry.uri,
        metadata=dict(entry.metadata),
    )
    validate_item(item, limits)
    return item


# Takes a video segment's thumbnail (its path under the data dir, the JPEG): by default it is
# written under this process's data dir; a Celery task collects them for the points stream.
ThumbnailSink = Callable[[str, bytes], object]

# Given (point id, content sha256) of a batch's loaded items, the point ids already stored with
# that same sha256 (``indexer.distributed.lookups``): a resumed job skips them, never re-embedding.
SkipCheck = Callable[[Sequence[tuple[str, str]]], set[str]]


def entry_points(
    entries: Sequence[SourceEntry],
    embedder: EmbeddingClient,
    collection: str,
    settings: Settings,
    fetcher: Fetcher,
    *,
    skip: SkipCheck | None = None,
    thumbnails: ThumbnailSink | None = None,
    bundles: Sequence[str | None] = (None,),
) -> tuple[list[Point], list[EntryOutcome]]:
    """Load and embed (bulk lane) one batch without writing it: its points, and each entry's
    outcome in entry order. Both ingestion paths build points here; each then writes its own
    way (the in-process runner upserts, a Celery task appends to the points stream).

    With ``skip``, items already indexed with the same content are loaded and hashed but not
    embedded (their outcome says ``skipped``). A video is looked up by its first segment's
    point (a video's points are written in one upsert); one given by URL is fetched first and
    looked up alone (videos are fetched one at a time, never a batch of them held at once)."""
    outcomes: dict[int, EntryOutcome] = {}
    loaded: list[tuple[int, Item]] = []
    videos: list[tuple[int, str | None]] = []  # (entry index, content sha256 when local)
    points: list[Point] = _exported_points(entries, embedder, bundles, outcomes)
    for i, entry in enumerate(entries):
        if i in outcomes:
            continue
        try:
            if entry.kind == "video":
                remote = entry.is_url or _is_object(entry) or entry.uri is None
                digest = None if remote else _video_sha256(entry, entry.data)
                videos.append((i, digest))
            else:
                loaded.append((i, load_image_item(entry, settings, fetcher)))
        except ClipsearchError as exc:
            outcomes[i] = EntryOutcome(entry.id, exc.message)
        except OSError as exc:
            outcomes[i] = EntryOutcome(entry.id, f"cannot read: {exc.strerror or exc}")
    if skip is not None:
        keys = {i: (point_id(collection, item.key), item.sha256) for i, item in loaded}
        keys |= {i: (point_id(collection, entries[i].id, 0), d) for i, d in videos if d}
        found = skip(list(keys.values())) if keys else set()
        for i, (pid, _) in keys.items():
            if pid in found:
                outcomes[i] = EntryOutcome(entries[i].id, skipped=True)
        loaded = [(i, item) for i, item in loaded if i not in outcomes]
        videos = [(i, d) for i, d in videos if i not in outcomes]
    for i, digest in videos:
        entry, data = entries[i], entries[i].data
        try:
            if _is_object(entry) and entry.uri is not None:
                data = read_object(entry.uri, settings, settings.video.max_bytes)
                digest = _video_sha256(entry, data)
            elif entry.is_url and entry.uri is not None:
                # Fetched one at a time (a video may be large), hashed once fetched, so that a
                # resumed job skips it too: fetching it again costs less than embedding it.
                limit = settings.video.max_bytes
                data = fetcher.fetch(entry.uri, accept=("video/*",), max_bytes=limit).data
                digest = _video_sha256(entry, data)
        except ClipsearchError as exc:
            outcomes[i] = EntryOutcome(entry.id, exc.message)
            continue
        except OSError as exc:
            outcomes[i] = EntryOutcome(entry.id, f"cannot read: {exc.strerror or exc}")
            continue
        if data is not None and skip is not None and digest is not None:
            first = point_id(collection, entry.id, 0)
            if first in skip([(first, digest)]):  # its own error stops the batch, as above
                outcomes[i] = EntryOutcome(entry.id, skipped=True)
                continue
        try:
            video_points: list[Point] = []
            partial: list[str] = []
            for bundle in dict.fromkeys(bundles):
                made, partial = video_entry_points(
                    entry,
                    embedder,
                    collection,
                    settings,
                    thumbnails=thumbnails,
                    data=data,
                    bundle=bundle,
                )
                video_points += made
        except ClipsearchError as exc:
            outcomes[i] = EntryOutcome(entry.id, exc.message)
            continue
        except OSError as exc:
            outcomes[i] = EntryOutcome(entry.id, f"cannot read: {exc.strerror or exc}")
            continue
        if digest is not None:
            for point in video_points:
                point.payload["sha256"] = digest
        points += video_points
        outcomes[i] = EntryOutcome(entries[i].id, partial=partial)
    results = build_versioned_points(
        embedder, collection, [item for _, item in loaded], lane="bulk", bundles=bundles
    )
    for (i, _), result in zip(loaded, results, strict=True):
        if isinstance(result, ClipsearchError):
            outcomes[i] = EntryOutcome(entries[i].id, result.message)
        else:
            points += result
            outcomes[i] = EntryOutcome(entries[i].id)
    for i, outcome in outcomes.items():  # a dataset entry's error names its shard and key
        where = entries[i].where
        if outcome.error is not None and where and not outcome.error.startswith(where):
            outcome.error = f"{where}: {outcome.error}"
    return points, [outcomes[i] for i in range(len(entries))]


def _exported_points(
    entries: Sequence[SourceEntry],
    embedder: EmbeddingClient,
    bundles: Sequence[str | None],
    outcomes: dict[int, EntryOutcome],
) -> list[Point]:
    """Points of a collection's export (``service.store.export``) whose bundle is the one every
    write embeds with: written as exported, with no encoder call. Another bundle's are embedded
    again like any entry (a video's segments only by ingesting the video itself)."""
    points: list[Point] = []
    refs: set[str] | None = None
    for i, entry in enumerate(entries):
        if entry.ready is None:
            continue
        if refs is None:
            refs = {embedder.info(bundle=b).bundle for b in dict.fromkeys(bundles)}
        exported = entry.ready.get("bundle")
        if refs == {exported}:
            vectors = dict(entry.ready["vectors"])
            points.append(
                Point(id=entry.ready["id"], vectors=vectors, payload=dict(entry.ready["payload"]))
            )
            outcomes[i] = EntryOutcome(entry.id)
        elif entry.kind == "video":
            outcomes[i] = EntryOutcome(
                entry.id,
                f"exported with {exported}, written with {', '.join(sorted(refs))}: a video "
                "segment is embedded again only by ingesting its video",
            )
    return points


def _video_sha256(entry: SourceEntry, data: bytes | None = None) -> str:
    """A video's content hash, as an item's: of ``data`` when it was fetched, else of the local
    file, read in blocks (a video may be far larger than an image)."""
    assert entry.uri is not None
    if data is not None:
        return content_sha256([data], entry.caption, entry.description)
    with local_path(entry.uri).open("rb") as f:
        blocks = iter(functools.partial(f.read, 1 << 20), b"")
        return content_sha256(blocks, entry.caption, entry.description)


def index_entries(
    entries: Sequence[SourceEntry],
    *,
    embedder: EmbeddingClient,
    store: VectorStore,
    collection: str,
    settings: Settings,
    fetcher: Fetcher,
    skip: SkipCheck | None = None,
) -> list[EntryOutcome]:
    """Load, embed (bulk lane) and upsert one batch; each entry's failure is its own. The
    bundles are the store's for the collection (``write_bundles``) where it has them."""
    write_bundles = getattr(store, "write_bundles", None)
    bundles = write_bundles(collection) if write_bundles is not None else [None]
    points, outcomes = entry_points(
        entries, embedder, collection, settings, fetcher, skip=skip, bundles=bundles
    )
    if points:
        store.upsert(collection, points)
    return outcomes


def video_entry_points(
    entry: SourceEntry,
    embedder: EmbeddingClient,
    collection: str,
    settings: Settings,
    *,
    thumbnails: ThumbnailSink | None = None,
    data: bytes | None = None,
    bundle: str | None = None,
) -> tuple[list[Point], list[str]]:
    """One point per readable segment, and a note per unreadable one; each segment's keyframe
    thumbnail goes to ``thumbnails`` (by default, written under ``settings.data_dir``). ``data``
    is the video's bytes, which a URL entry needs (``entry_points`` fetches it: it hashes it
    first); a local entry is read from its path."""
    if entry.uri is None:
        raise invalid("a video entry needs a uri")
    if entry.is_url and data is None:
        raise ValueError(f"{entry.uri}: a URL video is fetched by the caller, not here")
    limits, video = settings.limits, settings.video
    source: bytes | Path = data if data is not None else local_path(entry.uri)
    caption = entry.caption
    if caption is not None and len(caption) > limits.max_caption_chars:
        raise invalid(
            f"caption is {len(caption)} characters; the limit is {limits.max_caption_chars} "
            "(limits.max_caption_chars)"
        )
    texts = _text_vectors(embedder, caption, entry.description, bundle)
    model = embedder.info(bundle=bundle).bundle
    now = datetime.now(UTC).isoformat()
    save: ThumbnailSink = thumbnails or functools.partial(write_thumbnail, settings.data_dir)
    points: list[Point] = []
    partial: list[str] = []
    with VideoReader(
        source, max_duration_s=video.max_duration_s, max_pixels=limits.max_image_pixels
    ) as reader:
        for part in reader.segments(
            segment_s=video.segment_s, sample_fps=video.sample_fps, mode=video.segmenting
        ):
            if isinstance(part, SegmentError):
                where = "" if part.t_start is None else f" at {part.t_start:.1f} s"
                partial.append(f"segment {part.index}{where}: {part.reason}")
                continue
            frames = [_bmp(frame) for frame in part.frames]
            results = embedder.encode_images(frames, lane="bulk", bundle=bundle)
            good = [r for r in results if not isinstance(r, ClipsearchError)]
            if not good:
                partial.append(f"segment {part.index}: no frame could be embedded")
                continue
            pid = point_id(collection, entry.id, part.index)
            thumb = thumbnail_path(collection, pid)
            save(thumb, thumbnail_jpeg(part.keyframe))
            vectors, seen = segment_vectors(embedder, good, texts, entry.description, bundle)
            points.append(
                Point(
                    id=pid,
                    vectors=vectors,
                    payload={
                        "media_id": f"{entry.id}#{part.index}",
                        "kind": Kind.video_segment.value,
                        "uri": entry.uri,
                        "video_id": entry.id,
                        "t_start": round(part.t_start, 3),
                        "t_end": round(part.t_end, 3),
                        "thumbnail": thumb,
                        "caption": caption,
                        "tags": [],
                        "metadata": dict(entry.metadata),
                        "created_at": now,
                        "model": model,
                        **seen,
                    },
                )
            )
    if not points:
        raise invalid("no segment of the video could be read: " + "; ".join(partial[:3]))
    return points, partial


def segment_vectors(
    embedder: EmbeddingClient,
    frames: Sequence[ImageEmbedding],
    texts: dict[str, VectorValue],
    description: str | None,
    bundle: str | None = None,
) -> tuple[dict[str, VectorValue], dict[str, Any]]:
    """A segment's vectors, its frames' pooled (``pool_frames``) beside the video's own texts,
    and its payload's ``description``: the video's; for a video with no caption or description,
    one written from the classes its frames show (where the bundle names classes), embedded for
    this segment alone."""
    vectors: dict[str, VectorValue] = {
        "image": pool_frames(np.stack([f.joint for f in frames])).tolist(),
        **texts,
    }
    visual = [f.visual for f in frames if f.visual is not None]
    if visual:
        vectors["visual"] = pool_frames(np.stack(visual)).tolist()
    payload: dict[str, Any] = {"description": description}
    labels = merge_labels([f.labels for f in frames])
    if labels:
        payload["labels"] = label_summary(labels)
        # Only for a video with no text of its own (as for images: service.items.points).
        generate = description is None and "caption" not in texts
        payload["description_generated"] = generate
        if generate:
            payload["description"] = written = describe(labels)
            emb = embedder.embed_texts([written or ""], lane="bulk", bundle=bundle)
            vectors["description"] = emb.sentence[0].tolist()
    return vectors, payload


def _text_vectors(
    embedder: EmbeddingClient, caption: str | None, description: str | None, bundle: str | None
) -> dict[str, VectorValue]:
    """A video's caption (a multivector of its chunks) and description, embedded once and
    shared by its segments."""
    out: dict[str, VectorValue] = {}
    if caption:
        [rows] = caption_multivectors(embedder, [caption], lane="bulk", bundle=bundle)
        if isinstance(rows, ClipsearchError):
            raise rows
        out["caption"] = rows
    if description:
        emb = embedder.embed_texts([description], lane="bulk", bundle=bundle)
        out["description"] = emb.sentence[0].tolist()
    return out


def _bmp(image: object) -> bytes:
    """Frames cross the EmbeddingClient as encoded images; BMP costs a copy, not a compression
    (PNG would deflate every frame only for the encoder to inflate it again)."""
    buf = io.BytesIO()
    image.save(buf, format="BMP")  # type: ignore[attr-defined]
    return buf.getvalue()
