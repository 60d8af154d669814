"""Rollout records shared by gateway replicas (``indexer.jobs.rollout_records``), on a real private
Redis: a lease has one holder, a killed holder's lease moves (kill -9 of a real process), one
replica takes an unattended rollout over; two reindexers on one store and one Redis answer
status, list, start and cancel alike, and a closing one hands its build to the other."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from indexer.jobs.rollout_records import LEASE_PREFIX, Lease, RedisRecords
from indexer.reindex import PAGE, InProcessReindexer
from service.core.config import Settings
from service.core.errors import ClipsearchError, ErrorType
from service.store.versions import VersionedStore
from tests.indexer.test_reindex import GatedBulk, _ids, _texts, parts, wait_rollout
from tests.redis_server import redis_server
from tests.support import wait_until

__all__ = ["parts"]  # the fixture, shared with test_reindex

LEASE_S = 1.0
HOLDER = """
import sys, time
from indexer.jobs.rollout_records import RedisRecords
records = RedisRecords.from_url(sys.argv[1], lease_s=float(sys.argv[2]))
print("held" if records.hold("r1") is not None else "refused", flush=True)
time.sleep(600)
"""


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    with redis_server(tmp_path / "redis") as url:
        yield url


@pytest.fixture
def records(redis_url: str) -> Iterator[list[RedisRecords]]:
    made: list[RedisRecords] = []
    yield made
    for r in made:
        r.close()


def _open(redis_url: str, made: list[RedisRecords]) -> RedisRecords:
    r = RedisRecords.from_url(redis_url, lease_s=LEASE_S)
    made.append(r)
    return r


def test_a_lease_has_one_holder_and_moves_when_its_holder_is_killed(
    redis_url: str, records: list[RedisRecords]
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, redis_url, str(LEASE_S)],
        stdout=subprocess.PIPE,
        cwd=Path.cwd(),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        mine = _open(redis_url, records)
        assert mine.hold("r1") is None and mine.held("r1")
        # Renewed: three lease times on, the live holder still has it.
        deadline = time.monotonic() + 3 * LEASE_S
        while time.monotonic() < deadline:
            assert mine.hold("r1") is None
            time.sleep(LEASE_S / 4)
        holder.kill()  # SIGKILL: no release, the key only expires
        holder.wait(timeout=30)
        taken: list[Lease] = []

        def take() -> bool:
            lease = mine.hold("r1")
            if lease is not None:
                taken.append(lease)
            return lease is not None

        wait_until(take, 10)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    lease = taken[0]
    # Only the holder's token renews or frees it.
    assert not mine._renew("r1", "someone-else") and mine.holder("r1")
    mine._release("r1", "someone-else")
    assert mine.held("r1")
    # Taken by another (as after an expiry during a long pause): the old holder sees it lost.
    mine._redis.set(LEASE_PREFIX + "r1", "another-holder", px=60_000)
    assert lease.lost.wait(5 * LEASE_S)
    lease.release()
    assert mine.holder("r1") == "another-holder"  # its release did not free another's lease


def test_exactly_one_replica_takes_an_unattended_rollout_over(
    redis_url: str, records: list[RedisRecords]
) -> None:
    a, b = _open(redis_url, records), _open(redis_url, records)
    a.write({"id": "r2", "state": "building"})
    a.write({"id": "r3", "state": "ready"})  # needs no runner
    calls: list[tuple[str, str]] = []
    lock = threading.Lock()

    def taker(name: str) -> object:
        def take(record_id: str, lease: Lease) -> None:
            with lock:
                calls.append((name, record_id))  # keeps the lease, as a running build does

        return take

    a.watch(taker("a"))  # type: ignore[arg-type]
    b.watch(taker("b"))  # type: ignore[arg-type]
    wait_until(lambda: len(calls) >= 1, 10)
    time.sleep(3 * LEASE_S)  # several more watch rounds of both
    assert len(calls) == 1 and calls[0][1] == "r2", calls
    assert a.held("r2") and not a.held("r3")


def test_records_answer_503_while_redis_is_away(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as url:
        pass  # stopped: nothing listens there now
    gone = RedisRecords.from_url(url, lease_s=LEASE_S)
    try:
        with pytest.raises(ClipsearchError) as exc:
            gone.load_all()
        assert exc.value.type == ErrorType.unavailable
        assert not gone.cancel_requested("x")  # asked between pages: "no", never a crash
    finally:
        gone.close()


def _replica(
    settings: Settings, embedder: GatedBulk, store: VersionedStore, url: str
) -> InProcessReindexer:
    return InProcessReindexer(
        settings=settings,
        embedder=embedder,  # type: ignore[arg-type]
        store=store,
        records=RedisRecords.from_url(url, lease_s=LEASE_S),
    )


def test_two_replicas_answer_alike_and_either_cancels(
    parts: tuple[Settings, GatedBulk, VersionedStore], redis_url: str
) -> None:
    settings, embedder, store = parts
    store.upsert("media", _texts(embedder, 2 * PAGE))
    current = store.aliases()["media"]
    a = _replica(settings, embedder, store, redis_url)
    b = _replica(settings, embedder, store, redis_url)
    try:
        record = a.start("media")
        wait_until(lambda: embedder.bulk_calls == 1)  # a's build is held inside the encoder
        seen_a, seen_b = a.status(record["id"]), b.status(record["id"])
        assert seen_b == seen_a and seen_b["state"] == "building", (seen_a, seen_b)
        assert [r["id"] for r in b.list()] == [r["id"] for r in a.list()] == [record["id"]]
        with pytest.raises(ClipsearchError) as second:
            b.start("media")  # one rollout per collection, whichever replica is asked
        assert second.value.type == ErrorType.conflict
        with pytest.raises(ClipsearchError) as unknown:
            b.status("no-such-rollout")
        assert unknown.value.type == ErrorType.not_found
        threading.Timer(0.5, embedder.gate.set).start()  # a's held page finishes, then it stops
        cancelled = b.cancel(record["id"])  # asked on the replica that does not run it
        assert cancelled["state"] == "cancelled", cancelled
        assert a.status(record["id"]) == b.status(record["id"])
    finally:
        a.close()
        b.close()
    assert store.aliases() == {"media": current}
    assert not store.inner.collection_exists(record["target"])


def test_a_closing_replica_hands_its_build_to_another(
    parts: tuple[Settings, GatedBulk, VersionedStore],
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A rolling update: the replica running a rollout stops; the other finishes it."""
    settings, embedder, store = parts
    docs = _texts(embedder, 2 * PAGE)
    store.upsert("media", docs)
    a = _replica(settings, embedder, store, redis_url)
    b = _replica(settings, embedder, store, redis_url)
    try:
        record = a.start("media", promote="auto")
        wait_until(lambda: embedder.bulk_calls == 1)
        closing = threading.Thread(target=a.close)
        closing.start()
        embedder.gate.set()  # a's held page returns; a sees it is closing and lets go
        closing.join(60)
        done = wait_rollout(b.status, record["id"])
    finally:
        a.close()
        b.close()
    assert done["state"] == "completed", done
    assert f"rollout {record['id']} left to another gateway" in caplog.text
    assert f"rollout {record['id']} has no live runner" in caplog.text  # b took it
    assert store.aliases()["media"] == record["target"]
    assert _ids(store, "media") == {p.id for p in docs}


