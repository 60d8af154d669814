"""Ingest jobs per collection on the distributed path: a gateway with a broker (and its writer),
one real ``clipsearch indexer`` process, a real private Redis (``test_ingest_celery``'s setup).
A job into a collection made with another bundle is embedded by the indexer with that bundle
and written by the gateway's writer into that collection alone; a job into a collection
deleted before its points are written fails its items with the reason, and the writer goes
on writing."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from service.gateway.state import Components
from tests.service.gateway.test_ingest_celery import (  # noqa: F401 (the fixture)
    N_IMAGES,
    Setup,
    setup,
    wait_done,
)

pytestmark = pytest.mark.slow


def components(s: Setup) -> Components:
    comp: Components = s.client.app.state.runtime.components  # type: ignore[attr-defined]
    return comp


@pytest.mark.timeout(900)
def test_a_job_into_a_collection_of_another_bundle(
    setup: Setup,  # noqa: F811
    tiny_narrow_bundle_dir: Path,
) -> None:
    comp = components(setup)
    made = setup.client.post(
        "/v1/collections", json={"name": "narrow", "bundle": str(tiny_narrow_bundle_dir)}
    )
    assert made.status_code == 201, made.text
    narrow = comp.store.bundle_of("narrow", fresh=True)[1]
    assert narrow is not None and narrow.startswith("tiny-narrow@"), narrow
    before = comp.store.count(comp.collection)

    response = setup.client.post(
        "/v1/ingest",
        json={"source": {"directory": str(setup.src / "photos")}, "collection": "narrow"},
    )
    assert response.status_code == 202, response.json()
    job_id = response.json()["job_id"]
    status = wait_done(setup, job_id)
    assert (status["state"], status["collection"]) == ("completed", "narrow"), status
    assert (status["done"], status["failed"]) == (N_IMAGES, 1), status

    # The indexer (started with tiny-test only) loaded tiny-narrow from the spec the collection
    # records, and the gateway's writer wrote into that collection alone.
    records, _ = comp.store.scroll("narrow", limit=100, with_vectors=True)
    assert len(records) == N_IMAGES
    for record in records:
        assert record.payload["model"] == narrow
        assert len(record.vectors["image"]) == 32  # tiny-narrow's joint space (tiny-test: 64)
    assert comp.store.count(comp.collection) == before
    listed = setup.client.get("/v1/jobs", params={"collection": "narrow"}).json()
    assert [j["id"] for j in listed["jobs"]] == [job_id]


@pytest.mark.timeout(900)
def test_a_job_into_a_collection_deleted_meanwhile_fails_its_items(
    setup: Setup,  # noqa: F811
) -> None:
    comp = components(setup)
    assert setup.client.post("/v1/collections", json={"name": "gone"}).status_code == 201
    # The indexer paused: the collection is deleted after the job is accepted, before any of
    # its points reach the writer.
    setup.worker.send_signal(signal.SIGSTOP)
    try:
        response = setup.client.post(
            "/v1/ingest",
            json={"source": {"directory": str(setup.src / "photos")}, "collection": "gone"},
        )
        assert response.status_code == 202, response.json()
        job_id = response.json()["job_id"]
        deleted = setup.client.delete("/v1/collections/gone")
        assert deleted.status_code == 200, deleted.text
    finally:
        setup.worker.send_signal(signal.SIGCONT)
    status = wait_done(setup, job_id)
    assert (status["state"], status["collection"]) == ("completed", "gone"), status
    assert (status["done"], status["failed"]) == (0, N_IMAGES + 1), status
    reasons = {e["reason"] for e in status["errors"] if not e["item"].endswith("corrupt.png")}
    assert reasons == {"collection 'gone' does not exist (deleted after the job was submitted)"}
    assert "gone" not in comp.store.names()
    assert comp.writer is not None and comp.writer.health().ready, comp.writer

    # The writer goes on: a job into the configured collection is written as before.
    before = comp.store.count(comp.collection)
    again = setup.client.post(
        "/v1/ingest", json={"source": {"directory": str(setup.src / "photos")}}
    ).json()["job_id"]
    status = wait_done(setup, again)
    assert (status["state"], status["collection"]) == ("completed", comp.collection), status
    assert comp.store.count(comp.collection) == before + N_IMAGES
