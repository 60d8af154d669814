"""Which items are indexed already, asked of the writer's lookup server over a real Redis."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from indexer.distributed.lookups import LookupServer, indexed_matches, request_matches
from service.core.domain import Point, point_id
from service.core.errors import ClipsearchError, ErrorType
from service.store.edge import QdrantEdgeStore
from tests.redis_server import redis_server

COLL = "media"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis.Redis]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        c = redis.Redis.from_url(url)
        yield c
        c.close()


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[QdrantEdgeStore]:
    s = QdrantEdgeStore(tmp_path / "data")
    s.ensure_collection(COLL, {"image": 2, "caption": 2, "description": 2})
    s.upsert(
        COLL,
        [Point(point_id(COLL, n), {"image": [1.0, 0.0]}, {"sha256": f"hash-{n}"}) for n in "ab"],
    )
    yield s
    s.close()


def test_only_points_stored_with_the_same_hash_match(store: QdrantEdgeStore) -> None:
    a, b, c = (point_id(COLL, n) for n in "abc")
    pairs = [(a, "hash-a"), (b, "changed"), (c, "hash-c")]
    assert indexed_matches(store, COLL, pairs) == {a}
    assert indexed_matches(store, COLL, []) == set()


def test_a_writer_answers_and_without_one_the_asker_times_out(
    client: redis.Redis, store: QdrantEdgeStore
) -> None:
    a, b = point_id(COLL, "a"), point_id(COLL, "b")
    with pytest.raises(ClipsearchError) as info:
        request_matches(client, COLL, [(a, "hash-a")], timeout_s=0.3)
    assert info.value.type is ErrorType.unavailable
    server = LookupServer(client, store)
    try:
        # The unanswered request above expired: it is dropped, not answered late.
        assert request_matches(client, COLL, [(a, "hash-a"), (b, "x")], timeout_s=10) == {a}
        with pytest.raises(ClipsearchError) as info:
            request_matches(client, "missing", [(a, "hash-a")], timeout_s=10)
        assert info.value.type is ErrorType.unavailable  # the store's error, passed back
        client.rpush("clipsearch:lookups", b"not json")  # a bad request does not stop it
        found: list[set[str]] = []
        askers = [
            threading.Thread(
                target=lambda: found.append(
                    request_matches(client, COLL, [(a, "hash-a")], timeout_s=10)
                )
            )
            for _ in range(4)
        ]
        for t in askers:
            t.start()
        for t in askers:
            t.join()
        assert found == [{a}] * 4
        assert server.crashed is None and server.alive()
    finally:
        server.close()
    assert not server.alive()