def test_a_ready_rollout_is_changed_by_one_replica_at_a_time(
    parts: tuple[Settings, GatedBulk, VersionedStore], redis_url: str
) -> None:
    settings, embedder, store = parts
    embedder.gate.set()
    docs = _texts(embedder, 10)
    store.upsert("media", docs)
    a = _replica(settings, embedder, store, redis_url)
    b = _replica(settings, embedder, store, redis_url)
    other = RedisRecords.from_url(redis_url, lease_s=LEASE_S)  # a third replica, mid-promote
    try:
        record = a.start("media")
        ready = wait_rollout(b.status, record["id"])
        assert ready["state"] == "ready", ready
        wait_until(lambda: not other.held(record["id"]), 10)  # a's build thread has let go
        lease = other.hold(record["id"])
        assert lease is not None
        for replica, act in ((a, a.promote), (b, b.cancel)):
            with pytest.raises(ClipsearchError) as busy:
                act(record["id"])
            assert busy.value.type == ErrorType.conflict, replica
        lease.release()
        promoted = b.promote(record["id"])
        assert promoted["state"] == "completed", promoted
        assert a.status(record["id"])["state"] == "completed"
        with pytest.raises(ClipsearchError) as late:
            a.cancel(record["id"])  # completed, whichever replica is asked
        assert late.value.type == ErrorType.conflict
    finally:
        a.close()
        b.close()
        other.close()
    assert store.aliases()["media"] == record["target"]
    assert _ids(store, "media") == {p.id for p in docs}


def test_an_orphaned_rollout_that_cannot_be_built_here_fails_cleanly(
    parts: tuple[Settings, GatedBulk, VersionedStore], redis_url: str
) -> None:
    """Its runner died and its bundle is served by no replica that is left: the taker drops the
    half-built version and fails the rollout; the current version serves on."""
    settings, embedder, store = parts
    embedder.gate.set()
    store.upsert("media", _texts(embedder, 5))
    current = store.aliases()["media"]
    spaces = dict(embedder.info().spaces)
    building = store.begin("media", spaces, "gone-bundle@1")  # type: ignore[arg-type]
    shared = RedisRecords.from_url(redis_url, lease_s=LEASE_S)
    orphan = {
        "id": "orphan",
        "kind": "reindex",
        "collection": "media",
        "bundle": "gone-bundle@1",
        "source_bundle": "gone-bundle@1",
        "bundle_spec": None,
        "source": current,
        "target": building,
        "state": "building",
        "created_at": "2026-01-01T00:00:00+00:00",
    }
    shared.write(orphan)  # as a replica killed mid-build leaves it: no lease
    b = _replica(settings, embedder, store, redis_url)
    try:
        done = wait_rollout(b.status, "orphan")
    finally:
        b.close()
        shared.close()
    assert done["state"] == "failed" and "cannot be served here" in done["error"], done
    assert store.aliases() == {"media": current}
    assert not store.inner.collection_exists(building)
    assert store.count("media") == 5


def test_a_rollout_whose_record_redis_lost_fails_cleanly(
    parts: tuple[Settings, GatedBulk, VersionedStore], redis_url: str
) -> None:
    """Redis restarted without persistence mid-build: the record and the lease are gone, so no
    replica could take the rollout over; its runner fails it as a restart would."""
    settings, embedder, store = parts
    store.upsert("media", _texts(embedder, 2 * PAGE))
    current = store.aliases()["media"]
    a = _replica(settings, embedder, store, redis_url)
    try:
        record = a.start("media")
        wait_until(lambda: embedder.bulk_calls == 1)
        RedisRecords.from_url(redis_url, lease_s=LEASE_S)._redis.flushall()
        wait_until(lambda: a._leases[record["id"]].lost.is_set(), 10)  # the renewal is refused
        embedder.gate.set()
        done = wait_rollout(a.status, record["id"])
    finally:
        a.close()
    assert done["state"] == "failed" and "Redis lost" in done["error"], done
    assert store.aliases() == {"media": current}
    assert not store.inner.collection_exists(record["target"])
