"""What the tower scheduler moves: items, lane queues, batches; and the thread priority helper."""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from service.core.domain import Lane
from service.core.errors import ClipsearchError, ErrorType
from service.encoder.requests import Request

log = logging.getLogger(__name__)

LANES: tuple[Lane, ...] = ("interactive", "bulk")
_RATE_SMOOTHING = 0.3


@dataclass(eq=False)
class Item:
    request: Request
    index: int
    payload: Any  # encoded image bytes, or a TokenizedText
    prepared: Any = None  # model input once preprocessed
    length: int = 1  # tokens (text) or 1 (image)
    prep_s: float = 0.0

    @property
    def dead(self) -> bool:
        return self.request.finished


@dataclass
class LaneQueue:
    raw: deque[Item] = field(default_factory=deque)
    ready: deque[Item] = field(default_factory=deque)
    preparing: int = 0
    admitted: int = 0  # items in the system: queued, preparing or in a batch


@dataclass
class Batch:
    tower: str
    lane: Lane
    items: list[Item]
    cost: int
    started: float = 0.0
    ended: float = 0.0
    outputs: Any = None


def pack(ready: Iterable[Item], limit: int, cap: float, now: float) -> tuple[list[Item], int, bool]:
    """The batch the head of a lane would make now: live items in queue order, at most
    ``limit`` of them and at most ``cap`` padded cost (items x longest); always one item at
    least. Returns the items, their padded cost, and whether the batch is full."""
    picked: list[Item] = []
    longest = 0
    for item in ready:
        if item.dead or item.request.expired(now):
            continue
        widest = max(longest, item.length)
        if picked and (len(picked) >= limit or (len(picked) + 1) * widest > cap):
            return picked, len(picked) * longest, True
        picked.append(item)
        longest = widest
    full = len(picked) >= limit or len(picked) * longest >= cap
    return picked, len(picked) * longest, full


def smooth(old: float | None, sample: float) -> float:
    return sample if old is None else old + _RATE_SMOOTHING * (sample - old)


def lower_priority(priority: str) -> None:
    """Lower the calling thread's OS scheduling priority (Linux: a thread is a task with its own
    policy and nice value). Lowering needs no privilege; raising it back would, so it is never
    done on a thread that also serves search queries."""
    tid = threading.get_native_id()
    try:
        if priority == "idle" and hasattr(os, "SCHED_IDLE"):
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        elif priority in ("idle", "low") and hasattr(os, "setpriority"):
            os.setpriority(os.PRIO_PROCESS, tid, 10)
    except OSError as exc:  # not permitted in some sandboxes: run at normal priority
        log.info("cannot lower the priority of bulk threads: %s", exc)


def as_error(exc: BaseException) -> ClipsearchError:
    if isinstance(exc, ClipsearchError):
        return exc
    return ClipsearchError(ErrorType.internal, f"inference failed: {exc}")


class SearchTraffic:
    """When search traffic (an interactive item) last reached each tower kind (``text``,
    ``image``). One is shared by the towers of every bundle an encoder serves: a query to bundle
    A slices the bulk batches of bundle B's tower of the same kind as it slices A's own, so it
    waits behind at most one slice of B's bulk work (``bulk_slice_ms``, or half of one B item's
    inference; one item at least) instead of a whole B batch. Reads and writes are single dict
    operations (atomic under the GIL): no lock on the scheduling path."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        # Every tower sharing it (each bundle's text and image towers): the priority gate.
        self._towers: tuple[Any, ...] = ()
        self._joining = threading.Lock()  # writers only: two bundles may load at once

    def note(self, tower: str, now: float) -> None:
        self._last[tower] = now

    def last(self, tower: str) -> float:
        return self._last.get(tower, float("-inf"))

    def join(self, tower: Any) -> None:
        """``tower`` (a ``TowerScheduler``) shares the gate; replaced whole, read lock-free."""
        with self._joining:
            self._towers = (*self._towers, tower)

    def leave(self, tower: Any) -> None:
        with self._joining:
            self._towers = tuple(t for t in self._towers if t is not tower)

    def interactive_elsewhere(self, tower: Any) -> bool:
        """Whether another tower (of any bundle, any kind) holds interactive work: then
        ``tower`` starts no bulk batch (the strict priority gate of :mod:`.tower`)."""
        return any(t is not tower and t.interactive_pending() for t in self._towers)
