"""QdrantEdgeStore: the embedded store, one Qdrant Edge shard per collection, in this process.

Layout: ``<data_dir>/collections/<name>/`` holds the shard and ``clipsearch.json`` (the vector
dims: the shard's ``info()`` does not give them back). That JSON is written after the shard is
created, so it marks a collection as complete; a folder without it is a crashed creation.

Qdrant Edge facts this module is built around (qdrant-edge-py 0.9.0):

* one process per data directory: the WAL is locked. ``<data_dir>/collections/.lock`` (flock)
  turns a second process into a clear "in use" error before any shard is touched;
* native calls hold the GIL; one lock serialises them. ``optimize`` blocks the whole process for
  seconds, so it is a maintenance method only;
* errors are bare ``Exception`` (``ValueError``/``TypeError`` for bad ids or payloads);
* ``MatchValue(True)`` is read as the integer 1 (bool is an int to the binding) and never matches
  a JSON ``true``; a ``numpy.bool_`` is read as a real bool, so filters pass that instead;
* ids come back as ``uuid.UUID``; ``retrieve`` takes both flags positionally.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from service.core.domain import FilterValue, Point, Record, StoredHit, VectorName
from service.core.errors import ClipsearchError, ErrorType, invalid, not_found
from service.store._checks import (
    check_collection_name,
    check_dims,
    check_filter,
    check_page,
    parse_ids,
)

logger = logging.getLogger(__name__)

_META_FILE = "clipsearch.json"
_LOCK_FILE = ".lock"
# Messages of the bare Exceptions that mean "the caller sent something wrong".
_INPUT_MARKERS = ("Wrong input", "Bad input", "Bad request", "dimension error", "vector name")


@dataclass
class _Collection:
    shard: qe.EdgeShard
    dims: dict[str, int]


class QdrantEdgeStore:
    """VectorStore on Qdrant Edge; thread-safe, one instance per data dir and per process."""

    def __init__(self, data_dir: Path) -> None:
        self._root = Path(data_dir) / "collections"
        self._root.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = _lock_data_dir(Path(data_dir), self._root / _LOCK_FILE)
        self._lock = threading.RLock()
        self._open: dict[str, _Collection] = {}
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
                return
            path = self._root / name
            if path.exists():
                logger.warning("removing incomplete collection folder %s", path)
                shutil.rmtree(path)
            config = qe.EdgeConfig(
                vectors={
                    vec: qe.EdgeVectorParams(size=size, distance=qe.Distance.Cosine)
                    for vec, size in wanted.items()
                }
            )
            with _native("create collection", name):
                shard = qe.EdgeShard.create(str(path), config)
            try:
                _write_meta(path / _META_FILE, wanted)
            except OSError:
                shard.close()  # the folder, without its JSON, is replaced on the next try
                raise
            self._open[name] = _Collection(shard, wanted)
            logger.info("created collection %s with dims %s", name, wanted)

    def collection_exists(self, name: str) -> bool:
        check_collection_name(name)
        with self._lock:
            self._check_open()
            return name in self._open or (self._root / name / _META_FILE).is_file()

    def drop_collection(self, name: str) -> None:
        check_collection_name(name)
        with self._lock:
            self._check_open()
            col = self._open.pop(name, None)
            if col is not None:
                with _native("close collection", name):
                    col.shard.close()
            shutil.rmtree(self._root / name, ignore_errors=True)
            logger.info("dropped collection %s", name)

    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        if not points:
            return
        ids = parse_ids([p.id for p in points])
        with self._lock:
            col = self._require(collection)
            for point in points:
                for vec, values in point.vectors.items():
                    _check_vector(col, vec, values, point.id)
            with _native("upsert", collection):  # a payload that is not JSON fails in qe.Point
                native = [
                    qe.Point(pid, dict(p.vectors), dict(p.payload))
                    for pid, p in zip(ids, points, strict=True)
                ]
                col.shard.update(qe.UpdateOperation.upsert_points(native))
                # Flushed per batch so that a crash or restart never loses acknowledged points.
                col.shard.flush()

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
        request_filter = _edge_filter(filter)
        with self._lock:
            col = self._require(collection)
            _check_vector(col, vector_name, vector, "query")
            request = qe.QueryRequest(
                limit=limit,
                offset=offset,
                query=qe.Query.Nearest([float(x) for x in vector], using=vector_name),
                filter=request_filter,
                score_threshold=score_threshold,
                with_payload=True,
                with_vector=False,
            )
            with _native("search", collection):
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
            with _native("retrieve", collection):
                found = col.shard.retrieve(native_ids, True, with_vectors)
        by_id = {str(r.id): r for r in found}
        return [
            Record(pid, dict(by_id[pid].payload or {}), _dense(by_id[pid].vector))
            for pid in wanted
            if pid in by_id
        ]

    def count(self, collection: str, filter: Mapping[str, FilterValue] | None = None) -> int:  # noqa: A002
        request = qe.CountRequest(exact=True, filter=_edge_filter(filter))
        with self._lock:
            col = self._require(collection)
            with _native("count", collection):
                return int(col.shard.count(request))

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        wanted = parse_ids(ids)
        if not wanted:
            return
        with self._lock:
            col = self._require(collection)
            with _native("delete", collection):
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
            with _native("optimize", collection):
                return bool(col.shard.optimize())

    def close(self) -> None:
        """Flush and close every shard, then release the data dir. Safe to call twice."""
        with self._lock:
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
        dims = {str(k): int(v) for k, v in json.loads(meta.read_text("utf-8"))["dims"].items()}
        with _native("load collection", name):
            shard = qe.EdgeShard.load(str(path))
        col = self._open[name] = _Collection(shard, dims)
        return col

    def _require(self, name: str) -> _Collection:
        check_collection_name(name)
        col = self._get(name)
        if col is None:
            raise not_found(f"collection {name!r} does not exist")
        return col


def _dense(vectors: Any) -> dict[str, list[float]]:
    return {k: list(v) for k, v in vectors.items()} if isinstance(vectors, dict) else {}


def _check_vector(col: _Collection, name: str, values: Sequence[float], what: str) -> None:
    size = col.dims.get(name)
    if size is None:
        raise invalid(f"unknown vector {name!r} for {what}", {"vectors": sorted(col.dims)})
    if len(values) != size:
        raise invalid(f"vector {name!r} of {what} has {len(values)} dims, expected {size}")


def _edge_filter(flt: Mapping[str, FilterValue] | None) -> qe.Filter | None:
    conditions: list[Any] = []
    for key, value in check_filter(flt):
        if isinstance(value, list):
            match: Any = qe.MatchAny(value)
        elif isinstance(value, bool):
            match = qe.MatchValue(np.bool_(value))  # type: ignore[arg-type]  # see module doc
        else:
            match = qe.MatchValue(value)
        conditions.append(qe.FieldCondition(key, match=match))
    return qe.Filter(must=conditions) if conditions else None


@contextmanager
def _native(action: str, collection: str) -> Iterator[None]:
    """Turn qdrant-edge's bare exceptions into ClipsearchError, keeping the original text."""
    try:
        yield
    except ClipsearchError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:
        raise invalid(f"{action} on {collection!r} rejected: {_first_line(exc)}", str(exc)) from exc
    except Exception as exc:
        text = str(exc)
        if "WouldBlock" in text:
            raise ClipsearchError(
                ErrorType.unavailable, f"collection {collection!r} is open elsewhere", text
            ) from exc
        if any(marker in text for marker in _INPUT_MARKERS):
            raise invalid(f"{action} on {collection!r} rejected: {_first_line(exc)}", text) from exc
        raise ClipsearchError(
            ErrorType.internal, f"embedded store failed to {action} on {collection!r}", text
        ) from exc


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().split("\n", 1)[0][:200]


def _write_meta(path: Path, dims: dict[str, int]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"format": 1, "distance": "cosine", "dims": dims}), "utf-8")
    os.replace(tmp, path)  # atomic: the collection is complete once this file exists


def _lock_data_dir(data_dir: Path, lock_path: Path) -> int:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise ClipsearchError(
            ErrorType.unavailable,
            f"data dir {data_dir} is in use by another process (pid {holder}); the embedded "
            "store allows one process per data dir: stop it, use another CLIPSEARCH_DATA_DIR, "
            "or run a Qdrant server (CLIPSEARCH_QDRANT__URL)",
            {"data_dir": str(data_dir), "lock": str(lock_path), "pid": holder},
        ) from exc
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return fd
