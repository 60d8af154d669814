"""QdrantEdgeStore: the embedded store, one Qdrant Edge shard per collection, in this process.

Layout: ``<data_dir>/collections/<name>/`` holds the shard and ``clipsearch.json`` (the vector
dims and which vectors are multivectors: the shard's ``info()`` does not give them back; and the
collection's ``metadata``, as a Qdrant server keeps it in the collection's config). That
JSON is written after the shard is created, so it marks a collection as complete; a folder
without it is a crashed creation. Format 1 (no ``multivectors`` key) predates multivector
captions: such a collection stores ``caption`` as one vector and is served as it is.

Qdrant Edge facts this module is built around (qdrant-edge-py 0.9.0):

* one process per data directory: the WAL is locked. ``<data_dir>/collections/.lock`` (flock)
  turns a second process into a clear "in use" error before any shard is touched;
* native calls hold the GIL; one lock serialises them. ``optimize`` blocks the whole process for
  seconds, so it is a maintenance method only;
* ``update`` is cheap (about 1 ms per 32 points) and goes to the WAL, which a reopened shard
  replays: acknowledged points survive a killed process without ``flush``. ``flush`` (segments
  to disk) holds the GIL for 5 to 150 ms on a busy disk, whatever the number of points. So an
  upsert is written in slices of :data:`UPSERT_SLICE` points, the lock and the GIL handed over
  between them, and its flush waits while the store is searched (:data:`FLUSH_QUIET_S`; at most
  :data:`FLUSH_MAX_DELAY_S`, then it runs anyway): a query waits behind one slice, and behind a
  flush at most once per :data:`FLUSH_MAX_DELAY_S` while searches never pause;
* errors are bare ``Exception`` (``ValueError``/``TypeError`` for bad ids or payloads);
* ``MatchValue(True)`` is read as the integer 1 (bool is an int to the binding) and never matches
  a JSON ``true``; a ``numpy.bool_`` is read as a real bool, so filters pass that instead;
* ids come back as ``uuid.UUID``; ``retrieve`` takes both flags positionally;
* a ragged or zero-width multivector makes the engine panic (``PanicException``, a
  ``BaseException``) instead of raising: every row is checked before it gets there.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from service.core.domain import FilterValue, Point, Record, StoredHit, VectorName
from service.core.errors import ClipsearchError, ErrorType, not_found
from service.store._checks import (
    check_collection_name,
    check_dims,
    check_page,
    domain_vectors,
    multi_names,
    parse_ids,
    query_vector,
    storage_vectors,
)
from service.store._edge_native import edge_filter, native_errors
from service.store.files import lock_data_dir, read_aliases, write_json

logger = logging.getLogger(__name__)

_META_FILE = "clipsearch.json"
_LOCK_FILE = ".lock"
_ALIASES_FILE = ".aliases.json"  # no collection name starts with a dot

# Writes and searches share one lock and the GIL (issue 16): see the module's notes.
UPSERT_SLICE = 32  # points per native update
FLUSH_QUIET_S = 1.0  # a flush waits until no search has started for this long...
FLUSH_MAX_DELAY_S = 10.0  # ...or until the oldest unflushed write is this old
_FLUSH_POLL_S = 0.2


@dataclass
class _Collection:
    shard: qe.EdgeShard
    dims: dict[str, int]
    multi: frozenset[str]  # the multivectors (MaxSim)


class QdrantEdgeStore:
    """VectorStore on Qdrant Edge; thread-safe, one instance per data dir and per process."""

    def __init__(self, data_dir: Path) -> None:
        self._root = Path(data_dir) / "collections"
        self._root.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = lock_data_dir(Path(data_dir), self._root / _LOCK_FILE)
        self._lock = threading.RLock()
        self._open: dict[str, _Collection] = {}
        self._aliases: dict[str, str] = read_aliases(self._root / _ALIASES_FILE)
        self._last_search = float("-inf")  # when a search last started (monotonic)
        self._unflushed: dict[str, float] = {}  # collection -> when its oldest unflushed write was
        self._flusher: threading.Thread | None = None
        self._closing = threading.Event()
        logger.info("embedded Qdrant Edge store at %s", self._root)

    def ensure_collection(self, name: str, dims: Mapping[VectorName, int]) -> None:
        check_collection_name(name)
        wanted = check_dims(dims)
        with self._lock:
            existing = self._get(name)
            if existing is not None:
                if existing.dims != wanted:
                    raise ClipsearchError(
                        ErrorType.conflict,
                        f"collection {name!r} exists with other vector dims",
                        {"existing": existing.dims, "requested": wanted},
                    )
                _warn_if_legacy(name, existing.multi, multi_names(wanted))
                return
            path = self._root / name
            if path.exists():
                logger.warning("removing incomplete collection folder %s", path)
                shutil.rmtree(path)
            multi = multi_names(wanted)
            max_sim = qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim)
            config = qe.EdgeConfig(
                vectors={
                    vec: qe.EdgeVectorParams(
                        size=size,
                        distance=qe.Distance.Cosine,
                        multivector_config=max_sim if vec in multi else None,
                    )
                    for vec, size in wanted.items()
                }
            )
            with native_errors("create collection", name):
                shard = qe.EdgeShard.create(str(path), config)
            try:
                _write_meta(path / _META_FILE, wanted, multi)
            except OSError:
                shard.close()  # the folder, without its JSON, is replaced on the next try
                raise
            self._open[name] = _Collection(shard, wanted, multi)
            logger.info(
                "created collection %s with dims %s (multivectors %s)", name, wanted, sorted(multi)
            )

    def collection_exists(self, name: str) -> bool:
        check_collection_name(name)
        with self._lock:
            self._check_open()
            name = self._aliases.get(name, name)
            return name in self._open or (self._root / name / _META_FILE).is_file()

    def drop_collection(self, name: str) -> None:
        check_collection_name(name)
        with self._lock:
            self._check_open()
            col = self._open.pop(name, None)
            if col is not None:
                with native_errors("close collection", name):
                    col.shard.close()
            shutil.rmtree(self._root / name, ignore_errors=True)
            pointing = [alias for alias, target in self._aliases.items() if target == name]
            if pointing:  # as Qdrant does: a collection's aliases go with it
                self._aliases = {k: v for k, v in self._aliases.items() if v != name}
                write_json(self._root / _ALIASES_FILE, self._aliases)
            logger.info("dropped collection %s", name)

    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        if not points:
            return
        ids = parse_ids([p.id for p in points])
        with self._lock:
            col = self._require(collection)
        # Every point is checked and converted before the first is written, outside the lock
        # (pure Python: the GIL changes hands every few ms), so a bad point fails the call
        # before anything is stored.
        shaped: list[dict[str, Any]] = [  # qe.Point types its vectors its own way
            storage_vectors(collection, col.dims, col.multi, p.vectors, f"point {p.id}")
            for p in points
        ]
        # A payload that is not JSON fails in qe.Point.
        with native_errors("upsert", collection):
            native = [
                qe.Point(pid, vectors, dict(p.payload))
                for pid, vectors, p in zip(ids, shaped, points, strict=True)
            ]
        for start in range(0, len(native), UPSERT_SLICE):
            if start:
                time.sleep(0)  # a query waiting for the lock or the GIL goes first
            with self._lock:
                col = self._require(collection)
                with native_errors("upsert", collection):
                    col.shard.update(
                        qe.UpdateOperation.upsert_points(native[start : start + UPSERT_SLICE])
                    )
        # The WAL already holds the points (a killed process keeps them): the flush that
        # writes the segments waits for a pause in the searches.
        self._flush_later(collection)

    def search(
        self,
        collection: str,
        vector_name: VectorName,
        vector: Sequence[float],
        *,
        limit: int,
        offset: int = 0,
        filter: Mapping[str, FilterValue] | None = None,  # noqa: A002
        score_threshold: float | None = None,
    ) -> list[StoredHit]:
        check_page(limit, offset)
        request_filter = edge_filter(filter)
        self._last_search = time.monotonic()  # pending flushes wait (_flush_later)
        with self._lock:
            col = self._require(collection)
            values: Any = [float(x) for x in query_vector(col.dims, vector_name, vector)]
            if vector_name in col.multi:
                values = [values]  # a one-row query: MaxSim is the best row's cosine
            request = qe.QueryRequest(
                limit=limit,
                offset=offset,
                query=qe.Query.Nearest(values, using=vector_name),
                filter=request_filter,
                score_threshold=score_threshold,
                with_payload=True,
                with_vector=False,
            )
            with native_errors("search", collection):
                found = col.shard.query(request)
        return [StoredHit(str(p.id), float(p.score), dict(p.payload or {})) for p in found]

    def retrieve(
        self, collection: str, ids: Sequence[str], *, with_vectors: bool = False
    ) -> list[Record]:
        wanted = list(dict.fromkeys(parse_ids(ids)))
        if not wanted:
            return []
        with self._lock:
            col = self._require(collection)
            native_ids: list[qe.PointId] = list(wanted)
            with native_errors("retrieve", collection):
                found = col.shard.retrieve(native_ids, True, with_vectors)
        by_id = {str(r.id): r for r in found}
        return [
            Record(pid, dict(by_id[pid].payload or {}), domain_vectors(by_id[pid].vector))
            for pid in wanted
            if pid in by_id
        ]

    def count(self, collection: str, filter: Mapping[str, FilterValue] | None = None) -> int:  # noqa: A002
        request = qe.CountRequest(exact=True, filter=edge_filter(filter))
        with self._lock:
            col = self._require(collection)
            with native_errors("count", collection):
                return int(col.shard.count(request))

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        wanted = parse_ids(ids)
        if not wanted:
            return
        with self._lock:
            col = self._require(collection)
            with native_errors("delete", collection):
                col.shard.update(qe.UpdateOperation.delete_points(list(wanted)))
                col.shard.flush()

    def optimize(self, collection: str) -> bool:
        """Merge segments and build indexes; True if anything changed.

        Never call this on a request path: it holds the GIL and this store's lock for seconds
        (minutes on large collections), which stalls every thread of the process. Run it from
        a maintenance command or after a bulk ingestion, when no traffic is expected.
        """
        with self._lock:
            col = self._require(collection)
            logger.info("optimizing collection %s (blocks the process)", collection)
            with native_errors("optimize", collection):
                return bool(col.shard.optimize())

    def list_collections(self) -> list[str]:
        with self._lock:
            self._check_open()
            return sorted(p.parent.name for p in self._root.glob(f"*/{_META_FILE}"))

    def vector_dims(self, name: str) -> dict[str, int]:
        with self._lock:
            return dict(self._require(name).dims)

    def aliases(self) -> dict[str, str]:
        with self._lock:
            self._check_open()
            return dict(self._aliases)

    def update_aliases(self, point: Mapping[str, str], remove: Sequence[str] = ()) -> None:
        with self._lock:
            self._check_open()
            for alias, target in point.items():
                check_collection_name(alias)
                if (self._root / alias / _META_FILE).is_file():
                    raise ClipsearchError(
                        ErrorType.conflict, f"alias {alias!r} is the name of a collection"
                    )
                if self._get(target) is None:
                    raise not_found(f"collection {target!r} does not exist")
            aliases = {k: v for k, v in self._aliases.items() if k not in remove}
            aliases.update(point)
            write_json(self._root / _ALIASES_FILE, aliases)  # atomic: all or nothing
            self._aliases = aliases
            logger.info("aliases now %s", aliases)

    def collection_metadata(self, name: str) -> dict[str, Any]:
        with self._lock:
            self._require(name)
            data = json.loads(self._meta_path(name).read_text("utf-8"))
        metadata = data.get("metadata") or {}
        return dict(metadata) if isinstance(metadata, dict) else {}

    def set_collection_metadata(self, name: str, metadata: Mapping[str, Any]) -> None:
        with self._lock:
            self._require(name)
            path = self._meta_path(name)
            data = json.loads(path.read_text("utf-8"))
            data["metadata"] = {**(data.get("metadata") or {}), **metadata}
            write_json(path, data)  # atomic, like the file's first write

    def _meta_path(self, name: str) -> Path:
        return self._root / self._aliases.get(name, name) / _META_FILE

    def rename_collection(self, old: str, new: str) -> None:
        """Move a collection to another name (the embedded store only; Qdrant cannot)."""
        check_collection_name(new)
        with self._lock:
            col = self._require(old)
            if (self._root / new).exists() or new in self._aliases:
                raise ClipsearchError(ErrorType.conflict, f"collection {new!r} exists")
            with native_errors("close collection", old):
                col.shard.flush()
                col.shard.close()
            del self._open[old]
            os.replace(self._root / old, self._root / new)
            logger.info("renamed collection %s to %s", old, new)

    def scroll(
        self,
        collection: str,
        *,
        limit: int,
        offset: str | None = None,
        with_vectors: bool = False,
    ) -> tuple[list[Record], str | None]:
        check_page(limit, 0)
        start = parse_ids([offset])[0] if offset is not None else None
        with self._lock:
            col = self._require(collection)
            request = qe.ScrollRequest(
                offset=start, limit=limit, with_payload=True, with_vector=with_vectors
            )
            with native_errors("scroll", collection):
                found, next_offset = col.shard.scroll(request)
        records = [
            Record(str(r.id), dict(r.payload or {}), domain_vectors(r.vector)) for r in found
        ]
        return records, None if next_offset is None else str(next_offset)

    def close(self) -> None:
        """Flush and close every shard, then release the data dir. Safe to call twice."""
        self._closing.set()
        flusher = self._flusher
        if flusher is not None and flusher is not threading.current_thread():
            flusher.join(timeout=60)
        with self._lock:
            self._unflushed.clear()
            for name, col in self._open.items():
                for step in (col.shard.flush, col.shard.close):
                    try:
                        step()
                    except Exception:
                        logger.exception("closing collection %s failed", name)
            self._open.clear()
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None

    def _flush_later(self, collection: str) -> None:
        """Flush ``collection`` now if no search started in the last :data:`FLUSH_QUIET_S`,
        else once one such pause comes, or once its oldest unflushed write is
        :data:`FLUSH_MAX_DELAY_S` old (a flusher thread watches; ``close`` flushes too)."""
        with self._lock:
            name = self._aliases.get(collection, collection)
            self._unflushed.setdefault(name, time.monotonic())
            self._flush_due()
            if self._unflushed and self._flusher is None:
                self._flusher = threading.Thread(
                    target=self._flush_loop, name="edge-flusher", daemon=True
                )
                self._flusher.start()

    def _flush_due(self) -> None:
        """Flush every collection whose flush may run now (under the lock)."""
        now = time.monotonic()
        quiet = now - self._last_search >= FLUSH_QUIET_S
        for name, since in list(self._unflushed.items()):
            if not quiet and now - since < FLUSH_MAX_DELAY_S:
                continue
            del self._unflushed[name]
            col = self._open.get(name)
            if col is None:  # dropped or renamed since: close() or rename flushed it
                continue
            try:
                with native_errors("flush", name):
                    col.shard.flush()
            except ClipsearchError:
                logger.exception("flushing collection %s failed (its WAL keeps the points)", name)

    def _flush_loop(self) -> None:
        while not self._closing.wait(_FLUSH_POLL_S):
            with self._lock:
                if self._lock_fd is not None:
                    self._flush_due()
                if self._lock_fd is None or not self._unflushed:
                    self._flusher = None  # the next deferred flush starts another
                    return

    def _check_open(self) -> None:
        if self._lock_fd is None:
            raise ClipsearchError(ErrorType.unavailable, "the embedded store is closed")

    def _get(self, name: str) -> _Collection | None:
        self._check_open()
        col = self._open.get(name)
        if col is not None:
            return col
        path = self._root / name
        meta = path / _META_FILE
        if not meta.is_file():
            return None
        data = json.loads(meta.read_text("utf-8"))
        dims = {str(k): int(v) for k, v in data["dims"].items()}
        multi = frozenset(str(v) for v in data.get("multivectors", ()))  # format 1: none
        with native_errors("load collection", name):
            shard = qe.EdgeShard.load(str(path))
        col = self._open[name] = _Collection(shard, dims, multi)
        return col

    def _require(self, name: str) -> _Collection:
        check_collection_name(name)
        name = self._aliases.get(name, name)
        col = self._get(name)
        if col is None:
            raise not_found(f"collection {name!r} does not exist")
        return col


def _warn_if_legacy(name: str, have: frozenset[str], want: frozenset[str]) -> None:
    if want - have:
        logger.warning(
            "collection %s stores %s as single vectors (made before multivector captions): "
            "captions of more than one chunk are refused until it is reindexed",
            name,
            sorted(want - have),
        )


def _write_meta(path: Path, dims: dict[str, int], multi: frozenset[str]) -> None:
    # atomic: the collection is complete once this file exists
    meta = {"format": 2, "distance": "cosine", "dims": dims, "multivectors": sorted(multi)}
    write_json(path, meta)
