"""What one Celery indexing task does, as plain functions (tested without Celery).

Load each entry, embed the batch on the ``bulk`` lane, append the points to the collection's
points stream; the writer upserts them. The task never touches job progress: items it could not
load or embed travel in the stream entry's ``failed`` field, and the writer counts them together
with the entry's done items, after the write. One counting authority means that done + failed
reaching the total says every item's fate is final and durable, and that a task or an entry
delivered twice counts nothing twice (point ids are deterministic, progress goes through sets).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from indexer.pipeline import SourceItem, load_item
from service.clients.base import EmbeddingClient
from service.clients.indexing import Item, build_points, clean_text, validate_item
from service.clients.stream import PointStream
from service.core.config import Settings
from service.core.domain import Point
from service.core.errors import ClipsearchError, ErrorType, invalid
from service.core.manifest import MANIFEST_NAME, load_bundle

log = logging.getLogger(__name__)

# The shipped bundles, found by path: the indexer may import neither ``models`` nor the CLI.
ZOO_DIR = Path(__file__).resolve().parents[1] / "models" / "zoo"
DEFAULT_ZOO_BUNDLE = "default"


def resolve_bundle_dir(settings: Settings) -> Path:
    """``settings.bundle`` as a folder or a zoo name, else the zoo's default bundle.

    The gateway's ``service.cli.bootstrap.resolve_bundle`` does the same and can also build the
    tiny test bundle; an indexer is always pointed at a real bundle (or at encoder workers).
    """
    names = [settings.bundle] if settings.bundle else [DEFAULT_ZOO_BUNDLE]
    for name in names:
        for candidate in (Path(name).expanduser(), ZOO_DIR / name):
            if (candidate / MANIFEST_NAME).is_file():
                return candidate
    raise ClipsearchError(
        ErrorType.bundle_invalid,
        f"no bundle {names[0]!r}: set CLIPSEARCH_BUNDLE to a bundle folder or zoo name, "
        "or CLIPSEARCH_ENCODER__ENDPOINTS to encoder workers",
    )


def build_embedder(settings: Settings) -> EmbeddingClient:
    """The configured encoder workers over gRPC, else the engine in this process (warmed up)."""
    if not settings.in_process_encoder:
        from service.clients.grpc import GrpcEmbeddingClient

        return GrpcEmbeddingClient(
            settings.encoder.endpoints,
            settings.encoder,
            max_message_mb=settings.worker.max_message_mb,
        )
    from service.clients.inprocess import InProcessEmbeddingClient
    from service.encoder.engine import EncoderEngine

    bundle = load_bundle(resolve_bundle_dir(settings))
    engine = EncoderEngine(bundle, settings)
    engine.warmup()
    log.info("indexer embeds with %s in-process (%s)", bundle.manifest.ref, engine.provider)
    return InProcessEmbeddingClient(engine)


class IndexerResources:
    """One per worker process: the embedder and the stream, built on the first task (a worker
    that never gets one loads no model) and shared by every task after it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._embedder: EmbeddingClient | None = None
        self._stream: PointStream | None = None

    def embedder(self) -> EmbeddingClient:
        with self._lock:
            if self._embedder is None:
                self._embedder = build_embedder(self.settings)
            return self._embedder

    def stream(self) -> PointStream:
        with self._lock:
            if self._stream is None:
                if not self.settings.broker.url:
                    raise invalid("the indexer needs a broker: set CLIPSEARCH_BROKER__URL")
                self._stream = PointStream(self.settings.broker.url, self.settings.broker)
            return self._stream

    def close(self) -> None:
        with self._lock:
            if self._embedder is not None:
                self._embedder.close()
            if self._stream is not None:
                self._stream.close()
            self._embedder = self._stream = None


@dataclass(frozen=True)
class BatchOutcome:
    entry_id: str  # the points-stream entry
    sent: list[str]  # items whose points went to the writer
    failed: list[dict[str, str]]  # {"item", "reason"}


def item_id(entry: object) -> str:
    """The entry's name in job progress: its ``id``, else its ``uri`` (a malformed entry: its
    text, so that it still fails by name instead of failing its whole batch)."""
    if isinstance(entry, Mapping):
        return str(entry.get("id") or entry.get("uri") or "")
    return repr(entry)[:200]


