"""The in-process job runner: the embedded default when no broker is configured.

Jobs run one at a time on a single thread, calling the same pipeline functions as the Celery
tasks. Each job's record is a JSON file under ``<data_dir>/jobs``, rewritten atomically (and
flushed to disk, ``indexer.jobs.records``) as it progresses, so a restart still answers for old
jobs; jobs that were running when the process died are marked ``interrupted``.

``retry`` resumes an interrupted, failed or cancelled job under its own id (``attempt`` counts
the runs): it reads the source again and skips every item whose point is already stored with
the same content sha256 (counted ``done`` and ``skipped``), so nothing finished is embedded
twice. ``retry-failed`` is different: a new job over the failed entries alone.
"""

from __future__ import annotations

import functools
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from indexer.distributed.lookups import indexed_matches
from indexer.jobs.records import (
    RecordFiles,
    job_collection,
    new_job_record,
    newest_first,
    now_iso,
)
from indexer.pipeline.batching import WriteBuffer, chunked, prefetch
from indexer.pipeline.entries import EntryOutcome, SkipCheck, entry_points
from indexer.pipeline.patience import patient
from indexer.sources.datasets import is_dataset, open_dataset, read_unit, unit_name
from indexer.sources.objects import ReadMetrics
from indexer.sources.read import SourceEntry, SourceError, iter_source
from indexer.sources.roots import resolve_local_dir
from service.clients.base import EmbeddingClient
from service.core.config import Settings
from service.core.contract import CollectionSettings, check_settings
from service.core.domain import Point
from service.core.errors import ClipsearchError, ErrorType, invalid, not_found
from service.core.schemas.sources import SourceSpec
from service.items.chunking import MAX_CHUNKS
from service.items.fetch import Fetcher
from service.store.base import VectorStore

log = logging.getLogger(__name__)

# "ingest_directory" is the foundation's name for a directory source; both take a SourceSpec.
JOB_KINDS = frozenset({"ingest", "ingest_directory"})
RESUMABLE = frozenset({"interrupted", "failed", "cancelled"})
BATCH_SIZE = 64
# Batches read and embedded ahead of the one being written (indexer.pipeline.batching.prefetch);
# points are written once this many are held, or the oldest has waited this long (WriteBuffer).
PREFETCH_BATCHES = 2
WRITE_POINTS = 512
WRITE_AGE_S = 1.0
MAX_ERRORS_KEPT = 1000


