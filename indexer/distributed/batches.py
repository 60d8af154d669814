"""What one Celery indexing task does, as plain functions (tested without Celery).

Load each entry and embed the batch on the ``bulk`` lane through ``indexer.pipeline.entries``, as
the in-process runner does (images from paths or URLs, video segments, text-only documents), and
append the points to the collection's points stream; the writer upserts them. The task never
touches job progress: items it could not load or embed travel in the stream entry's ``failed``
field, and the writer counts them together with the entry's done items, after the write. One
counting authority means that done + failed reaching the total says every item's fate is final
and durable, and that a task or an entry delivered twice counts nothing twice (point ids are
deterministic, progress goes through sets).

Every task of an attempt carries its ``run`` token and first asks the job hash whether to work
(:meth:`~indexer.distributed.progress.JobProgress.gate`): a cancelled job, a newer attempt or a job
Redis lost makes it a no-op, so queued tasks of a cancelled job cost nothing and what is indexed
stays indexed. A resumed attempt's tasks ask the writer which of their items are stored with the
same content sha256 (``indexer.distributed.lookups``) and send those as ``skipped``, unembedded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from pydantic import ValidationError

from indexer.distributed import units
from indexer.distributed.progress import item_id
from indexer.distributed.stream import PointStream
from indexer.sources.datasets import is_dataset
from indexer.sources.objects import ReadMetrics
from indexer.sources.read import SourceEntry, SourceError, iter_source, kind_of, text_entry_id
from indexer.sources.roots import how_to_allow
from service.clients.base import EmbeddingClient
from service.core.config import Settings
from service.core.errors import ClipsearchError, ErrorType, invalid
from service.core.schemas.sources import SourceSpec
from service.items.fetch import Fetcher, validate_url
from service.items.points import clean_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchOutcome:
    entry_id: str  # the points-stream entry ("" when the task did nothing)
    sent: list[str]  # items whose points went to the writer
    failed: list[dict[str, Any]]  # {"item", "reason", "entry"?}
    skipped: list[str] = field(default_factory=list)  # already indexed, same content
    stopped: str | None = None  # why the task did nothing (cancelled, another attempt)


def _local_path(uri: str, settings: Settings) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        raise invalid(f"unsupported source scheme {parsed.scheme!r}")
    path = Path(unquote(parsed.path) if parsed.scheme == "file" else uri).expanduser().resolve()
    roots = [Path(r).expanduser().resolve() for r in settings.sources.allowed_roots]
    if not roots:
        # Checked here too, not only where the job was submitted: this process reads the files.
        raise ClipsearchError(
            ErrorType.forbidden,
            f"this indexer reads no local files; {how_to_allow(path.parent, 'indexer')}",
        )
    if not any(path == root or root in path.parents for root in roots):
        raise ClipsearchError(
            ErrorType.forbidden,
            f"{uri!r} is outside the allowed roots of this indexer "
            f"({', '.join(str(r) for r in roots)}); {how_to_allow(path.parent, 'indexer')}",
        )
    return path


def source_entry(entry: Mapping[str, Any], settings: Settings) -> SourceEntry:
    """One task entry ``{"uri"?, "id"?, "caption"?, "description"?, "metadata"?}`` as a source
    entry, checked again here (a task is only JSON): a local path under this worker's allowed
    roots, an http(s) URL (its address is vetted when fetched), or no uri for a text-only entry.
    Without an ``id`` it is named as a source read names it (the file URI, the URL, the text)."""
    if not isinstance(entry, Mapping):
        raise invalid("an entry must be an object with a 'uri', a caption or a description")
    texts: dict[str, str | None] = {}
    for name in ("caption", "description"):
        if entry.get(name) is not None and not isinstance(entry[name], str):
            raise invalid(f"an entry's {name} must be a string")
        texts[name] = clean_text(entry.get(name))
    caption, description = texts["caption"], texts["description"]
    metadata = dict(entry["metadata"]) if isinstance(entry.get("metadata"), Mapping) else {}
    given = str(entry["id"]) if entry.get("id") else None
    uri = entry.get("uri")
    if uri is None or uri == "":
        if caption is None and description is None:
            raise invalid("an entry needs a 'uri', or a caption or description (text only)")
        entry_id = given or text_entry_id(caption, description)
        return SourceEntry(None, entry_id, caption, description, metadata, "text")
    if not isinstance(uri, str) or "\0" in uri:
        raise invalid("an entry's 'uri' must be a string")
    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        uri = scheme + uri[len(scheme) :]  # as SourceEntry.is_url expects it: lower case
        kind = kind_of(validate_url(uri).path)
    else:
        path = _local_path(uri, settings)
        uri, kind = path.as_uri(), kind_of(path.name)
    return SourceEntry(uri, given or uri, caption, description, metadata, kind)


def index_batch(
    job_id: str,
    collection: str,
    entries: Sequence[Mapping[str, Any]],
    *,
    embedder: EmbeddingClient,
    stream: PointStream,
    settings: Settings,
    run: str | None = None,
    bundles: Sequence[str | None] = (None,),
    read_metrics: ReadMetrics | None = None,
) -> BatchOutcome:
    """Load (local paths, URLs through the SSRF guard, videos, text-only entries), embed, append
    one entry to the points stream. A failure of the whole batch (full stream, encoder
    overloaded or down, no writer answering a resumed job's lookup) raises ClipsearchError for
    the task to retry; an item's own failure goes to the writer with the entry. Running it
    twice yields the same point ids. Each item is embedded once per bundle of ``bundles`` (the
    task's: during a model rollout, the current version's and the new one's), one point per
    bundle with the same id; the writer routes each to its bundle's version.

    A video's keyframe thumbnails travel in the entry: the writer stores them under its data dir
    (the gateway's, by default) before the points, so an indexer needs no shared volume."""
    gate = stream.jobs.gate(job_id, run)
    if gate.stop is None:
        # Before any work: a full stream means the writer is behind, and embedding now would
        # only have the task wait holding the result.
        stream.wait_for_room(collection, job_id)
        gate = stream.jobs.gate(job_id, run)  # it may have been cancelled meanwhile
    if gate.stop is not None:
        log.info("job %s: a batch of %d items does nothing: %s", job_id, len(entries), gate.stop)
        return BatchOutcome("", [], [], stopped=gate.stop)
    if units.is_unit_task(entries):  # a dataset's shard or row range (indexer.distributed.units)
        units.index_unit(
            job_id,
            collection,
            entries[0],
            embedder=embedder,
            stream=stream,
            settings=settings,
            run=run,
            resume=gate.resume,
            bundles=bundles,
            read_metrics=read_metrics,
        )
        return BatchOutcome("", [], [])
    failed: list[dict[str, Any]] = []
    valid: list[tuple[str, SourceEntry, Mapping[str, Any]]] = []
    for entry in entries:
        name = item_id(entry)
        try:
            valid.append((name, source_entry(entry, settings), entry))
        except ClipsearchError as exc:
            failed.append(_failure(name, exc.message, entry))
        except OSError as exc:
            failed.append(_failure(name, f"cannot read: {exc.strerror or exc}", entry))
    with Fetcher(settings) as fetcher:
        done = units.embed_named(
            job_id,
            [(name, source) for name, source, _ in valid],
            lambda i, reason: _failure(valid[i][0], reason, valid[i][2]),
            embedder=embedder,
            collection=collection,
            settings=settings,
            fetcher=fetcher,
            skip=units.resume_skip(stream, collection, settings, gate.resume),
            bundles=bundles,
        )
    failed += done.failed
    sent, skipped, points = done.sent, done.skipped, done.points
    entry_id = stream.append(
        collection,
        job_id,
        sent,
        points,
        failed=failed,
        skipped=skipped,
        run=run,
        thumbnails=done.thumbnails,
    )
    log.info(
        "job %s: %d items (%d points) to the writer, %d skipped, %d failed (entry %s)",
        job_id,
        len(sent),
        len(points),
        len(skipped),
        len(failed),
        entry_id,
    )
    return BatchOutcome(entry_id, sent, failed, skipped)


def _failure(name: str, reason: str, entry: object) -> dict[str, Any]:
    """A failed item, with its task entry (when it is one) for ``retry-failed``."""
    failure: dict[str, Any] = {"item": name, "reason": reason}
    if isinstance(entry, Mapping):
        failure["entry"] = dict(entry)
    return failure


def report_failed(
    job_id: str,
    collection: str,
    entries: Sequence[Mapping[str, Any]],
    reason: str,
    *,
    stream: PointStream,
    run: str | None = None,
) -> None:
    """A task that gave up: its items fail with ``reason``, counted by the writer like any."""
    failed = [_failure(item_id(e), reason, e) for e in entries]
    stream.append(collection, job_id, [], [], failed=failed, run=run)
    if units.is_unit_task(entries):
        units.unit_given_up(job_id, entries[0], stream)


def plan_job(
    job_id: str,
    collection: str,
    source: Mapping[str, Any],
    *,
    stream: PointStream,
    send_batch: Callable[[list[dict[str, Any]]], None],
    settings: Settings,
    run: str | None = None,
) -> PlanOutcome:
    """Read the job's source here, in the worker (which enforces the allowed roots), set the
    job's total, count unreadable entries failed, and hand the rest to
    ``send_batch`` in batches of ``broker.plan_batch_size``. Run twice, it sets the same total,
    counts nothing twice (progress goes through sets) and sends the same batches, whose points
    land on the same ids. A source that cannot be read at all marks the job failed. A cancelled
    job, or one of another attempt, is not planned."""
    gate = stream.jobs.gate(job_id, run)
    if gate.stop is not None:
        log.info("job %s is not planned: %s", job_id, gate.stop)
        return PlanOutcome(0, 0, 0, gate.stop)
    try:
        spec = SourceSpec.model_validate(dict(source))
        if is_dataset(spec):  # one task per shard or row range (indexer.distributed.units)
            stated, count = units.plan_dataset(
                job_id,
                source,
                spec,
                stream=stream,
                send_batch=send_batch,
                settings=settings,
                resume=gate.resume,
            )
            return PlanOutcome(stated, 0, count)
        reads = list(iter_source(spec, settings, reader="indexer"))
    except ValidationError as exc:
        reason = f"bad source: {exc.errors()[0]['msg']}"
        stream.jobs.mark_failed(job_id, reason)
        return PlanOutcome(0, 0, 0, reason)
    except ClipsearchError as exc:
        stream.jobs.mark_failed(job_id, exc.message)
        return PlanOutcome(0, 0, 0, exc.message)
    except OSError as exc:
        reason = f"cannot read the source: {exc.strerror or exc}"
        stream.jobs.mark_failed(job_id, reason)
        return PlanOutcome(0, 0, 0, reason)
    failed = [{"item": r.item, "reason": r.reason} for r in reads if isinstance(r, SourceError)]
    entries = [units.task_entry(read) for read in reads if isinstance(read, SourceEntry)]
    # Items count once each (progress goes through sets): a name listed twice is one item,
    # or done + failed would never reach the total.
    names = {f["item"] for f in failed} | {item_id(e) for e in entries}
    stream.jobs.init_job(job_id, total=len(names))
    if failed:
        stream.jobs.count(job_id, [], failed)
    size = settings.broker.plan_batch_size
    batches = [entries[i : i + size] for i in range(0, len(entries), size)]
    for batch in batches:
        send_batch(batch)
    log.info(
        "job %s planned: %d items, %d failed at once, %d batches",
        job_id,
        len(reads),
        len(failed),
        len(batches),
    )
    return PlanOutcome(len(reads), len(failed), len(batches))


@dataclass(frozen=True)
class PlanOutcome:
    total: int
    failed: int
    batches: int
    error: str | None = None
