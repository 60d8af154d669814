"""Which items are already indexed with the same content: asked of the process holding the store.

A resumed job skips every item whose deterministic point already exists with payload ``sha256``
equal to the item's content hash, so finishing it never embeds a finished item again. The
in-process job runner asks its store directly (:func:`indexed_matches`). Indexer workers may
not reach the store at all (the embedded Qdrant Edge store lives inside the gateway, one
process per data dir), so they ask the writer, which always holds the store it writes to
(inside the gateway, or ``clipsearch writer`` next to a Qdrant server), over Redis:

* request: ``RPUSH clipsearch:lookups {"reply", "collection", "pairs": [[point id, sha256]],
  "deadline"}``;
* answer: the writer's :class:`LookupServer` ``BLPOP``\\ s it, retrieves those ids and pushes
  ``{"found": [point ids]}`` (or ``{"error"}``) to the reply list, which expires;
* a lost request or answer (a writer killed between the two) is a timeout: the task retries,
  and an expired request is dropped unanswered.

Only the ids of one batch cross, so the cost follows the job, never the collection's size, and
one path serves the embedded store and a Qdrant server alike.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import redis

from service.core.errors import ClipsearchError, ErrorType
from service.store.base import VectorStore

log = logging.getLogger(__name__)

LOOKUP_QUEUE = "clipsearch:lookups"
REPLY_TTL_S = 60
_BLOCK_S = 1.0
MAX_BACKOFF_S = 5.0

Pair = tuple[str, str]  # (point id, content sha256)


def indexed_matches(store: VectorStore, collection: str, pairs: Sequence[Pair]) -> set[str]:
    """The point ids among ``pairs`` stored with that same payload ``sha256``."""
    wanted = dict(pairs)
    if not wanted:
        return set()
    records = store.retrieve(collection, list(wanted))
    return {r.id for r in records if r.payload.get("sha256") == wanted.get(r.id)}


def request_matches(
    client: redis.Redis, collection: str, pairs: Sequence[Pair], *, timeout_s: float
) -> set[str]:
    """Ask a writer for :func:`indexed_matches`; ClipsearchError(unavailable) if none answers
    within ``timeout_s`` (the caller retries: a skip is never guessed)."""
    if not pairs:
        return set()
    reply_key = f"{LOOKUP_QUEUE}:reply:{uuid.uuid4().hex}"
    deadline = time.time() + timeout_s
    request = {
        "reply": reply_key,
        "collection": collection,
        "pairs": [list(p) for p in pairs],
        "deadline": deadline,
    }
    client.rpush(LOOKUP_QUEUE, json.dumps(request))
    # Short blocking slices: each stays well inside the connection's socket timeout.
    while (left := deadline - time.time()) > 0:
        got: Any = client.blpop([reply_key], timeout=min(left, _BLOCK_S))
        if got:
            answer = json.loads(got[1])
            if "error" in answer:
                raise ClipsearchError(
                    ErrorType.unavailable, f"the writer could not look up: {answer['error']}"
                )
            return {str(i) for i in answer["found"]}
    raise ClipsearchError(
        ErrorType.unavailable,
        f"no writer answered which items are indexed within {timeout_s:g} s",
        retry_after_s=timeout_s,
    )


class LookupServer:
    """A thread that answers lookups from this process's store; started at once."""

    def __init__(self, client: redis.Redis, store: VectorStore) -> None:
        self._redis = client
        self._store = store
        self._stop = threading.Event()
        self.crashed: BaseException | None = None
        self.answered = 0
        self._thread = threading.Thread(target=self._run, name="lookup-server", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        backoff = 0.0
        try:
            while not self._stop.is_set():
                if backoff and self._stop.wait(backoff):
                    return
                try:
                    got: Any = self._redis.blpop([LOOKUP_QUEUE], timeout=_BLOCK_S)
                    if got:
                        self._answer(got[1])
                    backoff = 0.0
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    # The writer loop reports an unreachable Redis; here, only wait it out.
                    log.debug("lookup server: Redis unreachable: %s", exc)
                    backoff = min(MAX_BACKOFF_S, max(0.1, backoff * 2))
        except BaseException as exc:  # the owner's readiness reports it
            self.crashed = exc
            log.exception("the lookup server crashed")

    def _answer(self, raw: bytes) -> None:
        try:
            request = json.loads(raw)
            reply_key, deadline = str(request["reply"]), float(request["deadline"])
            collection = str(request["collection"])
            pairs = [(str(p[0]), str(p[1])) for p in request["pairs"]]
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            log.warning("dropping an unreadable lookup request: %s", exc)
            return
        if time.time() > deadline:  # its asker has given up (and retries)
            return
        answer: dict[str, Any]
        try:
            answer = {"found": sorted(indexed_matches(self._store, collection, pairs))}
        except Exception as exc:  # a missing collection, a store down: the asker retries
            answer = {"error": exc.message if isinstance(exc, ClipsearchError) else repr(exc)}
        pipe = self._redis.pipeline(transaction=True)
        pipe.rpush(reply_key, json.dumps(answer))
        pipe.expire(reply_key, REPLY_TTL_S)
        pipe.execute()
        self.answered += 1
