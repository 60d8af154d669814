"""A real gateway on the tiny bundle for the fuzzers: REST through its ASGI app and gRPC over
loopback, a few items indexed so that ids, jobs and thumbnails exist."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from clipsearch.bootstrap import build_components
from service.core.config import SourcesSettings
from service.gateway.app import create_app
from service.gateway.grpc import GrpcGateway, serve_grpc
from tests.service.gateway.conftest import COLOURS, make_settings, png


@dataclass(frozen=True)
class Fuzzed:
    app: FastAPI
    base_url: str  # the REST API, a real server on loopback
    grpc: GrpcGateway


@pytest.fixture(scope="session")
def fuzzed(tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path) -> Iterator[Fuzzed]:
    root = tmp_path_factory.mktemp("fuzz")
    settings = make_settings(root, tiny_bundle_dir)
    # URL sources: nothing to reach from here; fail fast rather than wait out the default.
    sources = SourcesSettings(allowed_roots=[root / "src"], fetch_timeout_s=1.0, max_redirects=0)
    settings = settings.model_copy(update={"sources": sources})
    for colour, rgb in COLOURS.items():
        (root / "src" / f"{colour}.png").write_bytes(png(rgb))
    app = create_app(settings, build_components)
    gateway = serve_grpc(app, host="127.0.0.1", port=0)  # started and stopped by the lifespan
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started, "the gateway did not start"
        assert app.state.runtime.wait(120), app.state.runtime.readiness()
        port = server.servers[0].sockets[0].getsockname()[1]
        base_url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base_url, timeout=60) as client:
            for colour, rgb in COLOURS.items():
                response = client.post(
                    "/v1/items",
                    files={"file": (f"{colour}.png", png(rgb), "image/png")},
                    data={"caption": f"a {colour} square", "id": f"item-{colour}"},
                )
                assert response.status_code == 200, response.text
        yield Fuzzed(app, base_url, gateway)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="session")
def case_counts() -> Iterator[Counter[str]]:
    """Generated cases per operation, printed at the end of the session (`-s` shows them)."""
    counts: Counter[str] = Counter()
    yield counts
    for name, n in sorted(counts.items()):
        print(f"fuzz cases {name}: {n}")
    print(f"fuzz cases total: {sum(counts.values())}")
