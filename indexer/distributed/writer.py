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

Handing over (a writer that cannot write must not sit on its entries):

* after ``writer_max_failures`` write attempts in a row left entries pending, the writer stops
  claiming and reading (it reports unhealthy, with the reason). Untouched, its entries go idle
  and a healthy writer takes them with XAUTOCLAIM after ``claim_idle_ms``. It rests twice that
  long, then asks its store whether every collection it writes answers (a writer started with
  another data dir than the gateway's finds none) and tries again only if they do. With no
  other writer active to hand over to (a lone writer whose Qdrant restarts), resting would only
  delay: it asks its store every few seconds instead and goes on as soon as it answers;
* an entry delivered more than ``writer_max_deliveries`` times (read, re-read after a failed
  write, or claimed) is given up: it goes to the collection's dead-letter stream and its items
  count failed in their job with the reason (``stream.py``), so the job completes;
* every claim pass also removes consumers idle longer than ``writer_forget_idle_ms`` that hold
  nothing (a dead writer's entries are claimed away first): dead consumers leave the group.

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
from indexer.distributed.probes import ProbeServer, WriterMetrics
from indexer.distributed.stream import WRITER_GROUP, DeadLetter, PointStream, StreamEntry
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
# Reasons kept per pending entry for its dead letter (cleared on acknowledgement).
_MAX_REASONS_KEPT = 10_000


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
        metrics: WriterMetrics | None = None,
    ) -> None:
        self.settings = settings.broker
        self.store = store
        self.data_dir = settings.data_dir  # video thumbnails from the stream go under it
        # A tuple, replaced whole by add_collection: the loop reads it without a lock.
        self.collections: tuple[str, ...] = tuple(collections or [settings.collection])
        # The host name by default: a restarted writer on the same host re-reads what it held
        # at once instead of waiting claim_idle_ms for XAUTOCLAIM.
        self.consumer = consumer or self.settings.writer_name or socket.gethostname()
        self.group = group
        self.stream = PointStream(redis_url, self.settings)
        self.metrics = metrics or WriterMetrics()
        self.metrics.healthy.set_function(lambda: 1.0 if self.ready() else 0.0)
        self.written = 0  # points upserted, for logs and tests
        self._stop = threading.Event()
        self._crashed: BaseException | None = None
        self._trouble: str | None = "starting"
        self._failures = 0  # write attempts in a row that left entries pending
        self._sick = False  # stopped claiming: its entries pass to another writer
        self._episodes = 0  # times it stopped claiming since its last successful write
        # Untouched this long, entries are surely claimed (claim passes run every half of it).
        self.rest_s = max(0.5, 2 * self.settings.claim_idle_ms / 1000)
        self._reasons: dict[str, str] = {}  # entry id -> why its last write failed
        self._thread = threading.Thread(target=self._run, name="points-writer", daemon=True)
        self._thread.start()
        self.lookups = LookupServer(self.stream.redis, store)

    def ready(self) -> bool:
        return self.health().ready

    def add_collection(self, name: str) -> None:
        """Also write ``name``'s points stream (a reindex builds a new collection version; a
        job goes to a collection created since this writer started)."""
        if name not in self.collections:
            self.collections = (*self.collections, name)

    def _discover(self) -> None:
        """Also write the streams of collections created since (by any gateway replica), so
        that a job into one is written even where no ``add_collection`` told this writer."""
        names = getattr(self.store, "names", None)
        if names is None:
            return
        try:
            found = names()
        except Exception as exc:  # a store that does not answer: writing says so, not this
            log.debug("cannot list the store's collections: %s", exc)
            return
        for name in found:
            self.add_collection(name)

    def _gone(self, collection: str) -> bool:
        """Whether ``collection`` was deleted: the store answers for this writer's own
        collection but not for it. (A writer on the wrong data dir finds neither: that is
        trouble to hand over, not a deletion.)"""
        if collection == self.collections[0]:
            return False
        try:
            self.store.count(collection)
            return False
        except ClipsearchError as exc:
            if exc.type is not ErrorType.not_found:
                return False
        except Exception:
            return False
        try:
            self.store.count(self.collections[0])
        except Exception:
            return False
        return True

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
                    if self._sick:
                        self._rest_then_check(ensured)
                        backoff = 0.0
                        continue
                    if time.monotonic() >= next_claim:
                        self._discover()
                        ok = self._handle(self._claim(ensured), redelivered=True)
                        self._forget_idle_consumers(ensured)
                        next_claim = time.monotonic() + self.settings.claim_idle_ms / 2000
                        if not ok:
                            backoff = min(MAX_BACKOFF_S, max(0.1, backoff * 2))
                            continue
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
            self.metrics.claimed.inc(len(claimed))
            log.info("took over %d stream entries from writers that went away", len(claimed))
        return claimed

    def _forget_idle_consumers(self, collections: Sequence[str]) -> None:
        for collection in collections:
            gone = self.stream.forget_idle_consumers(
                collection, self.group, self.consumer, idle_ms=self.settings.writer_forget_idle_ms
            )
            if gone:
                self.metrics.consumers_forgotten.inc(len(gone))
                log.info("removed idle writers %s from the group of %s", gone, collection)

    def _step(self, collections: Sequence[str]) -> bool:
        """One batch: what this writer still holds (a failed write, a claim), else new entries."""
        count = self.settings.writer_max_entries
        entries = self.stream.read_pending(collections, self.group, self.consumer, count=count)
        if entries:
            return self._handle(entries, redelivered=True)
        entries = self.stream.read(
            collections,
            self.group,
            self.consumer,
            count=count,
            block_ms=self.settings.writer_block_ms,
        )
        if not entries:  # nothing held and nothing new: idle, not failing
            self._trouble = None
            return True
        return self._handle(entries, redelivered=False)

    def _handle(self, entries: Sequence[StreamEntry], *, redelivered: bool) -> bool:
        """Write ``entries`` (those delivered too often go to the dead letters) and keep the
        count of failed attempts in a row; False if some stay pending."""
        if redelivered:
            entries = self._dead_letter_spent(entries)
        if not entries:  # nothing tried: says nothing about the store
            return True
        ok = self._process(entries)
        if ok:
            self._failures = self._episodes = 0
            self._trouble = None
            return True
        self._failures += 1
        self.metrics.write_failures.inc()
        if self._failures >= self.settings.writer_max_failures:
            self._sick = True
            self._troubled(
                f"stopped claiming after {self._failures} failed writes in a row ({self._trouble}):"
                " its entries pass to another writer; it tries again once its store answers"
                f" and, while another writer is active, {self.rest_s:g} s have passed"
            )
        return False

    def _dead_letter_spent(self, entries: Sequence[StreamEntry]) -> list[StreamEntry]:
        """Give up the entries delivered more than ``writer_max_deliveries`` times; returns
        the others."""
        limit = self.settings.writer_max_deliveries
        spent: dict[str, DeadLetter] = {}
        for collection in dict.fromkeys(e.collection for e in entries):
            ids = [e.id for e in entries if e.collection == collection]
            for eid, n in self.stream.deliveries(collection, self.group, ids).items():
                if n > limit:
                    last = self._reasons.get(eid) or "the write kept failing on other writers"
                    reason = f"not written after {n} deliveries: {last}"
                    spent[eid] = DeadLetter(reason, n, self.consumer)
        if not spent:
            return list(entries)
        given_up = [e for e in entries if e.id in spent]
        for e in given_up:
            log.error("stream entry %s (job %s) to the dead letters: %s", e.id, e.job_id,
                      spent[e.id].reason)  # fmt: skip
        self.stream.complete(self.group, given_up, dead=spent)
        self.metrics.entries.labels("dead_letter").inc(len(given_up))
        self._forget_reasons(given_up)
        return [e for e in entries if e.id not in spent]

    def _rest_then_check(self, collections: Sequence[str]) -> None:
        """Touch no entry for ``rest_s`` (so they go idle and pass to a healthy writer), then
        try again only if the store answers for every collection this writer writes.

        With no other writer active, resting would only delay: the store is asked every few
        seconds once a shorter rest (doubling with each time it stopped since its last
        successful write) is over. Either way it goes on half-open: one more failure stops it
        again, so an entry that keeps failing gains a delivery per rest, not a burst."""
        self._episodes += 1
        short = min(self.rest_s, 0.5 * 2**self._episodes)
        start, wait = time.monotonic(), 0.5
        while True:
            if self._stop.wait(wait):
                return
            wait = min(MAX_BACKOFF_S, wait * 2)
            elapsed = time.monotonic() - start
            if elapsed < self.rest_s and (elapsed < short or self._others_active(collections)):
                continue
            if self._store_answers(collections):
                break
            if elapsed >= self.rest_s:
                return  # rest again (the loop calls back), touching nothing
        log.info("points writer %s: the store answers, writing again", self.consumer)
        self._sick = False
        self._failures = self.settings.writer_max_failures - 1

    def _others_active(self, collections: Sequence[str]) -> bool:
        """Whether another writer read or claimed lately (one to hand the entries to)."""
        within = max(5_000, 3 * self.settings.writer_block_ms)
        return any(
            self.stream.active_consumers(c, self.group, within_ms=within) - {self.consumer}
            for c in collections
        )

    def _store_answers(self, collections: Sequence[str]) -> bool:
        try:
            for collection in collections:
                if not self._gone(collection):  # a deleted one's entries are refused
                    self.store.count(collection)
        except Exception as exc:
            message = exc.message if isinstance(exc, ClipsearchError) else repr(exc)
            self._troubled(
                f"stopped claiming: the store cannot serve {collection!r} ({message}); is this "
                "writer on the same data dir or Qdrant as the gateway?"
            )
            return False
        return True

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
        self._count_entries(chunk)
        return True

    def _count_entries(self, entries: Sequence[StreamEntry], refused: Sequence[str] = ()) -> None:
        unreadable = sum(1 for e in entries if e.problem)
        self.metrics.entries.labels("unreadable").inc(unreadable)
        self.metrics.entries.labels("refused").inc(len(refused))
        self.metrics.entries.labels("written").inc(len(entries) - unreadable - len(refused))
        self._forget_reasons(entries)

    def _forget_reasons(self, entries: Sequence[StreamEntry]) -> None:
        for e in entries:
            self._reasons.pop(e.id, None)

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
                if exc.type is ErrorType.not_found and self._gone(collection):
                    log.error("entry %s of job %s: %s is deleted", e.id, e.job_id, collection)
                    refused[e.id] = (
                        f"collection {collection!r} does not exist (deleted after the job was "
                        "submitted)"
                    )
                    done.append(e)
                    continue
                if exc.type not in PERMANENT:
                    trouble = f"the store cannot write: {exc.message}"
                    self._keep_reason(e.id, trouble)
                    continue
                log.error("store refused entry %s of job %s: %s", e.id, e.job_id, exc.message)
                refused[e.id] = f"the store refused it: {exc.message}"
                done.append(e)
            except Exception as exc:  # the store is down: keep the entry pending
                trouble = f"the store cannot write: {exc}"
                self._keep_reason(e.id, trouble)
        if done:
            self.stream.complete(self.group, done, refused)
            self._count_entries(done, list(refused))
        return trouble is None or self._troubled(trouble)

    def _keep_reason(self, entry_id: str, reason: str) -> None:
        if len(self._reasons) >= _MAX_REASONS_KEPT:
            self._reasons.clear()  # only dead letters' wording suffers
        self._reasons[entry_id] = reason

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
        # A task delivered twice may put the same point in one batch twice: keep the last. An
        # item has one point per bundle during a model rollout (the same id, its bundle in
        # ``model``): all are kept, and the store routes each to its bundle's version.
        by_id = {(p.id, p.payload.get("model")): p for p in points}
        self.store.upsert(collection, list(by_id.values()))
        self.written += len(by_id)
        self.metrics.points_upserted.inc(len(by_id))

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


def run_writer(
    settings: Settings, *, stop: threading.Event | None = None, probe_port: int | None = None
) -> int:
    """``clipsearch writer``: the writer as its own process, until SIGTERM/SIGINT or ``stop``;
    with a probe port (``probe_port``, else ``broker.probe_port``; 0 = none) it serves
    ``/health/live``, ``/health/ready`` and ``/metrics`` there.

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
    port = settings.broker.probe_port if probe_port is None else probe_port
    probes = None
    try:
        if port:
            probes = _probes(writer, settings.broker.probe_host, port)
        # The loop has no event for "crashed"; a slow check of it is enough for a process exit.
        while not stop.wait(1.0):
            if writer.crashed is not None:
                log.error("stopping: %s", writer.health().reason)
                return 1
        return 0
    finally:
        if probes is not None:
            probes.close()
        writer.close()
        store.close()


def _probes(writer: Writer, host: str, port: int) -> ProbeServer:
    health = writer.health
    try:
        return ProbeServer(
            host,
            port,
            writer.metrics.registry,
            # Live while the loop runs: a writer that cannot write still recovers by itself.
            live=lambda: (writer.crashed is None, health().reason if writer.crashed else None),
            ready=lambda: (health().ready, health().reason),
        )
    except OSError as exc:
        raise ClipsearchError(
            ErrorType.invalid_input,
            f"cannot serve the writer's probes on {host}:{port}: {exc.strerror or exc} "
            "(set CLIPSEARCH_BROKER__PROBE_PORT or --probe-port to a free port)",
        ) from exc