def _local_path(uri: str, settings: Settings) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        raise ClipsearchError(ErrorType.unsupported_media, "URL sources are not supported here")
    if parsed.scheme not in ("", "file"):
        raise invalid(f"unsupported source scheme {parsed.scheme!r}")
    path = Path(unquote(parsed.path) if parsed.scheme == "file" else uri).expanduser().resolve()
    roots = [Path(r).expanduser().resolve() for r in settings.sources.allowed_roots]
    if not roots:
        # Checked here too, not only where the job was submitted: this process reads the files.
        raise ClipsearchError(
            ErrorType.forbidden,
            "this indexer reads no local files: set CLIPSEARCH_SOURCES__ALLOWED_ROOTS",
        )
    if not any(path == root or root in path.parents for root in roots):
        raise ClipsearchError(ErrorType.forbidden, f"{uri!r} is outside the allowed roots")
    return path


def load_entry(entry: Mapping[str, Any], settings: Settings) -> Item:
    """Read one task entry; its ``id``, ``caption``, ``description``, ``metadata`` (when given)
    replace the item's source id and its side-car texts."""
    if not isinstance(entry, Mapping):
        raise invalid("an entry must be an object with a 'uri'")
    uri = entry.get("uri")
    if not isinstance(uri, str) or not uri or "\0" in uri:
        raise invalid("an entry needs a 'uri' string")
    item = load_item(SourceItem(_local_path(uri, settings)), settings.limits)
    changes: dict[str, Any] = {}
    if entry.get("id"):
        changes["source_id"] = str(entry["id"])
    for name in ("caption", "description"):
        if name in entry:
            if entry[name] is not None and not isinstance(entry[name], str):
                raise invalid(f"an entry's {name} must be a string")
            changes[name] = clean_text(entry[name])
    if isinstance(entry.get("metadata"), Mapping):
        changes["metadata"] = dict(entry["metadata"])
    if not changes:
        return item
    item = replace(item, **changes)
    validate_item(item, max_text_chars=settings.limits.max_text_chars)
    return item


def index_batch(
    job_id: str,
    collection: str,
    entries: Sequence[Mapping[str, Any]],
    *,
    embedder: EmbeddingClient,
    stream: PointStream,
    settings: Settings,
) -> BatchOutcome:
    """Load, embed, append one entry to the points stream. A failure of the whole batch (full
    stream, encoder overloaded or down) raises ClipsearchError for the task to retry; an item's
    own failure goes to the writer with the entry. Running it twice yields the same point ids."""
    # Before any work: a full stream means the writer is behind, and embedding now would only
    # have the task wait holding the result.
    stream.wait_for_room(collection, job_id)
    failed: list[dict[str, str]] = []
    loaded: list[tuple[str, Item]] = []
    for entry in entries:
        name = item_id(entry)
        try:
            loaded.append((name, load_entry(entry, settings)))
        except ClipsearchError as exc:
            failed.append({"item": name, "reason": exc.message})
        except OSError as exc:
            failed.append({"item": name, "reason": f"cannot read: {exc.strerror or exc}"})
    results = build_points(embedder, collection, [item for _, item in loaded], lane="bulk")
    sent: list[str] = []
    points: list[Point] = []
    for (name, _), result in zip(loaded, results, strict=True):
        if isinstance(result, ClipsearchError):
            failed.append({"item": name, "reason": result.message})
        else:
            sent.append(name)
            points.append(result)
    entry_id = stream.append(collection, job_id, sent, points, failed=failed)
    log.info(
        "job %s: %d items to the writer, %d failed (entry %s)",
        job_id,
        len(sent),
        len(failed),
        entry_id,
    )
    return BatchOutcome(entry_id, sent, failed)


def report_failed(
    job_id: str,
    collection: str,
    entries: Sequence[Mapping[str, Any]],
    reason: str,
    *,
    stream: PointStream,
) -> None:
    """A task that gave up: its items fail with ``reason``, counted by the writer like any."""
    failed = [{"item": item_id(e), "reason": reason} for e in entries]
    stream.append(collection, job_id, [], [], failed=failed)
