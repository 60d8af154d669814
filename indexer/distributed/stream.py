"""The points stream: indexer tasks append embedded points, the writer upserts them.

One Redis stream per collection, ``clipsearch:points:<collection>``, read by one consumer group
(the writers). An entry is one task's batch; its fields (bytes):

* ``v``: format version (``1``); ``job``: the job id;
* ``items``: JSON list of the item ids whose points are in the entry: done once it is written;
* ``failed``: JSON list of ``{"item", "reason", "entry"?}``: items the task could not load or
  embed (``entry``: the task entry, so ``retry-failed`` can send it again);
* ``skipped`` (optional): JSON list of item ids already indexed with the same content hash (a
  resumed job): done without points; ``run`` (optional): the job attempt that sent the entry;
* ``points``: JSON list of ``{"id", "payload", "vectors": {name: shape}}``;
* ``vectors``: float32 little-endian, every point's vectors concatenated in ``points`` order
  (4 bytes a float instead of ~20 as JSON text).

The writer acknowledges an entry and deletes it in one transaction, together with the job
progress it carries (``indexer/distributed/progress.py``), so ``XLEN`` is exactly the backlog and
an item counts as done only once its points are written.

An entry delivered more than ``writer_max_deliveries`` times without being written goes, in that
same transaction, to the collection's dead-letter stream ``clipsearch:deadletter:<collection>``
(capped at ``dead_letter_max_len``; fields ``entry``, ``job``, ``run``, ``items``, ``reason``,
``deliveries``, ``consumer``, ``at``) and its items count failed with the reason in their job.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis

from indexer.distributed.progress import JobProgress
from service.core.config import BrokerSettings
from service.core.domain import Point
from service.core.errors import ClipsearchError, ErrorType

log = logging.getLogger(__name__)

FORMAT_VERSION = b"1"
WRITER_GROUP = "writers"
_POLL_MIN_S, _POLL_MAX_S = 0.05, 0.5

# Check and append in one step, so concurrent producers never overshoot the bound.
_APPEND_IF_ROOM = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
return redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
"""


# Forget consumers of the group that hold nothing and have been idle longer than ARGV[3] ms,
# except ARGV[2] (the caller). Checked and deleted in one step: a consumer that reads an entry
# between a check and a delete would lose it from the group's pending list.
_FORGET_IDLE = """
local removed = {}
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f['name'] ~= ARGV[2] and tonumber(f['pending']) == 0
     and tonumber(f['idle']) > tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    table.insert(removed, f['name'])
  end
end
return removed
"""


def stream_key(collection: str) -> str:
    return f"clipsearch:points:{collection}"


def dead_letter_key(collection: str) -> str:
    return f"clipsearch:deadletter:{collection}"


@dataclass(frozen=True)
class StreamEntry:
    collection: str
    id: str
    job_id: str
    items: list[str]
    failed: list[dict[str, Any]]
    points: list[Point]
    skipped: list[str] = field(default_factory=list)
    run: str | None = None
    # Set when the entry cannot be read (trimmed away, corrupt): its items count as failed.
    problem: str | None = None
    # Video keyframes (path under the data dir -> JPEG), stored by the writer with the points.
    thumbnails: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class DeadLetter:
    """Why an entry is given up on, for its job's errors and the dead-letter stream."""

    reason: str
    deliveries: int
    consumer: str


def _failure(f: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"item": str(f["item"]), "reason": str(f["reason"])}
    if isinstance(f.get("entry"), Mapping):
        out["entry"] = dict(f["entry"])
    return out


