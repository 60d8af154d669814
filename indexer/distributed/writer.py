"""The writer: points streams in, large store upserts out, acknowledged only after the write.

One thread reads the collections' points streams as a member of the ``writers`` consumer group,
upserts the points in batches of up to ``writer_max_points``, then counts the entries' items in
their jobs and acknowledges the entries in one Redis transaction. A crash anywhere before that
transaction leaves the entries pending: this writer re-reads them (its own pending list) and
another writer takes them over with XAUTOCLAIM once they have been idle ``claim_idle_ms``.
Point ids are deterministic, so writing an entry twice is harmless, and progress counts each
item once.

What goes wrong and what the writer does:

* the store refuses an entry's points (bad input): that entry's items fail with the reason,
  the rest of the batch is written;
* the store or Redis is unavailable: nothing is acknowledged, ``ready()`` turns false with the
  reason, and the writer retries with backoff until it works again;
* the loop itself dies (a bug): ``ready()`` stays false with the crash; nothing is lost, the
  entries wait in Redis for the next writer.

Beside the loop, a :class:`~indexer.distributed.lookups.LookupServer` answers resumed jobs' tasks
which of their items the store already holds with the same content hash (the writer is the one
process sure to hold the store).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from indexer.distributed.lookups import LookupServer
from indexer.distributed.stream import WRITER_GROUP, PointStream, StreamEntry
from indexer.pipeline.thumbnails import write_thumbnail
from service.core.config import Settings
from service.core.domain import Point
from service.core.errors import ClipsearchError, ErrorType
from service.store.base import VectorStore

log = logging.getLogger(__name__)

# Store refusals that a retry would meet again: the entry's items fail instead.
PERMANENT = frozenset(
    {
        ErrorType.invalid_input,
        ErrorType.unsupported_media,
        ErrorType.payload_too_large,
        ErrorType.conflict,
    }
)
MAX_BACKOFF_S = 5.0


@dataclass(frozen=True)
class WriterHealth:
    ready: bool
    reason: str | None = None


class Writer:
    """Starts its thread at once; ``close()`` stops it after the batch in hand."""

    def __init__(
        self,
        redis_url: str,
        store: VectorStore,
        settings: Settings,
        *,
        collections: Sequence[str] | None = None,
        consumer: str | None = None,
        group: str = WRITER_GROUP,
    ) -> None:
        self.settings = settings.broker
        self.store = store
        self.data_dir = settings.data_dir  # video thumbnails from the stream go under it
        # A tuple, replaced whole by add_collection: the loop reads it without a lock.
        self.collections: tuple[str, ...] = tuple(collections or [settings.collection])
        # The host name by default: a restarted writer on the same host re-reads what it held
        # at once instead of waiting claim_idle_ms for XAUTOCLAIM.
        self.consumer = consumer or socket.gethostname()
        self.group = group
        self.stream = PointStream(redis_url, self.settings)
        self.written = 0  # points upserted, for logs and tests
        self._stop = threading.Event()
        self._crashed: BaseException | None = None
        self._trouble: str | None = "starting"
        self._thread = threading.Thread(target=self._run, name="points-writer", daemon=True)
        self._thread.start()
        self.lookups = LookupServer(self.stream.redis, store)

    def ready(self) -> bool:
        return self.health().ready

    def add_collection(self, name: str) -> None:
        """Also write ``name``'s points stream (a reindex builds a new collection version)."""
        if name not in self.collections:
            self.collections = (*self.collections, name)

    @property
    def crashed(self) -> BaseException | None:
        return self._crashed or self.lookups.crashed

    def health(self) -> WriterHealth:
        if self._crashed is not None:
            return WriterHealth(False, f"the writer loop crashed: {self._crashed!r}")
        if not self._thread.is_alive():
            return WriterHealth(False, "the writer is stopped")
        if self.lookups.crashed is not None:
            return WriterHealth(False, f"the lookup server crashed: {self.lookups.crashed!r}")
        if self._trouble:
            return WriterHealth(False, self._trouble)
        return WriterHealth(True)

    def close(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        self.lookups.close()
        self._thread.join(timeout=timeout_s)
        if self._thread.is_alive():
            log.warning("the writer did not stop within %.0f s", timeout_s)
        self.stream.close()

    # -- the loop ------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            backoff = 0.0
            ensured: tuple[str, ...] = ()
            next_claim = 0.0
            while not self._stop.is_set():
                if backoff and self._stop.wait(backoff):
                    break
                try:
                    if ensured != self.collections:
                        wanted = self.collections
                        for collection in wanted:
                            self.stream.ensure_group(collection, self.group)
                        ensured = wanted
                        next_claim = 0.0  # a new stream may hold entries a dead writer left
                    if time.monotonic() >= next_claim:
                        self._process(self._claim(ensured))
                        next_claim = time.monotonic() + self.settings.claim_idle_ms / 2000
                    ok = self._step(ensured)
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    ok = self._troubled(f"Redis is unreachable: {exc}")
                except redis.ResponseError as exc:
                    if "NOGROUP" not in str(exc):
                        raise
                    # Redis lost the stream (restarted without persistence): make it again.
                    ensured = ()
                    ok = self._troubled(f"consumer group missing: {exc}")
                backoff = 0.0 if ok else min(MAX_BACKOFF_S, max(0.1, backoff * 2))
        except BaseException as exc:  # the loop died: readiness says so, for good
            self._crashed = exc
            # Logged here with its traceback; the thread then ends (re-raising would only print
            # it a second time through threading.excepthook).
            log.exception("the points writer crashed")

    def _claim(self, collections: Sequence[str]) -> list[StreamEntry]:
        claimed: list[StreamEntry] = []
        for collection in collections:
            claimed += self.stream.autoclaim(
                collection, self.group, self.consumer, min_idle_ms=self.settings.claim_idle_ms
            )
        if claimed:
            log.info("took over %d stream entries from writers that went away", len(claimed))
        return claimed

    def _step(self, collections: Sequence[str]) -> bool:
        """One batch: what this writer still holds (a failed write, a claim), else new entries."""
        count = self.settings.writer_max_entries
        entries = self.stream.read_pending(collections, self.group, self.consumer, count=count)
        if not entries:
            entries = self.stream.read(
                collections,
                self.group,
                self.consumer,
                count=count,
                block_ms=self.settings.writer_block_ms,
            )
        ok = self._process(entries)
        if ok:
            self._trouble = None
        return ok

    def _process(self, entries: Sequence[StreamEntry]) -> bool:
        """Write and acknowledge; False if some entries stay pending for a retry."""
        ok = True
        seen: set[tuple[str, str]] = set()
        unique = []
        for e in entries:
            if (e.collection, e.id) not in seen:
                seen.add((e.collection, e.id))
                unique.append(e)
        for collection in dict.fromkeys(e.collection for e in unique):
            batch = [e for e in unique if e.collection == collection]
            for chunk in _chunks(batch, self.settings.writer_max_points):
                ok = self._write(collection, chunk) and ok
        return ok

    def _write(self, collection: str, chunk: list[StreamEntry]) -> bool:
        readable = [e for e in chunk if not e.problem]
        try:
            self._save_thumbnails(readable)
            self._upsert(collection, [p for e in readable for p in e.points])
        except Exception as exc:  # one bad entry must not block the batch
            log.warning(
                "upsert of %d entries failed (%s): writing them one by one", len(chunk), exc
            )
            return self._write_one_by_one(collection, chunk)
        for e in chunk:
            if e.problem:
                log.error("stream entry %s (job %s): %s", e.id, e.job_id, e.problem)
        self.stream.complete(self.group, chunk)
        return True

    def _write_one_by_one(self, collection: str, chunk: list[StreamEntry]) -> bool:
        done: list[StreamEntry] = []
        refused: dict[str, str] = {}
        trouble = None
        for e in chunk:
            try:
                self._save_thumbnails([e])
                self._upsert(collection, e.points)
                done.append(e)
            except ClipsearchError as exc:
                if exc.type not in PERMANENT:
                    trouble = f"the store cannot write: {exc.message}"
                    continue
                log.error("store refused entry %s of job %s: %s", e.id, e.job_id, exc.message)
                refused[e.id] = f"the store refused it: {exc.message}"
                done.append(e)
            except Exception as exc:  # the store is down: keep the entry pending
                trouble = f"the store cannot write: {exc}"
        if done:
            self.stream.complete(self.group, done, refused)
        return trouble is None or self._troubled(trouble)

    def _save_thumbnails(self, entries: Sequence[StreamEntry]) -> None:
        """Before the points that name them, so a point found by search has its thumbnail. A
        disk that cannot take them fails the write like the store would (kept pending); a path
        that is no thumbnail path is refused (ClipsearchError invalid: the entry alone)."""
        for e in entries:
            for path, data in e.thumbnails.items():
                write_thumbnail(self.data_dir, path, data)

    def _upsert(self, collection: str, points: list[Point]) -> None:
        if not points:
            return
        # A task delivered twice may put the same point in one batch twice: keep the last.
        by_id = {p.id: p for p in points}
        self.store.upsert(collection, list(by_id.values()))
        self.written += len(by_id)

    def _troubled(self, reason: str) -> bool:
        if reason != self._trouble:
            log.warning("points writer: %s", reason)
        self._trouble = reason
        return False


def _chunks(entries: list[StreamEntry], max_points: int) -> list[list[StreamEntry]]:
    """Consecutive groups of at most ``max_points`` points (an entry larger than that alone)."""
    chunks: list[list[StreamEntry]] = []
    size = 0
    for e in entries:
        if chunks and size + len(e.points) <= max_points:
            chunks[-1].append(e)
            size += len(e.points)
        else:
            chunks.append([e])
            size = len(e.points)
    return chunks


def run_writer(settings: Settings, *, stop: threading.Event | None = None) -> int:
    """``clipsearch writer``: the writer as its own process, until SIGTERM/SIGINT or ``stop``.

    Returns 0 on a requested stop, 1 when the loop crashed (so a supervisor restarts it).
    """
    import signal

    from service.store.factory import open_store

    if not settings.broker.url:
        raise ClipsearchError(
            ErrorType.invalid_input, "the writer needs a broker: set CLIPSEARCH_BROKER__URL"
        )
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    store = open_store(settings)
    writer = Writer(settings.broker.url, store, settings)
    try:
        # The loop has no event for "crashed"; a slow check of it is enough for a process exit.
        while not stop.wait(1.0):
            if writer.crashed is not None:
                log.error("stopping: %s", writer.health().reason)
                return 1
        return 0
    finally:
        writer.close()
        store.close()
