"""An embedder wrapper whose chosen calls wait at a gate: keeps a request or a job busy."""

from __future__ import annotations

import threading
from typing import Any


class Gated:
    """Wraps ``inner``; a call to one of ``methods`` sets ``entered`` and waits for ``release``
    (at most 30 s) before it runs. Everything else passes straight through."""

    def __init__(self, inner: Any, *methods: str) -> None:
        self._inner = inner
        self._methods = frozenset(methods)
        self.entered = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if name not in self._methods:
            return target

        def gated(*args: Any, **kw: Any) -> Any:
            self.entered.set()
            self.release.wait(30)
            return target(*args, **kw)

        return gated
