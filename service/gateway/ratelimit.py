"""Per-caller rate limits: a token bucket per API key and class of call.

A key has one bucket for searches (``search``) and one for everything that writes (``ingest`` and
``admin``), sized by ``CLIPSEARCH_AUTH__SEARCH_RATE__*`` and ``..._WRITE_RATE__*``: one
tenant's bulk script empties its own bucket, never another key's, nor its own search bucket. A
call that finds its bucket empty is refused at once (429 / RESOURCE_EXHAUSTED) with the time
until a token is back, before any work, as the encoder's lanes refuse a full queue.

The rates are read from the settings at every call, so new settings apply at once. Buckets live in
this process: with N gateway replicas behind a balancer a key gets up to N times the rate.
Memory is bounded: at most ``max_buckets`` are kept, the least recently used forgotten (a
forgotten bucket starts full again, as it would after a quiet spell).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from service.core.config import RateLimit
from service.core.errors import ClipsearchError, ErrorType

MAX_BUCKETS = 10_000


class RateLimiter:
    """Token buckets by name; thread-safe; the clock is injectable (tests never sleep)."""

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_buckets: int = MAX_BUCKETS
    ) -> None:
        self.clock = clock
        self.max_buckets = max_buckets
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def take(self, bucket: str, limit: RateLimit) -> float | None:
        """Take a token from ``bucket``: None when taken (or no limit is set), else the seconds
        until one will be there."""
        if limit.per_s <= 0:
            return None
        capacity = limit.capacity
        with self._lock:
            now = self.clock()
            tokens, at = self._buckets.get(bucket, (capacity, now))
            tokens = min(capacity, tokens + max(0.0, now - at) * limit.per_s)
            wait = None if tokens >= 1.0 else (1.0 - tokens) / limit.per_s
            self._buckets[bucket] = (tokens if wait is not None else tokens - 1.0, now)
            self._buckets.move_to_end(bucket)
            while len(self._buckets) > self.max_buckets:
                self._buckets.popitem(last=False)
        return wait

    def check(self, bucket: str, limit: RateLimit, what: str) -> None:
        """:meth:`take`, or raise ``overloaded`` with the retry-after (429 + ``Retry-After`` over
        REST, RESOURCE_EXHAUSTED + ``retry-after`` metadata over gRPC)."""
        wait = self.take(bucket, limit)
        if wait is not None:
            raise ClipsearchError(
                ErrorType.overloaded,
                f"rate limit: {what} may make {limit.per_s:g} calls a second "
                f"({limit.capacity:g} at once); retry in {wait:.2f} s",
                {"per_s": limit.per_s, "burst": limit.capacity},
                retry_after_s=wait,
            )

    def __len__(self) -> int:
        return len(self._buckets)
