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
  seconds, so it never runs here while serving: :meth:`QdrantEdgeStore.build_index` builds the
  HNSW index in a subprocess on a copy of the shard and swaps it in (``service.store.edge_index``;
  a maintenance thread does it when :class:`IndexPolicy` says so). Once built, the live shard
  is ``shard.<n>/`` inside the collection folder, named by ``clipsearch.json``'s ``shard``;
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
from service.store.edge_index import (
    BUILD_PREFIX,
    SHARD_PREFIX,
    Build,
    IndexPolicy,
    copy_shard,
    read_built,
    remove_leftovers,
    shard_dir,
    start_builder,
    warm_files,
)
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
    path: Path  # the shard's folder (``edge_index.shard_dir``)
    indexed: int = 0  # points in the shard when its index was last built


class QdrantEdgeStore:
    """VectorStore on Qdrant Edge; thread-safe, one instance per data dir and per process."""

    def __init__(self, data_dir: Path, *, index_policy: IndexPolicy | None = None) -> None:
        self._root = Path(data_dir) / "collections"
        self._root.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = lock_data_dir(Path(data_dir), self._root / _LOCK_FILE)
        # Lock order: _write_lock, then _lock. Writes (and flushes) hold both; searches hold
        # _lock only; an index build holds _write_lock alone while it copies a shard.
        self._write_lock = threading.RLock()
        self._lock = threading.RLock()
        self._open: dict[str, _Collection] = {}
        self._aliases: dict[str, str] = read_aliases(self._root / _ALIASES_FILE)
        self._last_search = float("-inf")  # when a search last started (monotonic)
        self._unflushed: dict[str, float] = {}  # collection -> when its oldest unflushed write was
        self._flusher: threading.Thread | None = None
        self._closing = threading.Event()
        self.index_policy = index_policy or IndexPolicy()
        self._builds: dict[str, Build] = {}  # collection -> the index build in flight
        self._build_lock = threading.Lock()  # one build at a time
        self._maintainer: threading.Thread | None = None
        self.last_build: dict[str, Any] | None = None  # the phases of the last swap, in seconds
        if self.index_policy.enabled:
            self._maintainer = threading.Thread(
                target=self._maintain_loop, name="edge-indexer", daemon=True
            )
            self._maintainer.start()
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
            self._open[name] = _Collection(shard, wanted, multi, path)
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
        with self._write_lock, self._lock:
            self._check_open()
            self._cancel_build(name)
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
            with self._write_lock, self._lock:
                col = self._require(collection)
                with native_errors("upsert", collection):
                    col.shard.update(
                        qe.UpdateOperation.upsert_points(native[start : start + UPSERT_SLICE])
                    )
                self._touched(collection, ids[start : start + UPSERT_SLICE])
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

    def scored_candidates(
        self,
        collection: str,
        queries: Mapping[VectorName, Sequence[float]],
        *,
        depth: int,
        filter: Mapping[str, FilterValue] | None = None,  # noqa: A002
    ) -> tuple[list[Record], dict[VectorName, dict[str, float]]]:
        """The union of each channel's top ``depth`` points (payloads, no vectors) and each
        one's cosine in every queried channel it has (a multivector's best row), scored by the
        shard: two native calls under one lock — the candidates (a prefetch per channel, united
        by RRF with ``limit`` their sum, so none is cut), then one exact search per channel
        restricted to them. Fusion ranks them (``service.search.fusion``); no stored vector
        crosses into Python (``make bench-search-load``: 60.7 → 125-148 queries/s)."""
        check_page(depth, 0)
        if not queries:
            return [], {}
        request_filter = edge_filter(filter)
        self._last_search = time.monotonic()
        with self._lock:
            col = self._require(collection)
            nearest = {}
            for name, vector in queries.items():
                values: Any = [float(x) for x in query_vector(col.dims, name, vector)]
                nearest[name] = qe.Query.Nearest(
                    [values] if name in col.multi else values, using=name
                )
            request = qe.QueryRequest(
                limit=depth * len(nearest),
                prefetches=[
                    qe.Prefetch(limit=depth, query=q, filter=request_filter)
                    for q in nearest.values()
                ],
                query=qe.Fusion.Rrf(k=60),  # type: ignore[arg-type]  # the stub omits Rrf
                with_payload=True,
                with_vector=False,
            )
            with native_errors("search", collection):
                found = col.shard.query(request)
                if not found:
                    return [], {}
                only = qe.Filter(must=[qe.HasIdCondition({p.id for p in found})])
                exact = qe.SearchParams(exact=True)
                scored = col.shard.query_batch(
                    qe.QueryBatchRequest(
                        [
                            qe.QueryRequest(
                                limit=len(found),
                                query=q,
                                filter=only,
                                params=exact,
                                with_payload=False,
                                with_vector=False,
                            )
                            for q in nearest.values()
                        ]
                    )
                )
        records = [Record(str(p.id), dict(p.payload or {}), {}) for p in found]
        sims = {
            name: {str(p.id): float(p.score) for p in hits}
            for name, hits in zip(nearest, scored, strict=True)
        }
        return records, sims

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
        with self._write_lock, self._lock:
            col = self._require(collection)
            with native_errors("delete", collection):
                col.shard.update(qe.UpdateOperation.delete_points(list(wanted)))
                col.shard.flush()
            self._touched(collection, wanted)

    def optimize(self, collection: str) -> bool:
        """Merge segments and build indexes in this process; True if anything changed.

        Never call this while the store serves: it holds the GIL and this store's lock for
        seconds (minutes on large collections), which stalls every thread of the process.
        :meth:`build_index` builds out of process and is what the maintenance thread runs.
        """
        with self._lock:
            col = self._require(collection)
            logger.info("optimizing collection %s (blocks the process)", collection)
            with native_errors("optimize", collection):
                return bool(col.shard.optimize())

    def build_index(self, collection: str) -> bool:
        """Build the collection's HNSW index out of this process and swap it in, the serving
        shard answering all along (see ``service.store.edge_index``); True once the built shard
        serves, False when the build was given up (collection dropped or renamed, store
        closing). A builder that fails raises ``ClipsearchError`` (internal) and leaves the
        serving shard as it was. The maintenance thread calls this when
        :attr:`index_policy` says a collection is due."""
        with self._build_lock:
            with self._lock:
                name = self._aliases.get(collection, collection)
                col = self._require(name)
                source = col.path
            folder, build = self._start_copy(name, source)
            try:
                return self._finish_build(name, folder, build)
            finally:
                with self._lock:
                    if self._builds.get(name) is build:
                        del self._builds[name]
                if build.process is not None and build.process.poll() is None:
                    build.process.kill()  # only when this thread is leaving early
                    build.process.wait()
                with self._lock:
                    current = self._open.get(name)
                    built = self._root / name / f"{SHARD_PREFIX}{build.number}"
                    unused = [folder] + (
                        [built] if current is None or current.path != built else []
                    )
                for path in unused:
                    if path.exists():
                        shutil.rmtree(path, ignore_errors=True)
                (self._root / name / f"{folder.name}.log").unlink(missing_ok=True)

    def index_state(self, collection: str) -> dict[str, Any]:
        """Points, points covered by the last index build, segments, and whether a build runs."""
        with self._lock:
            name = self._aliases.get(collection, collection)
            col = self._require(name)
            with native_errors("info", name):
                info = col.shard.info()
            return {
                "points": int(info.points_count),
                "indexed_points": col.indexed,
                "indexed_vectors": int(info.indexed_vectors_count),
                "segments": int(info.segments_count),
                "building": name in self._builds,
                "shard": col.path.name if col.path != self._root / name else None,
            }

    def _start_copy(self, name: str, source: Path) -> tuple[Path, Build]:
        """Freeze writes, flush if needed, copy the shard and start recording the ids that
        writes touch from then on. Searches run throughout."""
        number = 1 + max(
            (
                int(p.name.split(".", 1)[1])
                for p in (self._root / name).iterdir()
                if p.name.startswith((BUILD_PREFIX, SHARD_PREFIX))
                and p.name.split(".", 1)[1].isdigit()
            ),
            default=0,
        )
        folder = self._root / name / f"{BUILD_PREFIX}{number}"
        build = Build(name, number)
        started = build.marks["copy"] = time.monotonic()
        with self._write_lock:
            with self._lock:
                col = self._require(name)
                if name in self._unflushed:  # the copy must hold every write in its segments
                    del self._unflushed[name]
                    with native_errors("flush", name):
                        col.shard.flush()
                self._builds[name] = build
            try:
                size = copy_shard(source, folder)
            except OSError as exc:
                with self._lock:
                    self._builds.pop(name, None)
                shutil.rmtree(folder, ignore_errors=True)
                raise ClipsearchError(
                    ErrorType.internal,
                    f"copying collection {name!r} for an index build failed",
                    str(exc),
                ) from exc
        build.timings["copy_s"] = round(time.monotonic() - started, 4)
        logger.info(
            "index build %s of %s: copied %.0f MB in %.2f s (writes waited)",
            number,
            name,
            size / 1e6,
            time.monotonic() - started,
        )
        return folder, build

    def _finish_build(self, name: str, folder: Path, build: Build) -> bool:
        meta = json.loads((self._root / name / _META_FILE).read_text("utf-8"))
        log_path = self._root / name / f"{folder.name}.log"
        started = build.marks["builder"] = time.monotonic()
        build.process = start_builder(folder, meta, self.index_policy, log_path)
        while build.process.poll() is None:
            if build.cancelled.wait(0.2) or self._closing.is_set():
                return False
            if time.monotonic() - started > self.index_policy.builder_timeout_s:
                raise ClipsearchError(ErrorType.internal, f"index build of {name!r} timed out")
        build.timings["builder_s"] = round(time.monotonic() - started, 3)
        built = read_built(folder) if build.process.returncode == 0 else None
        if built is None:
            tail = (
                log_path.read_text("utf-8", errors="replace")[-2000:] if log_path.exists() else ""
            )
            raise ClipsearchError(
                ErrorType.internal,
                f"index builder for {name!r} failed (exit {build.process.returncode}); "
                "the serving shard is unchanged",
                tail,
            )
        logger.info(
            "index build %s of %s: built in %.1f s: %s",
            build.number,
            name,
            time.monotonic() - started,
            built,
        )
        target = self._root / name / f"{SHARD_PREFIX}{build.number}"
        os.replace(folder, target)
        build.marks["warm"] = time.monotonic()
        warm_files(target)  # the load below then reads from the page cache
        if not self._wait_for_quiet(build):
            return False
        began = build.marks["load"] = time.monotonic()
        with native_errors("load built index", name):
            new = qe.EdgeShard.load(str(target))
        build.timings["load_s"] = round(time.monotonic() - began, 4)
        try:
            swapped = self._catch_up_and_swap(name, new, target, build, int(built["points"]))
        except BaseException:
            new.close()
            raise
        if not swapped:
            new.close()
            shutil.rmtree(target, ignore_errors=True)
        return swapped

    def _catch_up_and_swap(
        self, name: str, new: qe.EdgeShard, target: Path, build: Build, indexed: int
    ) -> bool:
        policy = self.index_policy
        build.marks["catch_up"] = time.monotonic()
        while True:  # catch up, a slice per turn of the lock, writes going on
            with self._lock:
                if build.cancelled.is_set():
                    return False
                left = len(build.touched)
                if left <= policy.final_catchup:
                    break
                self._copy_points(
                    name, new, [build.touched.pop() for _ in range(policy.catchup_slice)]
                )
            time.sleep(0)
        with self._write_lock, self._lock:  # writes wait for the last few ids and the commit
            began = build.marks["swap"] = time.monotonic()
            if build.cancelled.is_set():
                return False
            col = self._require(name)
            while build.touched:
                self._copy_points(
                    name,
                    new,
                    [
                        build.touched.pop()
                        for _ in range(min(policy.catchup_slice, len(build.touched)))
                    ],
                )
            old, old_path = col.shard, col.path
            meta_path = self._root / name / _META_FILE
            data = json.loads(meta_path.read_text("utf-8"))
            data["shard"] = target.name
            data["index"] = {"points": indexed, "build": build.number}
            write_json(meta_path, data)  # the commit: a restart loads the new shard
            col.shard, col.path, col.indexed = new, target, indexed
            del self._builds[name]  # the catch-up writes are in the new shard's WAL
            build.timings["swap_s"] = round(time.monotonic() - began, 4)
        self._wait_for_quiet(build)  # the old shard serves no one now: only when to close it
        began = build.marks["close_old"] = time.monotonic()
        with native_errors("close replaced shard", name):
            old.close()
        build.timings["close_old_s"] = round(time.monotonic() - began, 4)
        remove_leftovers(self._root / name, _META_FILE, data)
        build.marks["done"] = time.monotonic()
        self.last_build = {
            "collection": name,
            "number": build.number,
            **build.timings,
            "marks": dict(build.marks),  # time.monotonic() at the start of each phase
        }
        logger.info(
            "index build %s of %s: swapped in (%s replaced): %s",
            build.number,
            name,
            old_path.name,
            build.timings,
        )
        return True

    def _wait_for_quiet(self, build: Build) -> bool:
        """Wait until no search started for ``swap_quiet_s`` (as a deferred flush does), or
        ``swap_max_wait_s`` at most: loading the built shard and closing the replaced one hold
        the GIL (tens of ms), so they go where no query waits for them if there is such a
        pause. False if the build was given up meanwhile."""
        policy = self.index_policy
        deadline = time.monotonic() + policy.swap_max_wait_s
        while not build.cancelled.is_set() and not self._closing.is_set():
            now = time.monotonic()
            if now - self._last_search >= policy.swap_quiet_s or now >= deadline:
                return True
            time.sleep(min(_FLUSH_POLL_S, policy.swap_quiet_s / 4))
        return False

    def _copy_points(self, name: str, new: qe.EdgeShard, ids: list[str]) -> None:
        """Make ``new`` agree with the live shard on ``ids`` (under the lock)."""
        col = self._open[name]
        native_ids: list[qe.PointId] = list(ids)
        with native_errors("catch up", name):
            found = col.shard.retrieve(native_ids, True, True)
            points = [qe.Point(r.id, r.vector or {}, r.payload or {}) for r in found]
            if points:
                new.update(qe.UpdateOperation.upsert_points(points))
            gone = set(ids) - {str(r.id) for r in found}
            if gone:
                new.update(qe.UpdateOperation.delete_points(list(gone)))

    def _touched(self, collection: str, ids: Sequence[str]) -> None:
        """Record written ids for a build in flight (under the lock, with the write)."""
        if self._builds:
            build = self._builds.get(self._aliases.get(collection, collection))
            if build is not None:
                build.touched.update(ids)

    def _cancel_build(self, name: str) -> None:
        build = self._builds.pop(name, None)
        if build is not None:
            build.cancelled.set()
            logger.info("index build of %s given up", name)

    def _maintain_loop(self) -> None:
        """Build the index of every open collection that the policy says is due."""
        while not self._closing.wait(self.index_policy.check_interval_s):
            for name in self._due():
                if self._closing.is_set():
                    return
                try:
                    self.build_index(name)
                except ClipsearchError:
                    logger.exception("index build of %s failed", name)

    def _due(self) -> list[str]:
        with self._lock:
            if self._lock_fd is None:
                return []
            due = []
            for name, col in self._open.items():
                try:
                    points = int(col.shard.info().points_count)
                except Exception:
                    logger.exception("reading the size of %s failed", name)
                    continue
                if self.index_policy.due(points, col.indexed):
                    due.append(name)
            return due

    def list_collections(self) -> list[str]:
        with self._lock:
            self._check_open()
            return sorted(p.parent.name for p in self._root.glob(f"*/{_META_FILE}"))

    def vector_dims(self, name: str) -> dict[str, int]:
        with self._lock:
            return dict(self._require(name).dims)

    def aliases(self) -> dict[str, str]:
        # No lock (every search reads them; the lock is held through native calls): the map
        # is replaced whole on every change, never changed in place.
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
        with self._write_lock, self._lock:
            self._cancel_build(old)
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
        with self._lock:
            for build in list(self._builds.values()):
                self._cancel_build(build.collection)
        for thread in (self._flusher, self._maintainer):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=60)
        with self._write_lock, self._lock:
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
        with self._write_lock, self._lock:
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
            with self._write_lock, self._lock:
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
        removed = remove_leftovers(path, _META_FILE, data)
        if removed:
            logger.warning(
                "collection %s: removed %s left by an unfinished index build", name, removed
            )
        folder = shard_dir(path, data)
        with native_errors("load collection", name):
            shard = qe.EdgeShard.load(str(folder))
        indexed = int((data.get("index") or {}).get("points", 0))
        col = self._open[name] = _Collection(shard, dims, multi, folder, indexed)
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
