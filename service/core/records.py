"""Records kept as one JSON file each: job records, reindex records, the store's own files.

:func:`write_json` writes a temporary file, flushes it to disk and renames it over the target, so
a crash or a power cut leaves the old file or the new one, never half of either. Each thread
writes through its own temporary name: two threads may write one record at once (a request and
the Celery queue's settler), and one must not rename the other's half-written file.
:func:`write_atomic` is the same write for any bytes (video thumbnails use it without the flush).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def write_atomic(path: Path, data: bytes, *, durable: bool) -> None:
    """``data`` at ``path``, all or nothing, through a temporary file beside it; ``durable``
    flushes it to disk before the rename (a record that must survive a power cut)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, data: object) -> None:
    write_atomic(path, json.dumps(data).encode(), durable=True)


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
