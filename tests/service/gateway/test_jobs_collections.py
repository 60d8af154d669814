"""Ingest jobs per collection, in-process runner, over REST on a real gateway (tiny bundle, Qdrant
Edge): a job writes into the collection it names and no other, one of another bundle is
embedded with that bundle, retries keep the collection, a job into a collection deleted
meanwhile fails with the reason, and scoped keys see only the jobs of their collections."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.core.config import AuthSettings
from service.gateway.state import Components
from tests.faults.test_reindex_kill import HeldImages
from tests.indexer.distributed.test_batches import write_images
from tests.service.gateway.conftest import COLOURS, make_settings, png, running_client
from tests.support import wait_for_job

KEYS = ",".join(
    [
        "ops-s3cret:search+ingest+admin:ops",
        "alpha-s3cret:search@alpha+ingest@alpha:alpha-bot",  # never sees the default collection
        "reader-s3cret:search@alpha:alpha-reader",  # sees alpha, may not ingest into it
    ]
)
N_IMAGES = 5


def key(name: str) -> dict[str, str]:
    return {"authorization": f"Bearer {name}-s3cret"}


@dataclass
class Gateway:
    client: TestClient
    components: Components
    src: Path
    narrow: str  # the ref of the bundle the "narrow" collection is made with


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path, tiny_narrow_bundle_dir: Path
) -> Iterator[Gateway]:
    base = tmp_path_factory.mktemp("jobs-collections")
    settings = make_settings(
        base, tiny_bundle_dir, auth=AuthSettings.model_validate({"api_keys": KEYS})
    )
    # HeldImages serves on the loopback.
    sources = settings.sources.model_copy(update={"allowed_networks": ["127.0.0.1/32"]})
    settings = settings.model_copy(update={"sources": sources})
    write_images(base / "src" / "photos", N_IMAGES)
    for client in running_client(settings):
        made = client.post("/v1/collections", json={"name": "alpha"}, headers=key("ops"))
        assert made.status_code == 201, made.text
        made = client.post(
            "/v1/collections",
            json={"name": "narrow", "bundle": str(tiny_narrow_bundle_dir)},
            headers=key("ops"),
        )
        assert made.status_code == 201, made.text
        components: Components = client.app.state.runtime.components  # type: ignore[attr-defined]
        bundle = components.store.bundle_of("narrow", fresh=True)[1]
        assert bundle is not None and bundle.startswith("tiny-narrow@"), bundle
        yield Gateway(client, components, base / "src", bundle)


def ingest(g: Gateway, who: str, source: Any, collection: str | None = None) -> str:
    body: dict[str, Any] = {"source": source}
    if collection is not None:
        body["collection"] = collection
    response = g.client.post("/v1/ingest", json=body, headers=key(who))
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def job(g: Gateway, job_id: str, who: str = "ops") -> dict[str, Any]:
    response = g.client.get(f"/v1/jobs/{job_id}", headers=key(who))
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def finished(g: Gateway, job_id: str) -> dict[str, Any]:
    return wait_for_job(lambda i: job(g, i), job_id, timeout=300)


def count(g: Gateway, collection: str) -> int:
    return g.components.store.count(collection)


def test_a_job_writes_into_the_collection_it_names_only(gateway: Gateway) -> None:
    default = gateway.components.collection
    before = count(gateway, default)
    job_id = ingest(gateway, "alpha", {"directory": str(gateway.src / "photos")}, "alpha")
    done = finished(gateway, job_id)
    assert (done["state"], done["done"], done["failed"]) == ("completed", N_IMAGES, 0), done
    assert done["collection"] == "alpha"
    assert count(gateway, "alpha") == N_IMAGES
    assert count(gateway, default) == before  # the default collection is untouched

    # No collection named: the configured one, as before collections were a resource.
    job_id = ingest(gateway, "ops", {"directory": str(gateway.src / "photos")})
    done = finished(gateway, job_id)
    assert (done["state"], done["collection"]) == ("completed", default), done
    assert count(gateway, default) == before + N_IMAGES
    assert count(gateway, "alpha") == N_IMAGES


def test_a_job_into_a_collection_of_another_bundle_embeds_with_that_bundle(
    gateway: Gateway,
) -> None:
    job_id = ingest(gateway, "ops", {"directory": str(gateway.src / "photos")}, "narrow")
    done = finished(gateway, job_id)
    assert (done["state"], done["done"], done["collection"]) == ("completed", N_IMAGES, "narrow")
    records, _ = gateway.components.store.scroll("narrow", limit=100, with_vectors=True)
    assert len(records) == N_IMAGES
    for record in records:
        assert record.payload["model"] == gateway.narrow
        assert len(record.vectors["image"]) == 32  # tiny-narrow's joint space (tiny-test: 64)


def test_a_job_into_an_unknown_collection_is_404_and_creates_nothing(gateway: Gateway) -> None:
    store = gateway.components.store
    names, versions = store.names(), store.list_collections()
    jobs = gateway.client.get("/v1/jobs", headers=key("ops")).json()["total"]
    source = {"directory": str(gateway.src / "photos")}
    for who, collection in (("ops", "nope"), ("alpha", gateway.components.collection)):
        # A collection a key has no scope on is, to it, one that does not exist.
        response = gateway.client.post(
            "/v1/ingest", json={"source": source, "collection": collection}, headers=key(who)
        )
        assert response.status_code == 404, response.text
        error = response.json()["error"]
        assert (error["type"], error["message"]) == (
            "not_found",
            f"collection {collection!r} does not exist",
        )
    assert gateway.client.get("/v1/jobs", headers=key("ops")).json()["total"] == jobs
    assert (store.names(), store.list_collections()) == (names, versions)


def test_keys_see_the_jobs_of_their_collections_only(gateway: Gateway) -> None:
    default = gateway.components.collection
    lines = [{"id": "doc-1", "description": "a red bicycle leaning on a brick wall"}]
    theirs = ingest(gateway, "ops", {"manifest_lines": lines})
    mine = ingest(gateway, "alpha", {"manifest_lines": lines}, "alpha")
    finished(gateway, theirs)
    finished(gateway, mine)

    def listed(who: str, query: str = "") -> dict[str, Any]:
        response = gateway.client.get(f"/v1/jobs?limit=100{query}", headers=key(who))
        assert response.status_code == 200, response.text
        page: dict[str, Any] = response.json()
        return page

    everything = listed("ops")
    by_collection: dict[str, set[str]] = {}
    for j in everything["jobs"]:
        by_collection.setdefault(j["collection"], set()).add(j["id"])
    assert theirs in by_collection[default] and mine in by_collection["alpha"]

    alpha = listed("alpha")
    assert {j["id"] for j in alpha["jobs"]} == by_collection["alpha"]
    assert alpha["total"] == len(by_collection["alpha"]) < everything["total"]
    filtered = listed("ops", "&collection=alpha")
    assert [j["id"] for j in filtered["jobs"]] == [j["id"] for j in alpha["jobs"]]
    assert filtered["total"] == alpha["total"]
    assert {j["id"] for j in listed("ops", f"&collection={default}")["jobs"]} == (
        by_collection[default]
    )

    # A job of a collection the key cannot see is, to it, a job that does not exist.
    unknown = "0" * 32
    expected = gateway.client.get(f"/v1/jobs/{unknown}", headers=key("ops"))
    assert expected.status_code == 404
    for method, path in (
        ("GET", f"/v1/jobs/{theirs}"),
        ("DELETE", f"/v1/jobs/{theirs}"),
        ("POST", f"/v1/jobs/{theirs}/retry"),
        ("POST", f"/v1/jobs/{theirs}/retry-failed"),
    ):
        response = gateway.client.request(method, path, headers=key("alpha"))
        assert response.status_code == 404, (method, path, response.text)
        assert response.json() == {
            "error": {**expected.json()["error"], "message": f"no job {theirs!r}"}
        }, (method, path)
    assert job(gateway, mine, "alpha")["collection"] == "alpha"

    hidden = gateway.client.get(f"/v1/jobs?collection={default}", headers=key("alpha"))
    assert hidden.status_code == 404
    assert hidden.json()["error"]["message"] == f"collection {default!r} does not exist"
    # A key that sees alpha but may not ingest into it: refused, as its jobs are.
    assert gateway.client.get("/v1/jobs?collection=alpha", headers=key("reader")).status_code == 403
    assert gateway.client.get("/v1/jobs", headers=key("reader")).status_code == 403
    assert gateway.client.get(f"/v1/jobs/{mine}", headers=key("reader")).status_code == 403


def test_retry_failed_keeps_the_collection(gateway: Gateway) -> None:
    folder = gateway.src / "retry"
    folder.mkdir()
    (folder / "good.png").write_bytes(png(COLOURS["green"]))
    (folder / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    before = count(gateway, gateway.components.collection)
    in_alpha = count(gateway, "alpha")
    first = finished(gateway, ingest(gateway, "alpha", str(folder), "alpha"))
    assert (first["done"], first["failed"]) == (1, 1), first

    (folder / "bad.png").write_bytes(png(COLOURS["blue"]))  # the operator fixes the file
    retried = gateway.client.post(f"/v1/jobs/{first['id']}/retry-failed", headers=key("alpha"))
    assert retried.status_code == 202, retried.text
    second = finished(gateway, retried.json()["job_id"])
    assert (second["state"], second["done"], second["collection"]) == ("completed", 1, "alpha")
    assert count(gateway, "alpha") == in_alpha + 2
    assert count(gateway, gateway.components.collection) == before


def test_resume_keeps_the_collection_and_a_deleted_one_fails_the_job(gateway: Gateway) -> None:
    ops = key("ops")
    write_images(gateway.src / "more", 3, seed=7)
    assert gateway.client.post("/v1/collections", json={"name": "gamma"}, headers=ops).is_success
    in_alpha = count(gateway, "alpha")
    held = HeldImages(2)
    try:
        # The runner runs one job at a time: while this one waits on its URLs, the next wait.
        held.open.clear()
        holding = ingest(gateway, "ops", {"urls": held.urls})
        assert held.asked.wait(60)
        paused = ingest(gateway, "alpha", {"directory": str(gateway.src / "more")}, "alpha")
        cancelled = gateway.client.delete(f"/v1/jobs/{paused}", headers=key("alpha"))
        assert cancelled.json()["state"] == "cancelled", cancelled.text
        orphan = ingest(gateway, "ops", {"directory": str(gateway.src / "more")}, "gamma")
        deleted = gateway.client.delete("/v1/collections/gamma", headers=ops)
        assert deleted.status_code == 200, deleted.text
        held.open.set()
        assert finished(gateway, holding)["state"] == "completed"
    finally:
        held.close()

    failed = finished(gateway, orphan)
    assert (failed["state"], failed["collection"], failed["done"]) == ("failed", "gamma", 0)
    assert "collection 'gamma' does not exist (deleted after" in failed["error"], failed
    assert "gamma" not in gateway.components.store.names()
    again = gateway.client.post(f"/v1/jobs/{orphan}/retry", headers=ops)
    assert again.status_code == 404, again.text
    assert again.json()["error"]["message"] == "collection 'gamma' does not exist"

    resumed = gateway.client.post(f"/v1/jobs/{paused}/retry", headers=key("alpha"))
    assert resumed.status_code == 202, resumed.text
    done = finished(gateway, paused)
    assert (done["state"], done["done"], done["collection"]) == ("completed", 3, "alpha"), done
    assert count(gateway, "alpha") == in_alpha + 3
