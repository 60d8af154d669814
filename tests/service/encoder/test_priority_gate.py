"""The strict priority gate across towers (issue 14): no bulk batch of any bundle starts while
another tower sharing the encoder's traffic holds interactive work. Real tower schedulers (their
core threads, queues and batch formation); the forward passes are functions of the test, so a
query can be held in flight for as long as the test likes, with no timing guess."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from service.core.config import EncoderSettings
from service.core.domain import Lane
from service.encoder.metrics import EncoderMetrics
from service.encoder.requests import Request
from service.encoder.tower import TowerScheduler
from service.encoder.units import Batch, Item, SearchTraffic
from tests.support import wait_until

HOLD_S = 0.5  # how long a held query keeps another bundle's bulk batch from starting


class Towers:
    def __init__(self) -> None:
        self.traffic = SearchTraffic()
        self.metrics = EncoderMetrics()
        self.calls: list[str] = []
        self.hold = threading.Event()
        self.made: list[TowerScheduler] = []

    def tower(self, bundle: str, *, held: bool = False) -> TowerScheduler:
        def forward(inputs: list[Any], lane: Lane) -> Any:
            self.calls.append(f"{bundle}:{len(inputs)}")
            if held:
                assert self.hold.wait(30)
            return inputs

        box: list[TowerScheduler] = []
        t = TowerScheduler(
            "text",
            EncoderSettings(),
            self.metrics.for_bundle(bundle),
            forward=forward,
            emit=_emit(box),
            traffic=self.traffic,
        )
        box.append(t)
        self.made.append(t)
        return t


def _emit(box: list[TowerScheduler]) -> Callable[[Batch], None]:
    def emit(batch: Batch) -> None:
        box[0].release(batch.lane, len(batch.items))
        for item in batch.items:
            item.request.set_item(item.index, item.prepared)

    return emit


def _submit(tower: TowerScheduler, lane: Lane, n: int = 1) -> Request:
    request = Request("text", lane, n, None)
    tower.admit(lane, n)
    tower.enqueue([Item(request, i, i, prepared=i) for i in range(n)], prepared=True)
    return request


@pytest.fixture()
def towers() -> Iterator[Towers]:
    t = Towers()
    yield t
    t.hold.set()
    for tower in t.made:
        tower.close()


def test_bulk_work_of_one_bundle_waits_for_a_query_to_another(towers: Towers) -> None:
    a, b = towers.tower("a@1", held=True), towers.tower("b@1")
    query = _submit(a, "interactive")
    wait_until(lambda: towers.calls == ["a@1:1"], 10)  # the query runs, held
    bulk = _submit(b, "bulk", 3)
    assert not bulk.wait(HOLD_S)  # B's bulk batch does not start while A's query is in flight
    assert towers.calls == ["a@1:1"]
    towers.hold.set()
    assert query.wait(10) and bulk.wait(10)
    assert towers.calls[0] == "a@1:1" and towers.calls[1].startswith("b@1:")


def test_a_query_of_the_same_bundle_goes_first_and_bulk_runs_when_nothing_is_asked(
    towers: Towers,
) -> None:
    a = towers.tower("a@1")
    assert _submit(a, "bulk", 2).wait(10)  # no query anywhere: bulk runs at once
    b = towers.tower("b@1", held=True)
    _submit(b, "interactive")
    wait_until(lambda: towers.calls[-1] == "b@1:1", 10)
    bulk = _submit(a, "bulk", 2)
    query = _submit(a, "interactive")  # a query to A itself is not held back by B's
    assert query.wait(10) and not bulk.wait(0)
    b.hung = True  # a hung tower holds nothing back (its query is the watchdog's business)
    assert bulk.wait(10)


def test_a_closed_tower_leaves_the_gate(towers: Towers) -> None:
    a, b = towers.tower("a@1", held=True), towers.tower("b@1")
    _submit(a, "interactive")
    wait_until(lambda: towers.calls == ["a@1:1"], 10)
    assert towers.traffic.interactive_elsewhere(b)
    towers.hold.set()
    a.close()
    assert not towers.traffic.interactive_elsewhere(b)
    assert _submit(b, "bulk").wait(10)
