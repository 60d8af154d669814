"""Batch packing: count limit, token budget over the padded cost, dead and expired items."""

from __future__ import annotations

from service.core.errors import ClipsearchError, ErrorType
from service.encoder.requests import Request
from service.encoder.units import Item, pack


def items(*lengths: int, deadline: float | None = None) -> list[Item]:
    request = Request("text", "bulk", len(lengths), deadline)
    return [Item(request, i, None, length=n) for i, n in enumerate(lengths)]


def test_the_padded_cost_is_items_times_the_longest() -> None:
    got, cost, full = pack(items(4, 4, 10, 4), limit=32, cap=24, now=0.0)
    assert [it.length for it in got] == [4, 4]  # a third item of 10 would cost 3 x 10 > 24
    assert cost == 8 and full


def test_the_count_limit_and_a_batch_that_is_not_full() -> None:
    got, cost, full = pack(items(3, 3, 3), limit=2, cap=1e9, now=0.0)
    assert len(got) == 2 and cost == 6 and full
    got, cost, full = pack(items(3), limit=2, cap=1e9, now=0.0)
    assert len(got) == 1 and not full


def test_one_item_always_goes_even_over_the_budget() -> None:
    got, cost, full = pack(items(300, 2), limit=32, cap=64, now=0.0)
    assert [it.length for it in got] == [300] and cost == 300 and full


def test_dead_and_expired_items_are_skipped() -> None:
    live = items(5, 5)
    dead = items(5)
    dead[0].request.fail(ClipsearchError(ErrorType.unavailable, "cancelled"), cancelled=True)
    late = items(5, deadline=1.0)
    got, _, _ = pack([dead[0], late[0], *live], limit=32, cap=1e9, now=2.0)
    assert got == live
