"""Token buckets per key, on an injected clock (no test sleeps)."""

from __future__ import annotations

import pytest

from service.core.config import RateLimit
from service.core.errors import ClipsearchError, ErrorType
from service.gateway.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    limit = RateLimit(per_s=2.0, burst=3)
    assert [limiter.take("a", limit) for _ in range(3)] == [None, None, None]
    assert limiter.take("a", limit) == pytest.approx(0.5)  # one token comes back in 1/2 s
    clock.now += 0.25
    assert limiter.take("a", limit) == pytest.approx(0.25)  # refusals take nothing
    clock.now += 0.25
    assert limiter.take("a", limit) is None
    assert limiter.take("a", limit) == pytest.approx(0.5)
    clock.now += 100
    assert [limiter.take("a", limit) for _ in range(4)][-1] is not None  # refilled to 3, not 200


def test_buckets_are_separate() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    limit = RateLimit(per_s=1.0)  # burst 0 = one second's worth = 1
    assert limiter.take("bulk", limit) is None
    assert limiter.take("bulk", limit) is not None
    assert limiter.take("searcher", limit) is None


def test_no_limit_by_default_and_bounded_memory() -> None:
    limiter = RateLimiter(clock=Clock(), max_buckets=2)
    assert all(limiter.take("a", RateLimit()) is None for _ in range(1000))
    assert len(limiter) == 0
    for name in "abc":
        limiter.take(name, RateLimit(per_s=1.0))
    assert len(limiter) == 2


def test_check_raises_overloaded_with_retry_after() -> None:
    limiter = RateLimiter(clock=Clock())
    limit = RateLimit(per_s=4.0, burst=1)
    limiter.check("k", limit, "key bot")
    with pytest.raises(ClipsearchError) as caught:
        limiter.check("k", limit, "key bot")
    assert caught.value.type is ErrorType.overloaded
    assert caught.value.retry_after_s == pytest.approx(0.25)
    assert "key bot" in caught.value.message