def encode_entry(
    job_id: str,
    items: Sequence[str],
    points: Sequence[Point],
    failed: Sequence[Mapping[str, Any]],
    *,
    skipped: Sequence[str] = (),
    run: str | None = None,
    thumbnails: Mapping[str, bytes] | None = None,
) -> dict[str, bytes]:
    meta: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for point in points:
        shapes: dict[str, list[int]] = {}
        for name, vector in point.vectors.items():
            array = np.asarray(vector, dtype="<f4")
            shapes[name] = list(array.shape)
            blobs.append(array.tobytes())
        meta.append({"id": point.id, "payload": point.payload, "vectors": shapes})
    fields = {
        "v": FORMAT_VERSION,
        "job": job_id.encode(),
        "items": json.dumps(list(items)).encode(),
        "failed": json.dumps([_failure(f) for f in failed]).encode(),
        "points": json.dumps(meta).encode(),
        "vectors": b"".join(blobs),
    }
    if skipped:
        fields["skipped"] = json.dumps(list(skipped)).encode()
    if thumbnails:
        index = [[path, len(data)] for path, data in thumbnails.items()]
        fields["thumbs"] = json.dumps(index).encode()
        fields["thumb_data"] = b"".join(thumbnails.values())
    if run:
        fields["run"] = run.encode()
    return fields


def decode_entry(
    collection: str, entry_id: bytes, fields: Mapping[bytes, bytes] | None
) -> StreamEntry:
    eid = entry_id.decode()
    if not fields:  # deleted from the stream while pending: nothing left to write
        return StreamEntry(collection, eid, "", [], [], [], problem="entry no longer in stream")
    job_id = fields.get(b"job", b"").decode(errors="replace")
    run = fields[b"run"].decode(errors="replace") if fields.get(b"run") else None
    try:
        items = [str(i) for i in json.loads(fields[b"items"])]
        failed = [_failure(f) for f in json.loads(fields[b"failed"])]
        skipped = [str(i) for i in json.loads(fields.get(b"skipped", b"[]"))]
    except (KeyError, ValueError, TypeError) as exc:
        return StreamEntry(
            collection, eid, job_id, [], [], [], run=run, problem=f"unreadable entry: {exc}"
        )
    try:
        if fields.get(b"v") != FORMAT_VERSION:
            raise ValueError(f"format version {fields.get(b'v')!r}")
        blob, offset, points = fields[b"vectors"], 0, []
        for meta in json.loads(fields[b"points"]):
            vectors: dict[str, Any] = {}
            for name, shape in meta["vectors"].items():
                n = int(np.prod(shape)) if shape else 1
                array = np.frombuffer(blob, dtype="<f4", count=n, offset=offset).reshape(shape)
                vectors[name] = array.tolist()
                offset += 4 * n
            points.append(Point(id=meta["id"], vectors=vectors, payload=meta["payload"]))
        if offset != len(blob):
            raise ValueError(f"{len(blob) - offset} vector bytes left over")
        thumbnails = _thumbnails(fields)
    except (KeyError, ValueError, TypeError) as exc:
        return StreamEntry(
            collection, eid, job_id, items, failed, [], skipped, run, f"unreadable points: {exc}"
        )
    return StreamEntry(
        collection, eid, job_id, items, failed, points, skipped, run, None, thumbnails
    )


def _thumbnails(fields: Mapping[bytes, bytes]) -> dict[str, bytes]:
    data, offset, out = fields.get(b"thumb_data", b""), 0, {}
    for path, size in json.loads(fields.get(b"thumbs", b"[]")):
        if not isinstance(path, str) or not isinstance(size, int) or size < 0:
            raise ValueError(f"bad thumbnail index entry {[path, size]!r}")
        out[path] = data[offset : offset + size]
        offset += size
    if offset != len(data):
        raise ValueError(f"{len(data) - offset} thumbnail bytes left over or missing")
    return out


