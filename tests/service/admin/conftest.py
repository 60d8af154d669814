"""A real gateway with the dashboard on the tiny bundle (real ONNX Runtime, Qdrant Edge, job
runner), driven through TestClient from a loopback address."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from clipsearch.bootstrap import build_components
from service.core.config import AuthSettings, Settings
from service.gateway.app import create_app
from tests.service.gateway.conftest import make_settings

ADMIN_KEY = "admin-key-5f2a"
SEARCH_KEY = "search-key-93bc"
LOOPBACK = ("127.0.0.1", 50123)
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (30, 60, 220)}
CARD = {
    "domain": "flat colour swatches (a test model)",
    "intended_use": "tests of the dashboard only; not for real media",
}


def write_images(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, colour in COLOURS.items():
        path = folder / f"{name}.png"
        Image.new("RGB", (48, 40), colour).save(path)
        (folder / f"{name}.txt").write_text(f"a plain {name} picture")  # its caption
        paths.append(path)
    (folder / "broken.png").write_bytes(b"not an image")
    return paths


def carded_bundle(src: Path, dst: Path) -> Path:
    """A copy of ``src`` whose manifest has a card (the manifest itself is not checksummed)."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["card"] = CARD
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return dst


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def wait_jobs_done(client: TestClient, timeout: float = 60) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = client.get("/admin/api/jobs").json()["jobs"]
        if jobs and all(j["state"] not in ("queued", "running") for j in jobs):
            return list(jobs)
        assert time.monotonic() < deadline, jobs
        time.sleep(0.1)


def start(settings: Settings, client_addr: tuple[str, int] = LOOPBACK) -> Iterator[TestClient]:
    app = create_app(settings, build_components)
    with TestClient(app, client=client_addr, follow_redirects=False) as client:
        assert app.state.runtime.wait(120), app.state.runtime.readiness()
        yield client


@pytest.fixture(scope="module")
def keyed_settings(tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path) -> Settings:
    tmp = tmp_path_factory.mktemp("admin-keyed")
    bundle = carded_bundle(tiny_bundle_dir, tmp / "bundle")
    settings = make_settings(tmp, bundle)
    write_images(tmp / "src")
    keys = {ADMIN_KEY: frozenset({"admin", "search", "ingest"}), SEARCH_KEY: frozenset({"search"})}
    return settings.model_copy(update={"auth": AuthSettings(api_keys=keys)})


@pytest.fixture(scope="module")
def keyed(keyed_settings: Settings) -> Iterator[TestClient]:
    """API keys on; nobody logged in (each test logs in a client of its own if it needs one)."""
    yield from start(keyed_settings)


def login(client: TestClient, key: str = ADMIN_KEY) -> str:
    """Log ``client`` in; the session's CSRF token."""
    page = client.get("/admin/login")
    assert page.status_code == 200, page.text
    done = client.post(
        "/admin/login", data={"key": key, "csrf_token": csrf_of(page.text), "next": "/admin/"}
    )
    assert done.status_code == 303, done.text
    return csrf_of(client.get("/admin/").text)
