"""A real gateway on the tiny bundle: real ONNX Runtime, real Qdrant Edge, real job runner."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from clipsearch.bootstrap import build_components
from service.core.config import LimitsSettings, Settings, SourcesSettings
from service.gateway.app import create_app
from service.gateway.state import Components

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (30, 60, 220)}


def png(colour: tuple[int, int, int], size: tuple[int, int] = (48, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def make_settings(tmp: Path, bundle: Path, **extra: object) -> Settings:
    (tmp / "src").mkdir(exist_ok=True)
    return Settings(
        data_dir=tmp / "data",
        bundle=str(bundle),
        sources=SourcesSettings(allowed_roots=[tmp / "src"]),
        limits=LimitsSettings(max_upload_bytes=256 * 1024, max_image_pixels=1_000_000),
        **extra,  # type: ignore[arg-type]
    )


def running_client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings, build_components)
    with TestClient(app) as client:
        assert app.state.runtime.wait(120), app.state.runtime.readiness()
        yield client


@pytest.fixture(scope="module")
def gateway_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gateway")


@pytest.fixture(scope="module")
def client(gateway_dir: Path, tiny_bundle_dir: Path) -> Iterator[TestClient]:
    yield from running_client(make_settings(gateway_dir, tiny_bundle_dir))


@pytest.fixture()
def components(client: TestClient) -> Components:
    comp: Components = client.app.state.runtime.components  # type: ignore[attr-defined]
    return comp
