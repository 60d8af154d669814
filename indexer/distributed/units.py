"""Dataset sources on the Celery path: one task per unit (a shard, a row range), never per item.

``plan_job`` (``indexer.distributed.batches``) hands a webdataset or table source to
:func:`plan_dataset`: it checks the source in the indexer (its own allowed roots and prefixes),
records the plan in the job hash (``JobProgress.init_units``: the units, the rows the files state)
and sends one ``index_batch`` task per unit whose single entry is :func:`unit_entry` (the unit,
the source, the table's resolved columns). ``index_batch`` passes such an entry to
:func:`index_unit`, which streams the unit (``indexer.sources.datasets.read_unit``), embeds it in
batches of ``broker.plan_batch_size`` and appends each batch to the points stream like any task,
then reports the unit read (``JobProgress.unit_read``: the total becomes exact, once per unit).

So a job costs the broker one message per unit, the job's total is known from the files where they
state it, and the job completes only once every unit is read and every item written. Items are
named in job progress by their place (``UNIT:N``, the N-th read of the unit numbered UNIT; the
reasons of errors name shard and key, or table and row), not by their id: a
unit delivered twice counts nothing twice, and the same id in two shards (the same point, the
later write replaces it) still counts as two items, so done + failed always reaches the total.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from indexer.distributed.lookups import request_matches
from indexer.distributed.stream import PointStream
from indexer.pipeline.batching import chunked
from indexer.pipeline.entries import entry_points
from indexer.sources.datasets import Dataset, open_dataset, read_unit, unit_name
from indexer.sources.objects import ReadMetrics
from indexer.sources.read import SourceEntry, SourceError
from service.clients.base import EmbeddingClient
from service.core.config import Settings
from service.core.domain import Point
from service.core.schemas.sources import SourceSpec
from service.items.fetch import Fetcher

log = logging.getLogger(__name__)

UNIT = "unit"


def is_unit_task(entries: Sequence[object]) -> bool:
    """Whether an ``index_batch`` task's entries are one dataset unit."""
    return len(entries) == 1 and isinstance(entries[0], Mapping) and UNIT in entries[0]


def unit_entry(
    source: Mapping[str, Any], dataset: Dataset, unit: Mapping[str, Any], index: int
) -> dict[str, Any]:
    """The single entry of a unit's task: its ``id`` names the unit should the task give up."""
    return {
        UNIT: {**unit, "columns": dict(dataset.columns), "index": index},
        "source": dict(source),
        "id": unit_name(dict(unit)),
    }


def plan_dataset(
    job_id: str,
    source: Mapping[str, Any],
    spec: SourceSpec,
    *,
    stream: PointStream,
    send_batch: Callable[[list[dict[str, Any]]], None],
    settings: Settings,
    resume: bool = False,
) -> tuple[int, int]:
    """Record the plan and send one task per unit; (rows stated by the files, units). A resumed
    job sends none for the units an earlier attempt read to the end: they count as they were
    (``JobProgress.resume_units``). Raises ClipsearchError for a source this indexer cannot
    read (the caller fails the job)."""
    dataset = open_dataset(spec, settings, reader="indexer")
    stated = sum(int(u.get("rows", 0)) for u in dataset.units)
    stream.jobs.init_units(
        job_id, total=stated, units=len(dataset.units), exact=dataset.known_items is not None
    )
    finished = stream.jobs.finished_units(job_id) if resume else {}
    done_before: dict[str, tuple[int, int, int]] = {}
    for index, unit in enumerate(dataset.units):
        name = unit_name(unit)
        if name in finished:
            read, failed = finished[name]
            done_before[name] = (read, failed, int(unit.get("rows", 0)))
            continue
        send_batch([unit_entry(source, dataset, unit, index)])
    stream.jobs.resume_units(job_id, done_before)
    log.info("job %s planned: %d units, %d rows stated", job_id, len(dataset.units), stated)
    return stated, len(dataset.units)


def resume_skip(
    stream: PointStream, collection: str, settings: Settings, resume: bool
) -> Callable[[Sequence[tuple[str, str]]], set[str]] | None:
    """On a resumed job: what the writer says is indexed already, asked per batch (else None:
    everything is embedded)."""
    if not resume:
        return None
    timeout = settings.broker.append_timeout_s

    def skip(pairs: Sequence[tuple[str, str]]) -> set[str]:
        return request_matches(stream.redis, collection, pairs, timeout_s=timeout)

    return skip


@dataclass
class Embedded:
    """One batch embedded and sorted for the points stream: items by the name progress knows
    them by."""

    points: list[Point]
    sent: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    thumbnails: dict[str, bytes] = field(default_factory=dict)


