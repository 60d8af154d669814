"""Where rollout (reindex) records live, and which gateway runs each rollout.

``InProcessReindexer`` (``indexer.reindex``) reads and writes its records, takes a rollout's
lease and asks for a cancel only through :class:`ReindexRecords`. Two implementations:

* :class:`LocalRecords`: one JSON file per record under ``<data_dir>/reindex``. One gateway
  owns a data dir (the embedded store locks it), so this process holds every lease and a
  rollout building when it died is failed on its restart (``indexer.reindex``).
* :class:`RedisRecords`, whenever a broker is configured: the records in one Redis hash that
  every gateway replica reads, so a status, list, cancel or promote answers the same on any
  of them. A replica runs a rollout only while it holds the rollout's lease: a Redis key
  ``SET NX PX`` with a token of its own, renewed by a heartbeat thread every third of its time
  with a compare-and-renew script, so exactly one replica holds it. A holder that dies (kill
  -9, a lost node) stops renewing: after at most one lease time another replica's watcher takes
  the lease and the rollout over (``InProcessReindexer`` builds it again: point ids are
  deterministic, so a second pass rewrites the same points). A holder that cannot renew (Redis
  away, a pause longer than the lease) sees ``lost`` and stops touching the rollout between two
  pages (a Redis that lost the record too: the holder fails the rollout itself, as a restart
  would). A cancel is a Redis key that the runner reads between pages, whichever replica was
  asked.

What this does not give: Redis is the source of truth for the records, so a Redis that restarts
without persistence forgets them (the chart's Redis keeps an append-only file on
``redis.existingClaim``); the versions themselves live in the store and stay correct either way.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import redis

from indexer.jobs.records import RecordFiles
from service.core.errors import ClipsearchError, ErrorType

log = logging.getLogger(__name__)

RECORDS_KEY = "clipsearch:reindex:records"
LEASE_PREFIX = "clipsearch:reindex:lease:"
CANCEL_PREFIX = "clipsearch:reindex:cancel:"
CANCEL_TTL_S = 7 * 24 * 3600
# States in which a rollout needs a live runner: one whose lease is gone is taken over.
UNATTENDED = ("queued", "building", "promoting")

# Renew or free a lease only while it still holds this replica's token.
_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
)
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('del', KEYS[1]) else return 0 end"
)

# Called by the watcher with a rollout's id and the lease it has just taken for it; the callee
# keeps the lease (releasing it when done) or releases it at once.
TakeOver = Callable[[str, "Lease"], None]


class Lease:
    """A rollout's lease while this process holds it. ``lost`` is set once it may be held by
    another (a renewal refused, or none succeeded for a whole lease time): stop at once."""

    def __init__(self, record_id: str) -> None:
        self.record_id = record_id
        self.lost = threading.Event()

    def release(self) -> None:
        """Give it up (idempotent)."""


class ReindexRecords(Protocol):
    shared: bool  # whether other gateway processes read and run these records too

    def load_all(self) -> list[dict[str, Any]]: ...

    def read(self, record_id: str) -> dict[str, Any] | None: ...

    def write(self, record: dict[str, Any]) -> None: ...

    def hold(self, record_id: str) -> Lease | None:
        """Take the rollout's lease; None while another live process holds it."""

    def held(self, record_id: str) -> bool:
        """Whether any live process holds the rollout's lease."""

    def request_cancel(self, record_id: str) -> None: ...

    def cancel_requested(self, record_id: str) -> bool: ...

    def watch(self, take_over: TakeOver) -> None:
        """Hand each rollout that needs a runner and has none (``UNATTENDED``, no lease) to
        ``take_over``, with its lease taken; from now until :meth:`close`."""

    def close(self) -> None: ...


class _LocalLease(Lease):
    def __init__(self, record_id: str, owner: LocalRecords) -> None:
        super().__init__(record_id)
        self._owner = owner

    def release(self) -> None:
        self._owner._held.discard(self.record_id)


class LocalRecords(RecordFiles):
    """The records of a gateway that owns its data dir: files, and leases in memory."""

    shared = False

    def __init__(self, folder: Path) -> None:
        super().__init__(folder, "reindex")
        self._held: set[str] = set()
        self._held_lock = threading.Lock()  # two requests may take one lease at once
        self._cancels: set[str] = set()

    def read(self, record_id: str) -> dict[str, Any] | None:  # type: ignore[override]
        try:
            return super().read(record_id)
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def hold(self, record_id: str) -> Lease | None:
        with self._held_lock:
            if record_id in self._held:
                return None
            self._held.add(record_id)
        return _LocalLease(record_id, self)

    def held(self, record_id: str) -> bool:
        return record_id in self._held

    def request_cancel(self, record_id: str) -> None:
        self._cancels.add(record_id)

    def cancel_requested(self, record_id: str) -> bool:
        return record_id in self._cancels

    def watch(self, take_over: TakeOver) -> None:
        del take_over  # nobody else runs this data dir's rollouts

    def close(self) -> None:
        pass


