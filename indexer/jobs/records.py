"""Records kept as one JSON file each (job records, reindex records), written atomically and
flushed to disk (``service.store.files.write_json``); the record a new job starts from."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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

    def load_all(self) -> list[dict[str, Any]]:
        """Every readable record, by file name; an unreadable one is skipped with a warning."""
        records = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                records.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, json.JSONDecodeError):
                log.warning("ignoring unreadable %s record %s", self._what, path)
        return records


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
        "params": {"source": source, "collection": collection},
        "state": "queued",
        "total": 0,
        "done": 0,
        "failed": 0,
        "errors": [],
        "created_at": now,
        "updated_at": now,
    }