def embed_named(
    job_id: str,
    named: Sequence[tuple[str, SourceEntry]],
    failure: Callable[[int, str], dict[str, Any]],
    *,
    embedder: EmbeddingClient,
    collection: str,
    settings: Settings,
    fetcher: Fetcher,
    skip: Callable[[Sequence[tuple[str, str]]], set[str]] | None,
    bundles: Sequence[str | None],
) -> Embedded:
    """Embed ``named`` (name, entry) pairs into points (one per bundle) and sort the items:
    sent, skipped (indexed already, on a resumed job) or failed (``failure(i, reason)``: the
    failure record of the i-th); the unreadable parts of an item that is still indexed (a
    video's bad frames) are only logged."""
    thumbnails: dict[str, bytes] = {}
    points, outcomes = entry_points(
        [entry for _, entry in named],
        embedder,
        collection,
        settings,
        fetcher,
        skip=skip,
        thumbnails=thumbnails.__setitem__,
        bundles=bundles,
    )
    out = Embedded(points, thumbnails=thumbnails)
    for i, ((name, _), outcome) in enumerate(zip(named, outcomes, strict=True)):
        if outcome.error is not None:
            out.failed.append(failure(i, outcome.error))
            continue
        (out.skipped if outcome.skipped else out.sent).append(name)
        for note in outcome.partial:
            log.warning("job %s: %s: %s", job_id, name, note)
    return out


def index_unit(
    job_id: str,
    collection: str,
    entry: Mapping[str, Any],
    *,
    embedder: EmbeddingClient,
    stream: PointStream,
    settings: Settings,
    run: str | None,
    resume: bool,
    bundles: Sequence[str | None] = (None,),
    read_metrics: ReadMetrics | None = None,
) -> tuple[int, int]:
    """Read, embed and append one unit, batch by batch; (items read, items failed). Stops
    between batches once the job is cancelled or another attempt runs (the unit is then not
    reported read). A failure of a whole batch raises for the task to retry: the unit is read
    again from its start, which counts nothing twice."""
    spec = SourceSpec.model_validate(dict(entry["source"]))
    unit = dict(entry[UNIT])
    columns = unit.pop("columns", {}) or {}
    index = int(unit.pop("index", 0))
    dataset = Dataset(spec, [unit], None, columns, reader="indexer")
    name = unit_name(unit)
    skip = resume_skip(stream, collection, settings, resume)
    reads = failures = 0
    with Fetcher(settings) as fetcher:
        reader = read_unit(dataset, unit, settings, fetcher=fetcher, metrics=read_metrics)
        for chunk in chunked(reader, settings.broker.plan_batch_size):
            gate = stream.jobs.gate(job_id, run)
            if gate.stop is None:
                stream.wait_for_room(collection, job_id)
                gate = stream.jobs.gate(job_id, run)
            if gate.stop is not None:
                log.info("job %s: unit %s stops: %s", job_id, name, gate.stop)
                return reads, failures
            # Progress names an item by its unit and place in it (``3:41``, a few bytes in Redis's
            # sets); its errors' reasons name the shard and key, or the table and row.
            names = {id(r): f"{index}:{reads + n}" for n, r in enumerate(chunk)}
            reads += len(chunk)
            failed = [
                {"item": names[id(r)], "reason": r.reason}
                for r in chunk
                if isinstance(r, SourceError)
            ]
            entries = [r for r in chunk if isinstance(r, SourceEntry)]
            named = [(names[id(e)], e) for e in entries]
            done = embed_named(
                job_id,
                named,
                functools.partial(_member_failure, named),
                embedder=embedder,
                collection=collection,
                settings=settings,
                fetcher=fetcher,
                skip=skip,
                bundles=bundles,
            )
            failed += done.failed
            failures += len(failed)
            stream.append(
                collection,
                job_id,
                done.sent,
                done.points,
                failed=failed,
                skipped=done.skipped,
                run=run,
                thumbnails=done.thumbnails,
            )
    stream.jobs.unit_read(job_id, name, reads - int(unit.get("rows", 0)))
    stream.jobs.unit_finished(job_id, name, reads, failures)
    log.info("job %s: unit %s read: %d items, %d failed", job_id, name, reads, failures)
    return reads, failures


def _member_failure(
    named: Sequence[tuple[str, SourceEntry]], i: int, reason: str
) -> dict[str, Any]:
    item, entry = named[i]
    record: dict[str, Any] = {"item": item, "reason": reason}
    if entry.data is None:  # for retry-failed (a shard's member, read from the shard: no)
        record["entry"] = task_entry(entry)
    return record


def task_entry(entry: SourceEntry) -> dict[str, Any]:
    """A source entry as an ``index_batch`` entry (JSON): its id names it in job progress; also
    a failed entry as ``retry-failed`` submits it again."""
    task: dict[str, Any] = {"uri": entry.uri, "id": entry.id}
    if entry.caption is not None:
        task["caption"] = entry.caption
    if entry.description is not None:
        task["description"] = entry.description
    if entry.metadata:
        task["metadata"] = dict(entry.metadata)
    return task


def unit_given_up(job_id: str, entry: Mapping[str, Any], stream: PointStream) -> None:
    """A unit's task gave up: the unit counts as read with its one failure (the caller reports
    it failed by the unit's name), so the job ends instead of waiting for it forever."""
    unit = dict(entry[UNIT])
    unit.pop("columns", None)
    unit.pop("index", None)
    stream.jobs.unit_read(job_id, unit_name(unit), 1 - int(unit.get("rows", 0)))