class _RedisLease(Lease):
    """Renewed on a daemon thread every ``ttl / 3`` until released or lost."""

    def __init__(self, owner: RedisRecords, record_id: str, token: str) -> None:
        super().__init__(record_id)
        self._owner = owner
        self._token = token
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._heartbeat, name=f"lease-{record_id[:8]}", daemon=True
        )
        self._thread.start()

    def _heartbeat(self) -> None:
        ttl_ms = self._owner.lease_ms
        renewed = time.monotonic()
        while not self._done.wait(ttl_ms / 3000.0):
            try:
                ok = self._owner._renew(self.record_id, self._token)
            except redis.RedisError as exc:
                if time.monotonic() - renewed > ttl_ms / 1000.0:
                    log.error(
                        "rollout %s: lease not renewed for a lease time (%s)", self.record_id, exc
                    )
                    self.lost.set()
                    return
                continue
            if not ok:
                log.error("rollout %s: its lease is held by another gateway now", self.record_id)
                self.lost.set()
                return
            renewed = time.monotonic()

    def release(self) -> None:
        if self._done.is_set():
            return
        self._done.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)
        try:
            self._owner._release(self.record_id, self._token)
        except redis.RedisError as exc:  # it expires by itself within a lease time
            log.warning("rollout %s: lease not released: %s", self.record_id, exc)


class RedisRecords:
    """Records, leases and cancels in Redis, shared by every gateway replica (module doc)."""

    shared = True

    def __init__(self, client: redis.Redis, *, lease_s: float) -> None:
        self._redis = client
        self.lease_ms = max(int(lease_s * 1000), 300)
        # Who holds a lease, for the logs and the record: host, pid and a nonce per process.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._renew_script = client.register_script(_RENEW)
        self._release_script = client.register_script(_RELEASE)
        self._closing = threading.Event()
        self._watcher: threading.Thread | None = None

    @classmethod
    def from_url(cls, url: str, *, lease_s: float) -> RedisRecords:
        return cls(
            redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5), lease_s=lease_s
        )

    def load_all(self) -> list[dict[str, Any]]:
        records = []
        with _unavailable():
            stored = self._redis.hgetall(RECORDS_KEY)
        for record_id, raw in sorted(stored.items()):
            try:
                records.append(json.loads(raw))
            except json.JSONDecodeError:
                log.warning("ignoring unreadable reindex record %r in Redis", record_id)
        return records

    def read(self, record_id: str) -> dict[str, Any] | None:
        with _unavailable():
            raw = self._redis.hget(RECORDS_KEY, record_id)
        if raw is None:
            return None
        record: dict[str, Any] = json.loads(raw)
        return record

    def write(self, record: dict[str, Any]) -> None:
        with _unavailable():
            self._redis.hset(RECORDS_KEY, record["id"], json.dumps(record))

    def hold(self, record_id: str) -> Lease | None:
        token = f"{self.owner}:{uuid.uuid4().hex[:8]}"
        with _unavailable():
            taken = self._redis.set(LEASE_PREFIX + record_id, token, nx=True, px=self.lease_ms)
        if not taken:
            return None
        return _RedisLease(self, record_id, token)

    def held(self, record_id: str) -> bool:
        with _unavailable():
            return bool(self._redis.exists(LEASE_PREFIX + record_id))

    def holder(self, record_id: str) -> str | None:
        raw = self._redis.get(LEASE_PREFIX + record_id)
        return None if raw is None else raw.decode() if isinstance(raw, bytes) else str(raw)

    def request_cancel(self, record_id: str) -> None:
        with _unavailable():
            self._redis.set(CANCEL_PREFIX + record_id, "1", ex=CANCEL_TTL_S)

    def cancel_requested(self, record_id: str) -> bool:
        """Asked between pages of a build: Redis away reads "no" (the lease's heartbeat stops
        the build if Redis stays away for a lease time)."""
        try:
            return bool(self._redis.exists(CANCEL_PREFIX + record_id))
        except redis.RedisError:
            return False

    def watch(self, take_over: TakeOver) -> None:
        if self._watcher is not None:
            raise RuntimeError("already watching")
        self._watcher = threading.Thread(
            target=self._watch, args=(take_over,), name="reindex-lease-watch", daemon=True
        )
        self._watcher.start()

    def close(self) -> None:
        self._closing.set()
        if self._watcher is not None:
            self._watcher.join(timeout=10)
        self._redis.close()

    def _watch(self, take_over: TakeOver) -> None:
        """Every half lease time: the unattended rollouts, each taken over by one replica (the
        first whose ``SET NX`` lands)."""
        while not self._closing.wait(self.lease_ms / 2000.0):
            try:
                orphans = [
                    r["id"]
                    for r in self.load_all()
                    if r.get("state") in UNATTENDED and not self.held(r["id"])
                ]
                for record_id in orphans:
                    lease = self.hold(record_id)
                    if lease is None:
                        continue  # another replica was first
                    log.warning(
                        "rollout %s has no live runner: this gateway takes it over", record_id
                    )
                    try:
                        take_over(record_id, lease)
                    except Exception:
                        log.exception("taking rollout %s over failed", record_id)
                        lease.release()
            except ClipsearchError as exc:  # Redis away: rollouts wait, nothing is lost
                log.warning("reindex lease watch: Redis did not answer: %s", exc)
            except Exception:  # a record it cannot read: the next round looks again
                log.exception("reindex lease watch: this round failed")

    def _renew(self, record_id: str, token: str) -> bool:
        return bool(
            self._renew_script(keys=[LEASE_PREFIX + record_id], args=[token, self.lease_ms])
        )

    def _release(self, record_id: str, token: str) -> None:
        self._release_script(keys=[LEASE_PREFIX + record_id], args=[token])


@contextmanager
def _unavailable() -> Iterator[None]:
    """A Redis error as the gateway reports a dependency away: 503, never a 500."""
    try:
        yield
    except redis.RedisError as exc:
        raise ClipsearchError(
            ErrorType.unavailable, f"rollout records: Redis did not answer ({type(exc).__name__})"
        ) from exc
