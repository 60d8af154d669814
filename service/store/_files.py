"""The embedded store's own files: the alias file and the data-dir lock (atomic JSON writes are
``service.core.records.write_json``)."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from service.core.errors import ClipsearchError, ErrorType


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
