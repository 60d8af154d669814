"""A real gateway on the tiny bundle serving REST and gRPC over loopback (an ephemeral port), with
three items indexed through REST."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from fastapi.testclient import TestClient

from clipsearch.bootstrap import build_components
from service.clients.search_grpc import SearchClient
from service.core.config import AuthSettings
from service.core.schemas.api import JobStatus
from service.gateway.app import create_app
from service.gateway.grpc import GrpcGateway, serve_grpc
from service.gateway.state import Components
from service.rpc.proto import search_pb2_grpc as pb_grpc
from tests.service.gateway.conftest import COLOURS, make_settings, png

SCENES = {
    "red": ("a red circle", "One large red circle in the centre of a white background."),
    "green": ("a green triangle", "One small green triangle at the top on a grey background."),
    "blue": ("a blue square", "One blue square at the bottom right on a black background."),
}


def wait_job(client: SearchClient, job_id: str, timeout_s: float = 60.0) -> JobStatus:
    """The job once it has ended (GetJob until it is neither queued nor running)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get_job(job_id)
        if job.state not in ("queued", "running"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not end")


def post_item(rest: TestClient, colour: str) -> str:
    caption, description = SCENES[colour]
    response = rest.post(
        "/v1/items",
        files={"file": (f"{colour}.png", png(COLOURS[colour]), "image/png")},
        data={
            "caption": caption,
            "description": description,
            "metadata": json.dumps({"colour": colour, "n": 1, "x": 0.5}),
            "tags": f"{colour},demo",
            "id": f"item-{colour}",
        },
    )
    assert response.status_code == 200, response.text
    point: str = response.json()["id"]
    return point


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path
) -> Iterator[tuple[TestClient, GrpcGateway]]:
    settings = make_settings(tmp_path_factory.mktemp("grpc-gateway"), tiny_bundle_dir)
    app = create_app(settings, build_components)
    gateway = serve_grpc(app, host="127.0.0.1", port=0)
    with TestClient(app) as rest:
        assert app.state.runtime.wait(120), app.state.runtime.readiness()
        for colour in SCENES:
            post_item(rest, colour)
        yield rest, gateway


@pytest.fixture(scope="module")
def rest(served: tuple[TestClient, GrpcGateway]) -> TestClient:
    return served[0]


@pytest.fixture(scope="module")
def gateway(served: tuple[TestClient, GrpcGateway]) -> GrpcGateway:
    return served[1]


@pytest.fixture(scope="module")
def channel(gateway: GrpcGateway) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(gateway.address) as chan:
        yield chan


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pb_grpc.SearchStub:
    return pb_grpc.SearchStub(channel)


@pytest.fixture()
def client(gateway: GrpcGateway) -> Iterator[SearchClient]:
    with SearchClient(gateway.address) as c:
        yield c


@pytest.fixture()
def components(rest: TestClient) -> Components:
    comp: Components = rest.app.state.runtime.components  # type: ignore[attr-defined]
    return comp


@pytest.fixture()
def api_keys(rest: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys on for this test: `reader` may search, `writer` may ingest, `admin` may do both."""
    runtime = rest.app.state.runtime  # type: ignore[attr-defined]
    keys = AuthSettings.model_validate(
        {"api_keys": "reader:search,writer:ingest,admin:search+ingest+admin"}
    )
    monkeypatch.setattr(runtime, "settings", runtime.settings.model_copy(update={"auth": keys}))
