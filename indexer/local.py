"""The in-process job runner: the embedded default when no broker is configured.

Jobs run one at a time on a single thread, calling the same pipeline functions as the Celery
tasks. Each job's record is a JSON file under ``<data_dir>/jobs``, rewritten atomically as it
progresses, so a restart still answers for old jobs; jobs that were running when the process
died are marked ``interrupted``.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from indexer.pipeline import batched, index_sources, scan_directory
from service.clients.base import EmbeddingClient
from service.core.config import Settings
from service.core.errors import ClipsearchError, ErrorType, invalid, not_found
from service.core.sources import resolve_local_dir
from service.store.base import VectorStore

log = logging.getLogger(__name__)

JOB_KINDS = frozenset({"ingest_directory"})
BATCH_SIZE = 16
MAX_ERRORS_KEPT = 1000


def _now() -> str:
    return datetime.now(UTC).isoformat()


class InProcessJobQueue:
    def __init__(
        self, *, settings: Settings, embedder: EmbeddingClient, store: VectorStore
    ) -> None:
        self._settings = settings
        self._embedder = embedder
        self._store = store
        self._dir = settings.data_dir / "jobs"
        self._dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._jobs: dict[str, dict[str, Any]] = {}
        self._pending: queue.Queue[str | None] = queue.Queue(maxsize=1000)
        self._crashed: BaseException | None = None
        self._load_existing()
        self._thread = threading.Thread(target=self._run, name="job-runner", daemon=True)
        self._thread.start()

    # -- JobQueue protocol -------------------------------------------------------------------
    def submit(self, kind: str, params: dict[str, Any]) -> str:
        if kind not in JOB_KINDS:
            raise invalid(f"unknown job kind {kind!r}")
        root = resolve_local_dir(
            str(params.get("source", "")), self._settings.sources.allowed_roots
        )
        job_id = uuid.uuid4().hex
        record = {
            "id": job_id,
            "kind": kind,
            "params": {"source": str(root), "collection": self._settings.collection},
            "state": "queued",
            "total": 0,
            "done": 0,
            "failed": 0,
            "errors": [],
            "created_at": _now(),
            "updated_at": _now(),
        }
        with self._lock:
            self._jobs[job_id] = record
            self._persist(record)
        try:
            self._pending.put_nowait(job_id)
        except queue.Full:
            self._update(job_id, state="failed", error="job queue is full")
            raise ClipsearchError(
                ErrorType.overloaded, "too many queued jobs", retry_after_s=5
            ) from None
        return job_id

    def status(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            record = self._jobs.get(job_id)
            if record is None:
                raise not_found(f"no job {job_id!r}")
            return json.loads(json.dumps(record))

    def ready(self) -> bool:
        return self._crashed is None and self._thread.is_alive()

    def close(self) -> None:
        self._pending.put(None)
        self._thread.join(timeout=30)

    # -- internals ---------------------------------------------------------------------------
    def _load_existing(self) -> None:
        for path in sorted(self._dir.glob("*.json")):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                log.warning("ignoring unreadable job record %s", path)
                continue
            if record.get("state") in {"queued", "running"}:
                record["state"] = "interrupted"
                self._persist(record)
            self._jobs[record["id"]] = record

    def _persist(self, record: dict[str, Any]) -> None:
        path = self._dir / f"{record['id']}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record), encoding="utf-8")
        os.replace(tmp, path)

    def _update(self, job_id: str, *, error: str | None = None, **fields: Any) -> None:
        with self._lock:
            record = self._jobs[job_id]
            record.update(fields, updated_at=_now())
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
        root = Path(record["params"]["source"])
        sources = scan_directory(root)
        started = time.monotonic()
        self._update(job_id, state="running", total=len(sources), started_at=_now())
        done = failed = 0
        for batch in batched(sources, BATCH_SIZE):
            outcomes = index_sources(
                batch,
                embedder=self._embedder,
                store=self._store,
                collection=record["params"]["collection"],
                limits=self._settings.limits,
            )
            errors = [{"item": o.item, "reason": o.error} for o in outcomes if o.error]
            done += len(outcomes) - len(errors)
            failed += len(errors)
            with self._lock:
                kept = self._jobs[job_id]["errors"]
                kept.extend(errors[: max(0, MAX_ERRORS_KEPT - len(kept))])
            elapsed = max(time.monotonic() - started, 1e-6)
            self._update(job_id, done=done, failed=failed, rate_per_s=(done + failed) / elapsed)
        self._update(job_id, state="completed", finished_at=_now())
        log.info("job %s completed: %d indexed, %d failed", job_id, done, failed)
