"""Zero-downtime reindex: build a collection's next version, then swap the alias.

The gateway runs reindexes on a thread of its own (``POST /v1/admin/reindex``), in both job
modes; the heavy part is embedding on the encoder's ``bulk`` lane, wherever the encoder runs.

1. ``VersionedStore.begin`` creates ``<name>__<bundle>__<n+1>`` and the ``<name>.next`` alias:
   from then on (after twice the alias cache time) every write to ``<name>`` also goes there.
2. Rebuild: the current version is read page by page, and every point is made again from its
   stored source — the ``uri`` of an image or video (a local path under the allowed roots, or a
   URL through the fetch guard) or the caption and description of a text document — through the
   same ``index_entries`` the ingestion jobs use, so a reindex applies today's pipeline (video
   segmenting, caption chunking, the vector layout). Point ids do not change; ``tags`` and
   ``created_at`` carry over.
3. Reconcile: whatever the rebuild could not remake (an image posted inline, whose bytes were
   never stored; a source gone since) is copied with its vectors, which the same bundle made,
   and named in ``notes``. Segments of a video that was rebuilt are not copied: the rebuild
   decided its segments.
4. ``swap``: one atomic alias update makes the new version current and keeps the old one as
   ``<name>.previous`` for ``rollback``.

A failure or a cancel drops the new version and leaves the current one as it was; a reindex
running when the gateway died is marked ``interrupted`` on restart and its version dropped.
Only the bundle this gateway embeds with can build a version: the query side must embed with
the model that built the vectors it searches.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, cast

from indexer.jobs.records import RecordFiles, now_iso
from indexer.pipeline.entries import index_entries, local_path
from indexer.sources.fetch import Fetcher
from indexer.sources.read import SourceEntry
from indexer.sources.roots import allowed_roots, under_roots
from service.clients.base import EmbeddingClient
from service.core.config import Settings
from service.core.domain import FilterValue, Kind, Point, Record, collection_dims
from service.core.errors import ClipsearchError, ErrorType, invalid, not_found
from service.store.base import VectorStore
from service.store.versions import NEXT, VersionedStore

log = logging.getLogger(__name__)

PAGE = 64
MAX_NOTES_KEPT = 1000
_KEPT_FIELDS = ("tags", "created_at")


class InProcessReindexer:
    """Reindexes one at a time on a thread; records under ``<data_dir>/reindex``."""

    def __init__(
        self, *, settings: Settings, embedder: EmbeddingClient, store: VersionedStore
    ) -> None:
        self._settings = settings
        self._embedder = embedder
        self._store = store
        self._files = RecordFiles(settings.data_dir / "reindex", "reindex")
        self._lock = threading.Lock()
        self._records: dict[str, dict[str, Any]] = {}
        self._cancelled: set[str] = set()
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._load_existing()

    # -- Reindexer protocol ------------------------------------------------------------------
    def start(self, collection: str, bundle: str | None = None) -> dict[str, Any]:
        info = self._embedder.info()
        if bundle is not None and bundle not in (info.bundle, info.bundle.split("@", 1)[0]):
            raise invalid(
                f"this gateway embeds with {info.bundle}; a version built with {bundle!r} "
                "could not be searched by it. Serve that bundle (CLIPSEARCH_BUNDLE, on the "
                "gateway and its encoder workers) and reindex from there",
            )
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                running = next(r for r in self._records.values() if r["state"] == "running")
                raise ClipsearchError(
                    ErrorType.conflict,
                    f"reindex {running['id']} of {running['collection']!r} is still running",
                )
            source = self._store.aliases(fresh=True).get(collection)
            dims = collection_dims(info.spaces)
            target = self._store.begin(collection, dims, info.bundle)
            now = now_iso()
            record: dict[str, Any] = {
                "id": uuid.uuid4().hex,
                "kind": "reindex",
                "collection": collection,
                "bundle": info.bundle,
                "source": source,
                "target": target,
                "state": "running",
                "total": 0,
                "done": 0,
                "rebuilt": 0,
                "copied": 0,
                "notes": [],
                "rate_per_s": None,
                "eta_s": None,
                "created_at": now,
                "updated_at": now,
            }
            self._records[record["id"]] = record
            self._persist(record)
            self._thread = threading.Thread(
                target=self._run, args=(record["id"],), name="reindex", daemon=True
            )
            self._thread.start()
        log.info("reindex %s: %s -> %s", record["id"], source, target)
        return self.status(record["id"])

    def status(self, reindex_id: str) -> dict[str, Any]:
        with self._lock:
            record = self._records.get(reindex_id)
            if record is None:
                raise not_found(f"no reindex {reindex_id!r}")
            return json.loads(json.dumps(record))

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            records = sorted(self._records.values(), key=lambda r: r["created_at"], reverse=True)
            return json.loads(json.dumps(records))

    def cancel(self, reindex_id: str) -> dict[str, Any]:
        record = self.status(reindex_id)
        if record["state"] != "running":
            raise ClipsearchError(
                ErrorType.conflict, f"reindex {reindex_id} is {record['state']}; nothing to cancel"
            )
        self._cancelled.add(reindex_id)
        thread = self._thread
        if thread is not None:
            thread.join(timeout=60)
        return self.status(reindex_id)

    def rollback(self, collection: str) -> dict[str, Any]:
        current, previous = self._store.rollback(collection)
        return {"collection": collection, "from": current, "to": previous}

    def ready(self) -> bool:
        return True

    def close(self) -> None:
        self._closing.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=30)

    # -- the run -----------------------------------------------------------------------------
    def _run(self, reindex_id: str) -> None:
        record = self.status(reindex_id)
        collection, source, target = record["collection"], record["source"], record["target"]
        try:
            # Writers cache the alias list for up to alias_ttl_s: after twice that, all of them
            # dual-write, so reading the current version from here on misses nothing.
            time.sleep(2 * self._store.alias_ttl_s)
            build = _Build(self, reindex_id, source, target, collection)
            build.rebuild()
            build.reconcile()
            if self._stopping(reindex_id):
                raise _Stopped
            self._store.swap(collection)
            self._update(
                reindex_id,
                state="completed",
                finished_at=now_iso(),
                points=self._store.count(target),
                eta_s=0.0,
            )
            log.info("reindex %s completed: %s is now %s", reindex_id, collection, target)
        except _Stopped:
            self._store.abort(collection)
            state = "cancelled" if reindex_id in self._cancelled else "interrupted"
            self._update(reindex_id, state=state, finished_at=now_iso())
            log.info("reindex %s %s; %s still serves %s", reindex_id, state, source, collection)
        except Exception as exc:
            log.exception("reindex %s failed", reindex_id)
            try:
                self._store.abort(collection)
            finally:
                self._update(reindex_id, state="failed", error=str(exc), finished_at=now_iso())

    def _stopping(self, reindex_id: str) -> bool:
        return reindex_id in self._cancelled or self._closing.is_set()

    def _update(self, reindex_id: str, **fields: Any) -> None:
        with self._lock:
            record = self._records[reindex_id]
            record.update(fields, updated_at=now_iso())
            self._persist(record)

    def _note(self, reindex_id: str, notes: Sequence[dict[str, str]]) -> None:
        with self._lock:
            kept = self._records[reindex_id]["notes"]
            kept.extend(notes[: max(0, MAX_NOTES_KEPT - len(kept))])

    def _persist(self, record: dict[str, Any]) -> None:
        self._files.write(record)

    def _load_existing(self) -> None:
        aliases = self._store.aliases(fresh=True)
        for record in self._files.load_all():
            if record.get("state") == "running":
                record["state"] = "interrupted"
                record["updated_at"] = now_iso()
                if aliases.get(record["collection"] + NEXT) == record["target"]:
                    self._store.abort(record["collection"])  # the half-built version
                self._persist(record)
            self._records[record["id"]] = record


class _Stopped(Exception):
    pass


class _Build:
    """One reindex's passes over the current version."""

    def __init__(
        self, owner: InProcessReindexer, reindex_id: str, source: str, target: str, name: str
    ) -> None:
        self.owner = owner
        self.id = reindex_id
        self.source = source
        self.target = target
        self.name = name
        self.store = owner._store
        self.settings = owner._settings
        self.roots = allowed_roots(self.settings)  # resolved once: _readable runs per point
        self.rebuilt_videos: set[str] = set()
        self.total = self.store.count(source)
        self.done = 0
        self.rebuilt = 0
        self.started = time.monotonic()
        owner._update(reindex_id, total=self.total)

    def pages(self, collection: str, *, with_vectors: bool = False) -> Any:
        offset: str | None = None
        while True:
            if self.owner._stopping(self.id):
                raise _Stopped
            records, offset = self.store.scroll(
                collection, limit=PAGE, offset=offset, with_vectors=with_vectors
            )
            if records:
                yield records
            if offset is None:
                return

    def rebuild(self) -> None:
        into = _Into(self.store, self.target, self.source)
        seen_videos: set[str] = set()
        with Fetcher(self.settings) as fetcher:
            for records in self.pages(self.source):
                entries: list[SourceEntry] = []
                for rec in records:
                    entry = self._entry(rec.payload)
                    if entry is None:
                        continue
                    if entry.kind == "video":
                        if entry.id in seen_videos:
                            continue
                        seen_videos.add(entry.id)
                    entries.append(entry)
                outcomes = index_entries(
                    entries,
                    embedder=self.owner._embedder,
                    store=cast(VectorStore, into),  # the three calls index_entries makes
                    collection=self.name,
                    settings=self.settings,
                    fetcher=fetcher,
                )
                notes = []
                for entry, outcome in zip(entries, outcomes, strict=True):
                    if outcome.error:
                        notes.append({"item": entry.id, "reason": f"not rebuilt: {outcome.error}"})
                        continue
                    self.rebuilt += 1
                    if entry.kind == "video":
                        self.rebuilt_videos.add(entry.id)
                    notes += [{"item": entry.id, "reason": p} for p in outcome.partial]
                self.owner._note(self.id, notes)
                self.done += len(records)
                self._progress()

    def reconcile(self) -> None:
        """Copy what the rebuild could not make again; the same bundle made those vectors."""
        copied = 0
        for records in self.pages(self.source):
            present = {r.id for r in self.store.retrieve(self.target, [r.id for r in records])}
            missing = [
                r.id
                for r in records
                if r.id not in present and r.payload.get("video_id") not in self.rebuilt_videos
            ]
            if not missing:
                continue
            full = self.store.retrieve(self.source, missing, with_vectors=True)
            self.store.inner.upsert(
                self.target, [Point(r.id, dict(r.vectors), dict(r.payload)) for r in full]
            )
            copied += len(full)
            self.owner._note(
                self.id,
                [{"item": _label(r), "reason": "copied from the previous version"} for r in full],
            )
        self.owner._update(self.id, copied=copied)

    def _entry(self, payload: Mapping[str, Any]) -> SourceEntry | None:
        """The source a point was made from, or None when it cannot be read again."""
        kind = payload.get("kind")
        uri = payload.get("uri")
        common: dict[str, Any] = {
            "caption": payload.get("caption"),
            "description": payload.get("description"),
            "metadata": payload.get("metadata") or {},
        }
        if uri is not None and not self._readable(str(uri)):
            return None
        if kind == Kind.video_segment.value:
            if uri is None or not payload.get("video_id"):
                return None
            return SourceEntry(uri=str(uri), id=str(payload["video_id"]), kind="video", **common)
        media_id = payload.get("media_id")
        if not media_id or (kind == Kind.image.value and uri is None):
            return None  # an image posted inline: its bytes were never stored
        return SourceEntry(uri=None if uri is None else str(uri), id=str(media_id), **common)

    def _readable(self, uri: str) -> bool:
        """URLs go through the fetch guard; local paths only under today's allowed roots."""
        if uri.startswith(("http://", "https://")):
            return True
        try:
            path = local_path(uri).resolve()
        except (OSError, RuntimeError, ValueError):
            return False
        return path.is_file() and under_roots(path, self.roots)

    def _progress(self) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.done / elapsed
        left = max(self.total - self.done, 0)
        self.owner._update(
            self.id,
            done=self.done,
            rebuilt=self.rebuilt,
            rate_per_s=rate,
            eta_s=left / max(rate, 1e-9),
        )


