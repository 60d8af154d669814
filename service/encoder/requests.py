"""Requests in flight through the batcher, and the handle their callers wait on.

A request of ``n`` items completes when all of its items have a result. Text items either all
succeed or the request fails as a whole (``TextEmbeddings`` has no per-row error); an image item
may carry its own error while the others succeed. Callbacks run outside the request's lock so a
scheduler holding its own lock may complete requests without lock-order inversions.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from service.core.domain import Lane
from service.core.errors import ClipsearchError, ErrorType

T = TypeVar("T")


def timed_out(what: str) -> ClipsearchError:
    return ClipsearchError(ErrorType.timeout, f"the {what} deadline passed before inference")


class Request:
    def __init__(self, tower: str, lane: Lane, n: int, deadline: float | None) -> None:
        self.tower = tower
        self.lane = lane
        self.n = n
        self.deadline = deadline
        self.submitted = time.monotonic()
        self.results: list[Any] = [None] * n
        self.error: ClipsearchError | None = None
        self.cancelled = False
        self._remaining = n
        self._finished = False
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._callbacks: list[Callable[[Request], None]] = []
        if n == 0:
            self._finished = True
            self._event.set()

    @property
    def finished(self) -> bool:
        return self._finished

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    def set_item(self, index: int, value: Any) -> None:
        with self._lock:
            if self._finished:
                return
            self.results[index] = value
            self._remaining -= 1
            if self._remaining:
                return
            self._finished = True
        self._complete()

    def fail(self, error: ClipsearchError, *, cancelled: bool = False) -> bool:
        """Finish with ``error`` unless already finished; True if this call finished it."""
        with self._lock:
            if self._finished:
                return False
            self.error = error
            self.cancelled = cancelled
            self._finished = True
        self._complete()
        return True

    def on_done(self, callback: Callable[[Request], None]) -> None:
        with self._lock:
            if not self._finished:
                self._callbacks.append(callback)
                return
        callback(self)

    def wait(self, timeout: float | None) -> bool:
        return self._event.wait(timeout)

    def _complete(self) -> None:
        self._event.set()
        for callback in self._callbacks:
            callback(self)


class Pending(Generic[T]):
    """The caller's handle: ``result()`` waits, ``cancel()`` drops items not yet inferred."""

    def __init__(self, request: Request, assemble: Callable[[Request], T]) -> None:
        self._request = request
        self._assemble = assemble

    @property
    def lane(self) -> Lane:
        return self._request.lane

    def done(self) -> bool:
        return self._request.finished

    def cancel(self) -> None:
        self._request.fail(
            ClipsearchError(ErrorType.unavailable, "the request was cancelled"), cancelled=True
        )

    def add_done_callback(self, callback: Callable[[Pending[T]], None]) -> None:
        self._request.on_done(lambda _: callback(self))

    def result(self, timeout: float | None = None) -> T:
        request = self._request
        if request.deadline is not None:
            left = max(0.0, request.deadline - time.monotonic())
            timeout = left if timeout is None else min(timeout, left)
        if not request.wait(timeout):
            request.fail(timed_out(f"{request.tower} request"))
        if request.error is not None:
            raise request.error
        return self._assemble(request)
