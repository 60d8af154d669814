"""Files on the data dir: atomic writes, the embedded store's alias file and the data-dir lock.

:func:`write_atomic` writes a temporary file, optionally flushes it to disk and renames it over
the target, so a crash or a power cut leaves the old file or the new one, never half of either.
Each writer uses its own temporary name: two threads may write one file at once (a request and
the Celery queue's settler writing one job record), and so may two gateway pods sharing a data
volume (where both processes may well be pid 1), and one must not rename the other's
half-written file. The store writes its alias file with it; the indexer its job and
reindex records (``indexer.jobs.records``) and video thumbnails.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import uuid
from pathlib import Path

from service.core.errors import ClipsearchError, ErrorType

# Tells this process's temporary files from another host's with the same pid and thread id.
_NONCE = uuid.uuid4().hex[:12]


def write_atomic(path: Path, data: bytes, *, durable: bool) -> None:
    """``data`` at ``path``, all or nothing, through a temporary file beside it; ``durable``
    flushes it to disk before the rename (a record that must survive a power cut)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}-{_NONCE}.tmp")
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


def read_aliases(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    return {str(k): str(v) for k, v in data.items()}


def lock_data_dir(data_dir: Path, lock_path: Path) -> int:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise ClipsearchError(
            ErrorType.unavailable,
            f"data dir {data_dir} is in use by another process (pid {holder}); the embedded "
            "store allows one process per data dir: stop it, use another CLIPSEARCH_DATA_DIR, "
            "or run a Qdrant server (CLIPSEARCH_QDRANT__URL)",
            {"data_dir": str(data_dir), "lock": str(lock_path), "pid": holder},
        ) from exc
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return fd
