"""The bundles a rollout loads (issue 14's leftovers), through the gateway's public API: a bundle
loaded for a rollout is freed once no kept version of any collection needs it and loaded again
when a rollout needs it; with remote encoder workers (real gRPC servers on loopback) a rollout
loads its bundle on them through ``LoadBundle`` — checksums verified there, bad input the same
4xx as in-process — and unloads it again; and each worker's listing carries the model card's
intended use."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from clipsearch.bootstrap import build_components, rollout_bundle
from service.core.config import EncoderSettings, Settings
from service.gateway.app import create_app
from service.rpc.proto import encoder_pb2 as pb
from service.store.versions import VersionedStore
from service.worker.server import WorkerServer
from tests.indexer.test_reindex import wait_rollout
from tests.service.admin.conftest import CARD, carded_bundle
from tests.service.gateway.conftest import make_settings, running_client
from tests.service.worker.harness import stub_for, worker_settings
from tests.support import wait_until

TINY = "tiny-test@0.1.0"
NARROW = "tiny-narrow@0.1.0"


def _models(client: TestClient) -> dict[str, dict[str, Any]]:
    """The served models as ``/health/ready`` shows them (the monitor's last answer)."""
    body = client.get("/health/ready").json()
    return {m["bundle"]: m for m in body.get("models", [])}


def _served_soon(client: TestClient, expected: set[str]) -> dict[str, dict[str, Any]]:
    box: list[dict[str, dict[str, Any]]] = []

    def shown() -> bool:
        box[:] = [_models(client)]
        return set(box[0]) == expected

    wait_until(shown, 30)
    return box[0]


def _roll(client: TestClient, promote: bool = True, **body: Any) -> dict[str, Any]:
    started = client.post("/v1/admin/reindex", json=body)
    assert started.status_code == 202, started.text
    rid = started.json()["id"]
    ready = wait_rollout(lambda r: client.get(f"/v1/admin/reindex/{r}").json(), rid)
    assert ready["state"] == "ready", ready
    if promote:
        done = client.post(f"/v1/admin/reindex/{rid}/promote")
        assert done.status_code == 200 and done.json()["state"] == "completed", done.text
    return ready


def _add(client: TestClient, n: int) -> None:
    for i in range(n):
        r = client.post("/v1/items", data={"description": f"a note about harbour {i}"})
        assert r.status_code == 200, r.text


def _search_model(client: TestClient) -> str:
    r = client.post("/v1/search", json={"text": "a harbour", "limit": 3})
    assert r.status_code == 200 and r.json()["hits"], r.text
    return str(r.json()["model"])


@pytest.fixture
def gateway(tmp_path: Path, tiny_bundle_dir: Path) -> Iterator[TestClient]:
    yield from running_client(make_settings(tmp_path, tiny_bundle_dir))


def test_a_rollout_bundle_is_freed_once_no_kept_version_needs_it_and_loaded_again(
    gateway: TestClient, tmp_path: Path, tiny_narrow_bundle_dir: Path
) -> None:
    client = gateway
    narrow = carded_bundle(tiny_narrow_bundle_dir, tmp_path / "narrow")
    _add(client, 4)
    assert set(_models(client)) == {TINY}

    # Onto narrow and promoted: narrow is current, tiny (configured) previous. Both served.
    _roll(client, bundle=str(narrow))
    assert _search_model(client) == NARROW
    assert set(_served_soon(client, {TINY, NARROW})) == {TINY, NARROW}
    # A rollback keeps it: narrow's version is now the one a roll-forward would serve.
    assert client.post("/v1/admin/rollback", json={}).status_code == 200
    assert _search_model(client) == TINY
    assert client.post("/v1/admin/rollback", json={}).status_code == 200  # forward again
    assert _search_model(client) == NARROW
    _served_soon(client, {TINY, NARROW})

    # Back onto tiny (a served bundle, by name): narrow's version is the previous one, kept.
    _roll(client, bundle="tiny-test")
    assert _search_model(client) == TINY
    _served_soon(client, {TINY, NARROW})
    collection = client.get("/v1/collections/media").json()
    assert collection["previous"].startswith("media__" + NARROW)

    # A reindex with tiny again: narrow's version leaves retention (1), and narrow is freed.
    _roll(client)
    collection = client.get("/v1/collections/media").json()
    assert {v["bundle"] for v in collection["versions"]} == {TINY}
    assert set(_served_soon(client, {TINY})) == {TINY}
    assert _search_model(client) == TINY

    # A rollout that needs it loads it again (checksums verified again); a cancel frees it.
    again = _roll(client, promote=False, bundle=str(narrow))
    assert again["bundle"] == NARROW
    assert _served_soon(client, {TINY, NARROW})[NARROW]["intended_use"] == CARD["intended_use"]
    cancelled = client.delete(f"/v1/admin/reindex/{again['id']}")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    _served_soon(client, {TINY})
    assert _search_model(client) == TINY


def test_a_configured_bundle_is_never_freed(
    tmp_path: Path, tiny_bundle_dir: Path, tiny_narrow_bundle_dir: Path
) -> None:
    """tiny-narrow served from the start (an extra bundle): rolled onto and away again past
    retention, it stays served."""
    encoder = EncoderSettings(extra_bundles=[str(tiny_narrow_bundle_dir)])
    for client in running_client(make_settings(tmp_path, tiny_bundle_dir, encoder=encoder)):
        _add(client, 2)
        assert _roll(client, bundle="tiny-narrow")["bundle"] == NARROW
        _roll(client, bundle="tiny-test")
        _roll(client)
        versions = client.get("/v1/collections/media").json()["versions"]
        assert {v["bundle"] for v in versions} == {TINY}
        assert set(_models(client)) == {TINY, NARROW}
        embedder = client.app.state.runtime.components.embedder  # type: ignore[attr-defined]
        assert [b.ref for b in embedder.info().bundles] == [TINY, NARROW]


def _worker(settings: Settings) -> WorkerServer:
    """A real encoder worker as ``clipsearch worker`` builds it: configured bundles, and the
    same resolver for LoadBundle."""
    from clipsearch.bootstrap import build_registry

    server = WorkerServer(
        settings,
        registry=build_registry(settings),
        resolve_bundle=partial(rollout_bundle, settings),
    )
    server.start()
    return server


@pytest.fixture
def workers(tmp_path: Path, tiny_bundle_dir: Path) -> Iterator[list[WorkerServer]]:
    carded = carded_bundle(tiny_bundle_dir, tmp_path / "tiny-carded")
    servers: list[WorkerServer] = []
    try:
        for i in range(2):
            settings = worker_settings().model_copy(
                update={"bundle": str(carded), "data_dir": tmp_path / f"worker{i}"}
            )
            servers.append(_worker(settings))
        yield servers
    finally:
        for server in servers:
            server.stop(grace=0)


def test_with_remote_workers_a_rollout_loads_its_bundle_on_them_and_frees_it(
    tmp_path: Path, workers: list[WorkerServer], tiny_narrow_bundle_dir: Path
) -> None:
    narrow = carded_bundle(tiny_narrow_bundle_dir, tmp_path / "narrow")
    endpoints = [f"127.0.0.1:{w.port}" for w in workers]
    (tmp_path / "gw").mkdir()
    settings = make_settings(
        tmp_path / "gw",
        tmp_path / "no-such-bundle",  # never read: the workers serve the models
        encoder=EncoderSettings(endpoints=endpoints),
    )

    def on_workers() -> list[list[str]]:
        return [w.registry.refs() for w in workers]

    app = create_app(settings, build_components)
    with TestClient(app) as client:
        assert app.state.runtime.wait(60), app.state.runtime.readiness()
        store: VersionedStore = app.state.runtime.components.store
        _add(client, 4)
        # The workers' listing carries the card's intended use (it was null over gRPC).
        tiny = _served_soon(client, {TINY})[TINY]
        assert (tiny["domain"], tiny["intended_use"]) == (CARD["domain"], CARD["intended_use"])

        # Bad input: the same 4xx as in-process, nothing loaded on any worker, nothing changed.
        before = store.aliases(fresh=True)
        unknown = client.post("/v1/admin/reindex", json={"bundle": "no-such-bundle"})
        assert unknown.status_code == 404 and "no-such-bundle" in unknown.text, unknown.text
        corrupt = tmp_path / "corrupt"
        shutil.copytree(narrow, corrupt)
        (corrupt / "text.onnx").write_bytes(b"not the model it was")
        broken = client.post("/v1/admin/reindex", json={"bundle": str(corrupt)})
        assert broken.status_code == 400 and "checksum" in broken.text, broken.text
        assert on_workers() == [[TINY], [TINY]]
        assert store.aliases(fresh=True) == before
        assert client.get("/v1/admin/reindex").json() == []

        # The rollout loads narrow on every worker (no restart with --bundle) and builds on it.
        ready = _roll(client, promote=False, bundle=str(narrow))
        assert ready["bundle"] == NARROW
        assert on_workers() == [[TINY, NARROW], [TINY, NARROW]]
        shown = _served_soon(client, {TINY, NARROW})[NARROW]
        assert shown["intended_use"] == CARD["intended_use"]
        promoted = client.post(f"/v1/admin/reindex/{ready['id']}/promote")
        assert promoted.status_code == 200, promoted.text
        assert _search_model(client) == NARROW
        assert client.post("/v1/admin/rollback", json={}).status_code == 200
        assert _search_model(client) == TINY
        assert on_workers() == [[TINY, NARROW], [TINY, NARROW]]  # the previous version's

        # Reindexed with tiny: narrow's version leaves retention, the workers unload narrow.
        _roll(client)
        assert on_workers() == [[TINY], [TINY]]
        _served_soon(client, {TINY})
        assert _search_model(client) == TINY

    # Workers outlive the gateway: one that died before freeing narrow (left loaded here by
    # hand) frees it when it starts again, since its rollout loaded it and nothing needs it.
    for w in workers:
        with stub_for(w) as stub:
            assert stub.LoadBundle(pb.LoadBundleRequest(spec=str(narrow)), timeout=120).loaded
    assert on_workers() == [[TINY, NARROW], [TINY, NARROW]]
    restarted = create_app(settings, build_components)
    with TestClient(restarted) as client:
        assert restarted.state.runtime.wait(60), restarted.state.runtime.readiness()
        assert on_workers() == [[TINY], [TINY]]
        assert _search_model(client) == TINY


def test_with_remote_workers_a_new_collection_loads_its_bundle_on_them_and_frees_it(
    tmp_path: Path, workers: list[WorkerServer], tiny_narrow_bundle_dir: Path
) -> None:
    """Issue 17: a collection created with a bundle the workers do not serve has them load it
    (``LoadBundle``, no restart); its searches use it; deleting the collection frees it."""
    narrow = carded_bundle(tiny_narrow_bundle_dir, tmp_path / "narrow")
    endpoints = [f"127.0.0.1:{w.port}" for w in workers]
    (tmp_path / "gw").mkdir()
    settings = make_settings(
        tmp_path / "gw", tmp_path / "no-such-bundle", encoder=EncoderSettings(endpoints=endpoints)
    )
    app = create_app(settings, build_components)
    with TestClient(app) as client:
        assert app.state.runtime.wait(60), app.state.runtime.readiness()
        unknown = client.post("/v1/collections", json={"name": "n1", "bundle": "no-such-bundle"})
        assert unknown.status_code == 404, unknown.text
        assert [w.registry.refs() for w in workers] == [[TINY], [TINY]]

        made = client.post("/v1/collections", json={"name": "n1", "bundle": str(narrow)})
        assert made.status_code == 201, made.text
        assert made.json()["bundle"] == NARROW and made.json()["served"]
        assert [w.registry.refs() for w in workers] == [[TINY, NARROW], [TINY, NARROW]]
        added = client.post("/v1/items", data={"description": "a harbour", "collection": "n1"})
        assert added.status_code == 200, added.text
        found = client.post("/v1/search", json={"text": "harbour", "collection": "n1"})
        assert found.status_code == 200 and found.json()["model"] == NARROW, found.text

        assert client.delete("/v1/collections/n1").status_code == 200
        assert [w.registry.refs() for w in workers] == [[TINY], [TINY]]