class InProcessJobQueue:
    def __init__(
        self,
        *,
        settings: Settings,
        embedder: EmbeddingClient,
        store: VectorStore,
        read_metrics: ReadMetrics | None = None,
    ) -> None:
        self._settings = settings
        # Dataset units and bytes read (``clipsearch_ingest_*_read_total`` on /metrics).
        self.read_metrics = read_metrics or ReadMetrics()
        # A busy encoder (searches go first) makes bulk calls wait, not jobs fail.
        self._embedder = patient(embedder, settings.encoder.bulk_patience_s)
        self._store = store
        self._files = RecordFiles(settings.data_dir / "jobs", "job")
        self._lock = threading.Lock()
        self._jobs: dict[str, dict[str, Any]] = {}
        self._pending: queue.Queue[str | None] = queue.Queue(maxsize=1000)
        self._cancelled: set[str] = set()
        self._crashed: BaseException | None = None
        self._load_existing()
        self._thread = threading.Thread(target=self._run, name="job-runner", daemon=True)
        self._thread.start()

    # -- JobQueue protocol -------------------------------------------------------------------
    def submit(self, kind: str, params: dict[str, Any]) -> str:
        """``params``: ``source``, and ``collection`` (default: the configured one), which the
        caller has checked exists."""
        if kind not in JOB_KINDS:
            raise invalid(f"unknown job kind {kind!r}")
        collection = str(params.get("collection") or self._settings.collection)
        self._check_settings(collection)
        try:
            spec = SourceSpec.model_validate(params.get("source", ""))
        except ValidationError as exc:
            raise invalid(f"bad source: {exc.errors()[0]['msg']}") from exc
        # A wrong source is refused now, before a job exists (a dataset's table is opened to
        # check its columns).
        if is_dataset(spec):
            open_dataset(spec, self._settings)
        else:
            iter_source(spec, self._settings)
        if spec.directory is not None:
            root = resolve_local_dir(spec.directory, self._settings.sources.allowed_roots)
            spec = SourceSpec(directory=str(root))
        job_id = uuid.uuid4().hex
        source = spec.model_dump(exclude_none=True)
        record = new_job_record(job_id, source, collection)
        with self._lock:
            self._jobs[job_id] = record
            self._persist(record)
        self._enqueue(job_id)
        return job_id

    def _check_settings(self, collection: str) -> None:
        """Refuse a job (conflict) while this gateway's settings disagree with those the
        collection records: a reindex onto other settings was promoted since it started, and
        it must be restarted with them before it segments anything more."""
        metadata_of = getattr(self._store, "metadata_of", None)
        if metadata_of is None:
            return
        try:
            version, metadata = metadata_of(collection)
        except ClipsearchError as exc:
            if exc.type is ErrorType.not_found:
                return
            raise
        here = CollectionSettings.of(self._settings, bundle=None, max_chunks=MAX_CHUNKS)
        recorded = CollectionSettings.from_metadata(metadata)
        check_settings(collection, recorded, here, where="in this gateway", version=version)

    def status(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            record = self._jobs.get(job_id)
            if record is None:
                raise not_found(f"no job {job_id!r}")
            return _shown(record)

    def list_jobs(
        self, *, limit: int, offset: int, where: Callable[[str | None], bool] | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        with self._lock:
            ordered = newest_first(list(self._jobs.values()))
            if where is not None:
                ordered = [r for r in ordered if where(job_collection(r))]
            page = [_shown(r) for r in ordered[offset : offset + limit]]
        return page, len(ordered)

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Stop a queued or running job (between batches); what is indexed stays indexed."""
        with self._lock:
            record = self._jobs.get(job_id)
            if record is None:
                raise not_found(f"no job {job_id!r}")
            if record["state"] not in ("queued", "running"):
                raise ClipsearchError(
                    ErrorType.conflict, f"job {job_id} is {record['state']}; nothing to cancel"
                )
            self._cancelled.add(job_id)
            if record["state"] == "queued":
                record.update(state="cancelled", updated_at=now_iso())
                self._persist(record)
        return self.status(job_id)

    def retry_failed(self, job_id: str) -> str:
        """A new job over this job's failed entries (lines that could not even be read are not
        retried: the source itself must be fixed)."""
        record = self.status(job_id)
        if record["state"] in ("queued", "running"):
            raise ClipsearchError(ErrorType.conflict, f"job {job_id} is still {record['state']}")
        entries = record.get("failed_entries") or []
        if not entries:
            raise invalid(f"job {job_id} has no failed entries to retry")
        source = {"manifest_lines": entries}
        return self.submit("ingest", {"source": source, "collection": record["collection"]})

    def retry(self, job_id: str) -> str:
        """Run an interrupted, failed or cancelled job again under the same id, skipping what
        is already indexed with the same content; returns the id."""
        self._check_settings(job_collection(self.status(job_id)) or self._settings.collection)
        with self._lock:
            record = self._jobs.get(job_id)
            if record is None:
                raise not_found(f"no job {job_id!r}")
            if record["state"] not in RESUMABLE:
                raise ClipsearchError(
                    ErrorType.conflict,
                    f"job {job_id} is {record['state']}; only {sorted(RESUMABLE)} jobs resume",
                )
            for stale in ("error", "rate_per_s", "eta_s", "finished_at"):
                record.pop(stale, None)
            record.update(
                state="queued",
                resume=True,
                attempt=int(record.get("attempt", 1)) + 1,
                done=0,
                failed=0,
                skipped=0,
                errors=[],
                failed_entries=[],
                resumed_at=now_iso(),
                updated_at=now_iso(),
            )
            self._cancelled.discard(job_id)
            self._persist(record)
        self._enqueue(job_id)
        return job_id

    def ready(self) -> bool:
        return self._crashed is None and self._thread.is_alive()

    def close(self) -> None:
        self._pending.put(None)
        self._thread.join(timeout=30)

    # -- internals ---------------------------------------------------------------------------
    def _enqueue(self, job_id: str) -> None:
        try:
            self._pending.put_nowait(job_id)
        except queue.Full:
            self._update(job_id, state="failed", error="job queue is full")
            raise ClipsearchError(
                ErrorType.overloaded, "too many queued jobs", retry_after_s=5
            ) from None

    def _exists(self, collection: str) -> bool:
        try:
            self._store.count(collection)
        except ClipsearchError as exc:
            if exc.type is ErrorType.not_found:
                return False
            raise
        return True

    def _load_existing(self) -> None:
        for record in self._files.load_all():
            if record.get("state") in {"queued", "running"}:
                record["state"] = "interrupted"
                self._persist(record)
            self._jobs[record["id"]] = record

    def _persist(self, record: dict[str, Any]) -> None:
        self._files.write(record)

    def _update(self, job_id: str, *, error: str | None = None, **fields: Any) -> None:
        with self._lock:
            record = self._jobs[job_id]
            record.update(fields, updated_at=now_iso())
            if error:
                record["error"] = error
            self._persist(record)

    def _run(self) -> None:
        try:
            while (job_id := self._pending.get()) is not None:
                try:
                    self._run_job(job_id)
                except Exception as exc:  # a job's failure must not stop the runner
                    log.exception("job %s failed", job_id)
                    self._update(job_id, state="failed", error=str(exc))
        except BaseException as exc:  # the runner itself died: readiness must say so
            self._crashed = exc
            log.exception("job runner crashed")
            raise

    def _run_job(self, job_id: str) -> None:
        record = self.status(job_id)
        # Cancelled while queued, or queued twice (cancelled, then resumed): run it once.
        if record["state"] != "queued":
            return
        source = record["params"]["source"]
        # Records of the foundation's jobs hold a bare directory path.
        spec = SourceSpec.model_validate(source)
        collection = record["params"]["collection"]
        if not self._exists(collection):
            # Deleted since the job was accepted: nothing to write to, nothing read.
            self._update(
                job_id,
                state="failed",
                finished_at=now_iso(),
                error=f"collection {collection!r} does not exist (deleted after this job was "
                "submitted): nothing was indexed",
            )
            return
        self._update(job_id, state="running", started_at=now_iso())
        fetcher = Fetcher(self._settings)
        try:
            self._index(job_id, record, spec, fetcher)
        finally:
            fetcher.close()

    def _index(
        self, job_id: str, record: dict[str, Any], spec: SourceSpec, fetcher: Fetcher
    ) -> None:
        entries: Iterable[SourceEntry]
        if is_dataset(spec):
            tally, entries = self._dataset_entries(job_id, record, spec, fetcher)
        else:
            reads = list(iter_source(spec, self._settings))
            entries = [r for r in reads if isinstance(r, SourceEntry)]
            unreadable = [
                {"item": r.item, "reason": r.reason} for r in reads if isinstance(r, SourceError)
            ]
            tally = _Tally(total=len(reads), failed=len(unreadable))
            self._keep_errors(job_id, unreadable)
            self._update(job_id, total=tally.total, failed=tally.failed)
        collection = record["params"]["collection"]
        # A resumed job skips what is stored with the same content; a new one writes all.
        skip: SkipCheck | None = None
        if record.get("resume"):
            skip = functools.partial(indexed_matches, self._store, collection)

        # The next batches load and embed while earlier ones are written; items count as done
        # only once their points are upserted. A cancel starts no more batches; the ones in
        # the encoder already are finished and written.
        writes: WriteBuffer[Written] = WriteBuffer(
            functools.partial(self._store.upsert, collection),
            max_points=WRITE_POINTS,
            max_age_s=WRITE_AGE_S,
        )
        with closing(self._load_ahead(job_id, entries, collection, fetcher, skip)) as ahead:
            for batch, (points, outcomes) in ahead:
                self._count(
                    job_id, tally, writes.add(points, list(zip(batch, outcomes, strict=True)))
                )
        self._count(job_id, tally, writes.flush())
        unread = tally.finished < tally.total or not tally.all_read
        if job_id in self._cancelled and unread:
            self._update(job_id, state="cancelled", finished_at=now_iso())
            log.info("job %s cancelled after %d items", job_id, tally.finished)
            return
        self._update(job_id, state="completed", eta_s=0.0, finished_at=now_iso())
        log.info(
            "job %s completed: %d indexed (%d already were), %d failed",
            job_id,
            tally.done,
            tally.skipped,
            tally.failed,
        )

    def _dataset_entries(
        self, job_id: str, record: dict[str, Any], spec: SourceSpec, fetcher: Fetcher
    ) -> tuple[_Tally, Iterator[SourceEntry]]:
        """A dataset's entries, streamed unit by unit (``indexer.sources.datasets``): the total
        is the files' own count where they state it (parquet), else the items read so far
        (``total_known`` false until every shard is read); each unreadable item counts failed
        as it is met. Nothing is held but the batches in flight. A unit whose every item is
        written is kept in the record (``units_finished``): a resumed job does not read it
        again, and counts its items as they were (done ones as skipped)."""
        dataset = open_dataset(spec, self._settings, fetcher=fetcher)
        known = dataset.known_items
        before = record.get("units_finished") or [] if record.get("resume") else []
        units = _Units(finished=[list(u) for u in before])
        tally = _Tally(total=known or 0, failed=0, all_read=False, units=units)
        self._update(
            job_id,
            total=tally.total,
            total_known=known is not None,
            shards_total=len(dataset.units),
            shards_done=len(units.finished),
            shards_read=0,
            units_finished=units.finished,
        )

        def entries() -> Iterator[SourceEntry]:
            reads = 0
            # By name (the shard, the row group, the lines): a source planned otherwise this
            # time (a pattern naming other shards, a manifest rewritten) is read again.
            finished = {str(u[3]): (int(u[1]), int(u[2])) for u in units.finished if len(u) > 3}
            for index, unit in enumerate(dataset.units):
                if job_id in self._cancelled:
                    return
                name = unit_name(unit)
                if name in finished:  # every item written by an earlier attempt
                    done, failed = finished.pop(name)
                    reads += done + failed
                    tally.done += done
                    tally.skipped += done
                    tally.failed += failed
                else:
                    units.start(index, name)
                    reader = read_unit(
                        dataset, unit, self._settings, fetcher=fetcher, metrics=self.read_metrics
                    )
                    for read in reader:
                        reads += 1
                        tally.total = max(tally.total, reads)
                        if isinstance(read, SourceError):
                            tally.failed += 1
                            units.counts[index][1] += 1
                            self._keep_errors(job_id, [{"item": read.item, "reason": read.reason}])
                            continue
                        units.handed(index, read)
                        yield read
                    units.shards_read += 1
                    units.read_to_end(index)
                last = index == len(dataset.units) - 1
                tally.total = max(tally.total, reads)
                if last:  # every unit read: the total is what was read
                    tally.total, tally.all_read = reads, True
                self._update(
                    job_id,
                    shards_done=len(units.finished),
                    shards_read=units.shards_read,
                    units_finished=units.finished,
                    total=tally.total,
                    total_known=known is not None or last,
                    failed=tally.failed,
                )

        return tally, entries()

    def _load_ahead(
        self,
        job_id: str,
        entries: Iterable[SourceEntry],
        collection: str,
        fetcher: Fetcher,
        skip: SkipCheck | None,
    ) -> Generator[tuple[Sequence[SourceEntry], tuple[list[Point], list[EntryOutcome]]]]:
        write_bundles = getattr(self._store, "write_bundles", None)

        def load(batch: Sequence[SourceEntry]) -> tuple[list[Point], list[EntryOutcome]]:
            # Asked per batch: during a model rollout each item is embedded by both bundles.
            bundles = write_bundles(collection) if write_bundles is not None else [None]
            return entry_points(
                batch,
                embedder=self._embedder,
                collection=collection,
                settings=self._settings,
                fetcher=fetcher,
                skip=skip,
                bundles=bundles,
            )

        batches = chunked(entries, BATCH_SIZE)
        return prefetch(
            batches,
            load,
            depth=PREFETCH_BATCHES,
            name="job-load",
            stop=lambda: job_id in self._cancelled,
        )

    def _count(self, job_id: str, tally: _Tally, written: list[Written]) -> None:
        """Count entries whose points are written, keep their errors, publish the progress."""
        if not written:
            return
        errors = [{"item": o.item, "reason": o.error} for _, o in written if o.error]
        partial = [{"item": o.item, "reason": p} for _, o in written for p in o.partial]
        tally.done += len(written) - len(errors)
        tally.failed += len(errors)
        tally.skipped += sum(o.skipped for _, o in written)
        if tally.units is not None and tally.units.written(written):
            self._update(
                job_id,
                shards_done=len(tally.units.finished),
                units_finished=tally.units.finished,
            )
        self._keep_errors(job_id, errors + partial)
        # An item read from a shard cannot be sent again as a manifest line.
        again = [_entry_line(e) for e, o in written if o.error and e.data is None]
        self._keep_failed_entries(job_id, again)
        rate = tally.finished / max(time.monotonic() - tally.started, 1e-6)
        self._update(
            job_id,
            total=tally.total,
            done=tally.done,
            failed=tally.failed,
            skipped=tally.skipped,
            rate_per_s=rate,
            eta_s=(tally.total - tally.finished) / max(rate, 1e-9),
        )

    def _keep_failed_entries(self, job_id: str, entries: list[dict[str, Any]]) -> None:
        with self._lock:
            kept = self._jobs[job_id].setdefault("failed_entries", [])
            kept.extend(entries[: max(0, MAX_ERRORS_KEPT - len(kept))])

    def _keep_errors(self, job_id: str, errors: list[dict[str, Any]]) -> None:
        with self._lock:
            kept = self._jobs[job_id]["errors"]
            kept.extend(errors[: max(0, MAX_ERRORS_KEPT - len(kept))])


def _shown(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of a record as ``status`` gives it, with its collection (older records: in their
    ``params`` only)."""
    shown: dict[str, Any] = json.loads(json.dumps(record))
    shown["collection"] = job_collection(record)
    return shown


# An entry and its outcome, once its points are written.
Written = tuple[SourceEntry, EntryOutcome]


@dataclass
class _Tally:
    """A running job's counts."""

    total: int
    failed: int
    done: int = 0
    skipped: int = 0
    started: float = field(default_factory=time.monotonic)
    all_read: bool = True  # a dataset's: false until its last unit is read
    units: _Units | None = None  # a dataset's

    @property
    def finished(self) -> int:
        return self.done + self.failed


@dataclass
class _Units:
    """A dataset job's units (shards, row ranges): which are read to their end, and which have
    every item written (``finished``: ``[index, done, failed, name]`` each, kept in the job's record
    so that a resumed job reads only the others)."""

    finished: list[list[Any]]  # [index, done, failed, name]
    counts: dict[int, list[int]] = field(default_factory=dict)  # unit → [done, failed]
    names: dict[int, str] = field(default_factory=dict)
    shards_read: int = 0  # by this attempt
    _pending: dict[int, int] = field(default_factory=dict)  # unit → entries not yet written
    _read: set[int] = field(default_factory=set)
    _unit_of: dict[int, int] = field(default_factory=dict)  # id(entry) → unit

    def start(self, unit: int, name: str) -> None:
        self.names[unit] = name
        self.counts[unit] = [0, 0]
        self._pending[unit] = 0

    def handed(self, unit: int, entry: SourceEntry) -> None:
        self._unit_of[id(entry)] = unit
        self._pending[unit] += 1

    def read_to_end(self, unit: int) -> bool:
        self._read.add(unit)
        return self._close(unit)

    def written(self, written: list[Written]) -> bool:
        """Count written entries to their units; whether a unit finished."""
        closed = False
        for entry, outcome in written:
            unit = self._unit_of.pop(id(entry), None)
            if unit is None:
                continue
            self._pending[unit] -= 1
            self.counts[unit][1 if outcome.error else 0] += 1
            closed |= self._close(unit)
        return closed

    def _close(self, unit: int) -> bool:
        if unit not in self._read or self._pending.get(unit):
            return False
        self._read.discard(unit)
        self.finished.append([unit, *self.counts.pop(unit), self.names.pop(unit)])
        return True


def _entry_line(entry: SourceEntry) -> dict[str, Any]:
    """A failed entry as a manifest line, so ``retry-failed`` can submit it again as it was."""
    line: dict[str, Any] = {"id": entry.id}
    for key in ("uri", "caption", "description"):
        if getattr(entry, key) is not None:
            line[key] = getattr(entry, key)
    if entry.metadata:
        line["metadata"] = dict(entry.metadata)
    return line