class PointStream:
    """The producer side (indexer tasks) and the consumer side (the writer) of the stream."""

    def __init__(self, url: str, settings: BrokerSettings) -> None:
        self.settings = settings
        # RESP2 replies have one well-known shape for stream reads; the socket timeout outlasts
        # the longest blocking read, so a half-open connection fails instead of hanging.
        self.redis = redis.Redis.from_url(
            url,
            protocol=2,
            socket_timeout=settings.writer_block_ms / 1000 + 10,
            socket_connect_timeout=5,
            socket_keepalive=True,
            health_check_interval=30,
        )
        self._append = self.redis.register_script(_APPEND_IF_ROOM)
        self._forget_idle = self.redis.register_script(_FORGET_IDLE)
        self.jobs = JobProgress(self.redis, max_errors_kept=settings.max_errors_kept)

    def close(self) -> None:
        self.redis.close()

    # -- producer ------------------------------------------------------------------------------
    def length(self, collection: str) -> int:
        """Entries not yet written (acknowledged entries are deleted)."""
        return int(self.redis.xlen(stream_key(collection)))

    def append(
        self,
        collection: str,
        job_id: str,
        items: Sequence[str],
        points: Sequence[Point],
        *,
        failed: Sequence[Mapping[str, Any]] = (),
        skipped: Sequence[str] = (),
        run: str | None = None,
        thumbnails: Mapping[str, bytes] | None = None,
        timeout_s: float | None = None,
    ) -> str:
        """Append one entry, waiting while the stream holds ``stream_max_len`` entries; raises
        ClipsearchError(overloaded) when the writer has not made room within the timeout."""
        fields = encode_entry(
            job_id, items, points, failed, skipped=skipped, run=run, thumbnails=thumbnails
        )
        args: list[Any] = [self.settings.stream_max_len]
        for name, value in fields.items():
            args += [name, value]
        key = stream_key(collection)
        entry_id = self._until_room(
            key, job_id, timeout_s, lambda: self._append(keys=[key], args=args)
        )
        return entry_id.decode()

    def wait_for_room(self, collection: str, job_id: str, timeout_s: float | None = None) -> None:
        """Return once the stream has room (a task checks before it embeds anything)."""
        self._until_room(
            stream_key(collection),
            job_id,
            timeout_s,
            lambda: b"" if self.length(collection) < self.settings.stream_max_len else None,
        )

    def _until_room(self, key: str, job_id: str, timeout_s: float | None, attempt: Any) -> bytes:
        timeout = self.settings.append_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        delay = _POLL_MIN_S
        while (result := attempt()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ClipsearchError(
                    ErrorType.overloaded,
                    f"the points stream {key} stayed full ({self.settings.stream_max_len} "
                    f"entries) for {timeout:g} s: the writer is not keeping up or not running",
                    {"stream": key, "max_len": self.settings.stream_max_len},
                    retry_after_s=min(timeout, 10.0),
                )
            if job_id:
                self.jobs.mark_waiting(job_id)
            # Another process makes the room and no event crosses processes: poll, backing off.
            time.sleep(min(delay, left))
            delay = min(delay * 2, _POLL_MAX_S)
        return bytes(result)

    # -- consumer (the writer) -----------------------------------------------------------------
    def ensure_group(self, collection: str, group: str = WRITER_GROUP) -> None:
        """Create the group (and the stream) if missing; from id 0, so entries appended before
        any writer started are read too."""
        try:
            self.redis.xgroup_create(stream_key(collection), group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(
        self, collections: Sequence[str], group: str, consumer: str, *, count: int, block_ms: int
    ) -> list[StreamEntry]:
        """New entries for this consumer, waiting up to ``block_ms`` for one."""
        return self._read_group(collections, group, consumer, ">", count, block_ms)

    def read_pending(
        self, collections: Sequence[str], group: str, consumer: str, *, count: int
    ) -> list[StreamEntry]:
        """Entries this consumer read (or claimed) and has not acknowledged yet."""
        return self._read_group(collections, group, consumer, "0", count, None)

    def _read_group(
        self,
        collections: Sequence[str],
        group: str,
        consumer: str,
        start: str,
        count: int,
        block_ms: int | None,
    ) -> list[StreamEntry]:
        names = {stream_key(c): c for c in collections}
        # Bytes replies in the RESP2 shape (decode_responses off); redis-py types them loosely.
        reply: Any = self.redis.xreadgroup(
            group, consumer, {k: start for k in names}, count=count, block=block_ms
        )
        return [
            decode_entry(names[key.decode()], entry_id, fields)
            for key, entries in reply or []
            for entry_id, fields in entries
        ]

    def autoclaim(
        self, collection: str, group: str, consumer: str, *, min_idle_ms: int, count: int = 100
    ) -> list[StreamEntry]:
        """Take over every entry idle longer than ``min_idle_ms`` (its writer died)."""
        claimed: list[StreamEntry] = []
        cursor: bytes | str = "0-0"
        while True:
            reply: Any = self.redis.xautoclaim(
                stream_key(collection), group, consumer, min_idle_ms, cursor, count=count
            )
            cursor, entries = reply[0], reply[1]
            claimed += [decode_entry(collection, eid, fields) for eid, fields in entries]
            if cursor in (b"0-0", "0-0"):
                return claimed

    def deliveries(self, collection: str, group: str, ids: Sequence[str]) -> dict[str, int]:
        """How often each of ``ids`` was delivered (read or claimed) in the group; an id no
        longer pending is left out."""
        if not ids:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for eid in ids:
            pipe.xpending_range(stream_key(collection), group, min=eid, max=eid, count=1)
        out: dict[str, int] = {}
        for eid, reply in zip(ids, pipe.execute(), strict=True):
            if reply:
                out[eid] = int(reply[0]["times_delivered"])
        return out

    def forget_idle_consumers(
        self, collection: str, group: str, keep: str, *, idle_ms: int
    ) -> list[str]:
        """Delete the group's consumers idle longer than ``idle_ms`` that hold no entry (a
        dead writer's entries are claimed away first), except ``keep``; returns their names."""
        removed = self._forget_idle(keys=[stream_key(collection)], args=[group, keep, idle_ms])
        return [n.decode() if isinstance(n, bytes) else str(n) for n in removed or []]

    def active_consumers(self, collection: str, group: str, *, within_ms: int) -> set[str]:
        """The group's consumers that read or claimed within the last ``within_ms``."""
        try:
            reply: Any = self.redis.xinfo_consumers(stream_key(collection), group)
        except redis.ResponseError:  # no stream or group (yet): nobody
            return set()
        return {c["name"].decode() for c in reply if int(c["idle"]) <= within_ms}

    def dead_letters(self, collection: str, count: int = 100) -> list[dict[str, str]]:
        """The newest dead letters of ``collection``, newest first (fields decoded)."""
        reply: Any = self.redis.xrevrange(dead_letter_key(collection), count=count)
        return [
            {"id": eid.decode(), **{k.decode(): v.decode() for k, v in fields.items()}}
            for eid, fields in reply
        ]

    def ack(self, collection: str, group: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        pipe = self.redis.pipeline(transaction=True)
        pipe.xack(stream_key(collection), group, *ids)
        pipe.xdel(stream_key(collection), *ids)
        pipe.execute()

    def complete(
        self,
        group: str,
        entries: Sequence[StreamEntry],
        refused: Mapping[str, str] | None = None,
        *,
        dead: Mapping[str, DeadLetter] | None = None,
    ) -> None:
        """Count the entries' items (done, or failed with the reason in ``refused[entry id]``
        or ``dead[entry id]``, which also goes to the dead-letter stream) and acknowledge the
        entries, in one transaction."""
        refused = dict(refused or {})
        dead = dead or {}
        pipe = self.redis.pipeline(transaction=True)
        for entry in entries:
            letter = dead.get(entry.id)
            if letter is not None:
                refused[entry.id] = letter.reason
                pipe.xadd(
                    dead_letter_key(entry.collection),
                    {
                        "entry": entry.id,
                        "job": entry.job_id,
                        "run": entry.run or "",
                        "items": json.dumps(entry.items),
                        "reason": letter.reason,
                        "deliveries": str(letter.deliveries),
                        "consumer": letter.consumer,
                        "at": f"{time.time():.3f}",
                    },
                    maxlen=self.settings.dead_letter_max_len,
                    approximate=True,
                )
            reason = refused.get(entry.id) or entry.problem
            if entry.job_id:
                done = [] if reason else entry.items
                failed = list(entry.failed)
                if reason:
                    failed += [{"item": item, "reason": reason} for item in entry.items]
                self.jobs.count(
                    entry.job_id, done, failed, skipped=entry.skipped, run=entry.run, client=pipe
                )
            pipe.xack(stream_key(entry.collection), group, entry.id)
            pipe.xdel(stream_key(entry.collection), entry.id)
        pipe.execute()