class _Into:
    """The store as ``index_entries`` sees it during a rebuild: every write lands in the new
    version, keeping the fields a rebuild cannot know, and is taken back if its item was
    deleted from the current version meanwhile (a delete that came before the write)."""

    def __init__(self, store: VersionedStore, target: str, source: str) -> None:
        self._store = store
        self._target = target
        self._source = source

    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        del collection  # the alias: ids come from it, writes go to the new version
        old = {r.id: r.payload for r in self._store.retrieve(self._source, [p.id for p in points])}
        merged = [Point(p.id, p.vectors, {**p.payload, **_kept(old.get(p.id))}) for p in points]
        self._store.inner.upsert(self._target, merged)
        # Asked after the write: a delete before it found nothing to delete in the new version.
        plain = [p.id for p in merged if not p.payload.get("video_id")]
        there = {r.id for r in self._store.retrieve(self._source, plain)}
        # A rebuilt video may have more segments than before: ask by video, not by point.
        videos = {str(v) for p in merged if (v := p.payload.get("video_id"))}
        gone_videos = {v for v in videos if self._store.count(self._source, {"video_id": v}) == 0}
        gone = [
            p.id
            for p in merged
            if (p.id not in there and not p.payload.get("video_id"))
            or p.payload.get("video_id") in gone_videos
        ]
        if gone:
            self._store.inner.delete(self._target, gone)

    def retrieve(
        self, collection: str, ids: Sequence[str], *, with_vectors: bool = False
    ) -> list[Record]:
        del collection
        return self._store.retrieve(self._target, ids, with_vectors=with_vectors)

    def count(self, collection: str, filter: Mapping[str, FilterValue] | None = None) -> int:  # noqa: A002
        del collection
        return self._store.count(self._target, filter)


def _kept(payload: Mapping[str, Any] | None) -> dict[str, Any]:
    if not payload:
        return {}
    return {key: payload[key] for key in _KEPT_FIELDS if payload.get(key)}


def _label(record: Record) -> str:
    return str(record.payload.get("media_id") or record.id)
