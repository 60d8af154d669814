"""The event loop and HTTP parser `clipsearch serve` gives uvicorn: uvloop and httptools (C, both
dependencies) when importable, uvicorn's own choice when not."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
import uvicorn
import uvloop
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from clipsearch.cli.main import _fast_io


async def _app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("never called")


def test_serve_runs_uvloop_and_httptools() -> None:
    chosen = _fast_io()
    assert chosen == {"loop": "uvloop", "http": "httptools"}
    config = uvicorn.Config(_app, **chosen)
    config.load()
    assert config.http_protocol_class is HttpToolsProtocol
    assert config.get_loop_factory() is uvloop.new_event_loop


def test_without_them_uvicorn_chooses(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def missing(name: str, *args: Any) -> Any:
        return None if name in ("uvloop", "httptools") else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", missing)
    chosen = _fast_io()
    assert chosen == {"loop": "auto", "http": "auto"}
    config = uvicorn.Config(_app, **chosen, log_level="warning")
    config.load()  # "auto" is a valid choice: the server still starts
    assert config.http_protocol_class in (HttpToolsProtocol, H11Protocol)
