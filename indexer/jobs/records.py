"""Records kept as one JSON file each (job records, reindex records), written atomically and
flushed to disk (``service.store.files.write_json``); with a broker, job records mirrored in
Redis for every gateway replica (:class:`MirroredRecords`); the record a new job starts from."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from service.core.errors import ClipsearchError, ErrorType
from service.store.files import write_json

log = logging.getLogger(__name__)


class RecordFiles:
    """``<folder>/<id>.json`` per record (``id`` is the record's own ``"id"``)."""

    def __init__(self, folder: Path, what: str) -> None:
        self.folder = folder
        self._what = what  # "job", "reindex": names a record in warnings
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, record_id: str) -> Path:
        return self.folder / f"{record_id}.json"

    def read(self, record_id: str) -> dict[str, Any]:
        """The record; FileNotFoundError if there is none (the caller checked the id's shape)."""
        record: dict[str, Any] = json.loads(self.path(record_id).read_text(encoding="utf-8"))
        return record

    def write(self, record: dict[str, Any]) -> None:
        write_json(self.path(record["id"]), record)

    def remove(self, record_id: str) -> None:
        self.path(record_id).unlink(missing_ok=True)

    def load_all(self) -> list[dict[str, Any]]:
        """Every readable record, by file name; an unreadable one is skipped with a warning."""
        records = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                records.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, json.JSONDecodeError):
                log.warning("ignoring unreadable %s record %s", self._what, path)
        return records


class MirroredRecords(RecordFiles):
    """The files, and a copy of each record in one Redis hash that every gateway replica
    reads: a job submitted on one replica answers ``GET /v1/jobs/{id}`` (and lists, cancels,
    retries) on all of them. Of a file and a copy, the one updated last wins. Redis away (or
    restarted without persistence): each replica still answers from the files it wrote, as a
    single gateway does."""

    def __init__(self, folder: Path, what: str, client: redis.Redis, key: str) -> None:
        super().__init__(folder, what)
        self._redis = client
        self.key = key

    def read(self, record_id: str) -> dict[str, Any]:
        try:
            local: dict[str, Any] | None = super().read(record_id)
        except FileNotFoundError:
            local = None
        try:
            raw = self._redis.hget(self.key, record_id)
        except redis.RedisError as exc:
            raw = None
            if local is None:
                raise ClipsearchError(
                    ErrorType.unavailable,
                    f"{self._what} {record_id} is not recorded here and Redis did not answer",
                ) from exc
        shared = json.loads(raw) if raw is not None else None
        newest = _newest(local, shared)
        if newest is None:
            raise FileNotFoundError(record_id)
        return newest

    def write(self, record: dict[str, Any]) -> None:
        super().write(record)
        try:
            self._redis.hset(self.key, record["id"], json.dumps(record))
        except redis.RedisError as exc:  # this replica's file has it; others see it later
            log.warning("%s record %s not copied to Redis: %s", self._what, record["id"], exc)

    def load_all(self) -> list[dict[str, Any]]:
        merged = {r["id"]: r for r in super().load_all()}
        try:
            shared = self._redis.hgetall(self.key)
        except redis.RedisError as exc:
            log.warning(
                "%s records: Redis did not answer, listing this replica's: %s", self._what, exc
            )
            shared = {}
        for raw in shared.values():
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                continue
            merged[record["id"]] = _newest(merged.get(record["id"]), record) or record
        return [merged[k] for k in sorted(merged)]

    def remove(self, record_id: str) -> None:
        super().remove(record_id)
        try:
            self._redis.hdel(self.key, record_id)
        except redis.RedisError as exc:
            log.warning("%s record %s not removed from Redis: %s", self._what, record_id, exc)


def _newest(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any] | None:
    if a is None or b is None:
        return a or b
    return b if str(b.get("updated_at", "")) > str(a.get("updated_at", "")) else a


def newest_first(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Job records in the order ``GET /v1/jobs`` lists them: newest first; the id breaks ties."""
    return sorted(records, key=lambda r: (str(r.get("created_at", "")), r["id"]), reverse=True)


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def new_job_record(job_id: str, source: dict[str, Any], collection: str) -> dict[str, Any]:
    """A job's record as both job queues persist and report it, before it has run."""
    now = now_iso()
    return {
        "id": job_id,
        "kind": "ingest",
        "collection": collection,
        "params": {"source": source, "collection": collection},
        "state": "queued",
        "total": 0,
        "done": 0,
        "failed": 0,
        "errors": [],
        "created_at": now,
        "updated_at": now,
    }


def job_collection(record: dict[str, Any]) -> str | None:
    """The collection a job writes to: its record's ``collection`` (older records: the one in
    its ``params``)."""
    named = record.get("collection") or (record.get("params") or {}).get("collection")
    return str(named) if named else None
