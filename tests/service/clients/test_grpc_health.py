"""The gRPC client's health pieces on their own, with the clock passed in: the hedge delay
estimator, the hedge budget and the per-worker ejection state machine."""

from __future__ import annotations

import pytest

from service.clients.grpc import (
    DOWN,
    EJECTED,
    SERVING,
    Budget,
    Ejection,
    HealthPolicy,
    HedgeDelay,
)

POLICY = HealthPolicy(eject_after=3, eject_base_s=2.0, eject_max_s=10.0, forgive_after_s=60.0)


def test_the_hedge_delay_waits_for_enough_samples_then_follows_the_p95() -> None:
    delay = HedgeDelay(floor_s=0.01, initial_s=0.5, quantile=0.95, window=100, min_samples=20)
    assert delay.delay() == 0.5
    for i in range(19):
        delay.observe(0.001 * (i + 1))
    assert delay.delay() == 0.5  # 19 samples: still the initial delay
    delay.observe(0.020)
    # 20 samples 1..20 ms: nearest-rank p95 is the 19th
    assert delay.delay() == pytest.approx(0.019)
    for _ in range(100):  # the window forgets the old ones
        delay.observe(0.2)
    assert delay.delay() == pytest.approx(0.2)


def test_the_hedge_delay_never_goes_below_its_floor() -> None:
    delay = HedgeDelay(floor_s=0.05, initial_s=0.0, min_samples=5)
    assert delay.delay() == 0.05
    for _ in range(50):
        delay.observe(0.001)
    assert delay.delay() == 0.05


def test_the_hedge_delay_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        HedgeDelay(floor_s=0.01, initial_s=0.1, quantile=1.5)
    with pytest.raises(ValueError):
        HedgeDelay(floor_s=0.01, initial_s=0.1, window=0)


def test_the_budget_allows_a_burst_then_its_share_of_calls() -> None:
    budget = Budget(rate=0.25, burst=2)
    assert budget.take() and budget.take() and not budget.take()
    for _ in range(3):
        budget.earn()
    assert not budget.take()  # 0.75 tokens
    budget.earn()
    assert budget.take() and not budget.take()
    for _ in range(100):
        budget.earn()
    assert budget.take() and budget.take() and not budget.take()  # capped at the burst


def test_consecutive_failures_eject_and_a_success_in_between_resets_the_count() -> None:
    e = Ejection(POLICY, now=0.0)
    assert e.failure(1.0, "timed out") is None and e.failure(1.1, "timed out") is None
    assert e.success(1.2, probe=False) is None and e.failures == 0
    assert e.failure(1.3, "x") is None and e.failure(1.4, "x") is None
    assert e.failure(1.5, "x") == EJECTED and e.state == EJECTED
    assert e.until == pytest.approx(3.5) and e.reason == "x"
    assert e.failure(1.6, "x") is None  # already ejected: no second ejection


def test_only_a_probe_after_the_back_off_re_admits() -> None:
    e = Ejection(POLICY, now=0.0)
    for t in (1.0, 1.1, 1.2):
        e.failure(t, "timed out")
    assert e.state == EJECTED
    assert e.success(2.0, probe=True) is None  # inside the 2 s back-off
    assert e.success(4.0, probe=False) is None  # a request's answer is no probe
    assert e.success(4.0, probe=True) == SERVING and e.state == SERVING and e.reason is None


def test_the_back_off_doubles_on_each_new_ejection_up_to_its_cap_and_is_forgiven() -> None:
    e = Ejection(POLICY, now=0.0)
    backoffs = []
    t = 0.0
    for _ in range(5):
        for _ in range(3):
            t += 0.1
            e.failure(t, "x")
        backoffs.append(round(e.until - t, 6))
        t = e.until
        assert e.success(t, probe=True) == SERVING
    assert backoffs == [2.0, 4.0, 8.0, 10.0, 10.0]
    t += 61.0  # a minute serving forgives the past ejections
    for _ in range(3):
        e.failure(t, "x")
    assert e.until - t == pytest.approx(2.0)


def test_unreachable_is_down_at_once_and_back_with_the_first_passing_probe() -> None:
    e = Ejection(POLICY, now=0.0)
    assert e.failure(1.0, "connection refused", unreachable=True) == DOWN
    assert e.state == DOWN and e.reason == "connection refused"
    assert e.failure(1.5, "connection refused", unreachable=True) is None  # still down
    assert e.success(2.0, probe=True) == SERVING  # no back-off for a worker that was down


def test_a_worker_that_says_not_ready_is_down_and_timeouts_while_down_eject_it() -> None:
    e = Ejection(POLICY, now=0.0)
    assert e.not_ready("warming up") == DOWN and e.reason == "warming up"
    assert e.not_ready("warming up") is None
    for t in (1.0, 2.0):
        assert e.failure(t, "timed out") is None
    assert e.failure(3.0, "timed out") == EJECTED  # hung, not merely starting
    assert e.not_ready("warming up") is None and e.state == EJECTED
