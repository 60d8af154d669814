"""The garbage collector's pauses are measured, and a started process's objects leave its scans
(service.core.collector), on the real ``gc`` of this process."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from service.core.collector import BUCKETS, PAUSES, freeze_started, refreeze


class Cycle:
    """An object only the cyclic collector can free."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture(name="thawed")
def thawed_fixture() -> Iterator[None]:
    """Whatever a test freezes is thawed after it (the test session's objects stay collectable)."""
    assert gc.get_freeze_count() == 0
    try:
        yield
    finally:
        gc.unfreeze()


def _figures(registry: CollectorRegistry, generation: str) -> tuple[float, float, list[float]]:
    labels = {"generation": generation}
    count = registry.get_sample_value("clipsearch_gc_pause_seconds_count", labels) or 0.0
    total = registry.get_sample_value("clipsearch_gc_pause_seconds_sum", labels) or 0.0
    buckets = [
        registry.get_sample_value("clipsearch_gc_pause_seconds_bucket", {**labels, "le": le}) or 0.0
        for le in (*map(str, BUCKETS), "+Inf")
    ]
    return count, total, buckets


def test_every_full_collection_is_measured_in_a_histogram() -> None:
    registry = CollectorRegistry()
    PAUSES.expose(registry)
    count, total, _ = _figures(registry, "2")
    gc.collect()
    gc.collect()
    after, after_total, buckets = _figures(registry, "2")
    assert after >= count + 2
    assert after_total > total
    assert buckets == sorted(buckets)  # cumulative
    assert buckets[-1] == after  # +Inf holds every pause


def test_exposing_twice_registers_and_installs_once() -> None:
    registry = CollectorRegistry()
    PAUSES.expose(registry)
    PAUSES.expose(registry)
    families = [m.name for m in registry.collect()]
    assert families.count("clipsearch_gc_pause_seconds") == 1
    assert sum(1 for cb in gc.callbacks if getattr(cb, "__self__", None) is PAUSES) == 1


@pytest.mark.usefixtures("thawed")
def test_a_frozen_object_leaves_the_scans_and_refreeze_frees_what_was_let_go() -> None:
    registry = CollectorRegistry()
    PAUSES.expose(registry)
    kept, dropped = Cycle(), Cycle()
    gone = weakref.ref(dropped)
    frozen = freeze_started("this test")
    # Other threads of the session may free frozen objects meanwhile: the count only falls.
    assert frozen >= gc.get_freeze_count() > 0
    assert 0 < (registry.get_sample_value("clipsearch_gc_frozen_objects") or 0) <= frozen
    assert not any(o is kept for o in gc.get_objects())  # out of every generation's scans
    del dropped
    gc.collect()
    assert gone() is not None  # frozen: a cycle let go is not freed...
    assert refreeze("letting it go")
    assert gone() is None  # ...until it is thawed and collected
    assert gc.get_freeze_count() > 0  # the rest is frozen again
    assert not any(o is kept for o in gc.get_objects())


@pytest.mark.usefixtures("thawed")
def test_refreeze_does_nothing_in_a_process_that_froze_nothing() -> None:
    assert not refreeze("nothing")
    assert gc.get_freeze_count() == 0
