"""Items, embeddings and jobs over gRPC: every other RPC of clipsearch.v1.Search, answering as
the REST API does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.clients.search_grpc import SearchClient
from service.core.errors import ClipsearchError, ErrorType
from service.gateway.state import Components
from tests.service.gateway.conftest import COLOURS, png
from tests.service.gateway.grpc.conftest import post_item, wait_job
from tests.service.gateway.grpc.gate import Gated


def _source_dir(rest: TestClient, name: str) -> Path:
    root: Path = rest.app.state.runtime.settings.sources.allowed_roots[0]  # type: ignore[attr-defined]
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_delete_item_removes_it(rest: TestClient, client: SearchClient) -> None:
    point = post_item(rest, "red")
    client.delete_item("item-red")
    assert rest.get(f"/v1/items/{point}").status_code == 404
    with pytest.raises(ClipsearchError) as gone:
        client.get_item(point)
    assert gone.value.type is ErrorType.not_found
    with pytest.raises(ClipsearchError) as again:
        client.delete_item(point)
    assert again.value.type is ErrorType.not_found
    assert post_item(rest, "red") == point  # put back for the other tests


def test_embed_texts_and_images(client: SearchClient, components: Components) -> None:
    images = [png(COLOURS["red"]), png(COLOURS["blue"])]
    got = client.embed(["a red circle", "a blue square", "x"], images)
    assert got.model == components.embedder.info().bundle
    texts = components.embedder.embed_texts(["a red circle", "a blue square", "x"])
    np.testing.assert_array_equal(got.texts, np.asarray(texts.joint, np.float32))
    np.testing.assert_array_equal(got.text_descriptions, np.asarray(texts.sentence, np.float32))
    expected = components.embedder.embed_images(images)
    np.testing.assert_array_equal(got.images, np.stack([np.asarray(v) for v in expected]))
    only_images = client.embed(images=images[:1])
    assert only_images.texts.shape[0] == 0 and only_images.images.shape[0] == 1


def test_ingest_get_and_list_jobs(rest: TestClient, client: SearchClient) -> None:
    folder = _source_dir(rest, "ingest")
    for colour in ("red", "green"):
        (folder / f"{colour}.png").write_bytes(png(COLOURS[colour], size=(60, 30)))
        (folder / f"{colour}.txt").write_text(f"a {colour} rectangle")
    job_id = client.ingest({"directory": str(folder)})
    job = wait_job(client, job_id)
    assert (job.state, job.done, job.failed) == ("completed", 2, 0)
    assert job.model_dump() == rest.get(f"/v1/jobs/{job_id}").json()

    second = client.ingest(
        {"manifest_lines": [{"description": "a lone purple word", "id": "doc-p"}]}
    )
    wait_job(client, second)
    assert client.get_item("doc-p").kind == "text"

    jobs, token = client.list_jobs(page_size=1)
    assert [j.id for j in jobs] == [second] and token
    rest_page = rest.get("/v1/jobs", params={"limit": 1, "offset": 1}).json()
    jobs, token = client.list_jobs(page_size=1, page_token=token)
    assert [j.model_dump() for j in jobs] == rest_page["jobs"]
    assert jobs[0].id == job_id
    everything, last = client.list_jobs(page_size=100)
    assert last == "" and [j.id for j in everything][:2] == [second, job_id]
    assert len(everything) == rest.get("/v1/jobs", params={"limit": 100}).json()["total"]


def test_cancel_a_queued_job_and_an_ended_one(
    rest: TestClient, client: SearchClient, components: Components, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _source_dir(rest, "cancel")
    (folder / "a.png").write_bytes(png((10, 200, 200)))
    blocking = Gated(
        components.jobs._embedder,  # type: ignore[attr-defined]
        "encode_images",
        "embed_images",
    )
    monkeypatch.setattr(components.jobs, "_embedder", blocking)
    busy = client.ingest({"directory": str(folder)})
    try:
        assert blocking.entered.wait(30), "the first job never reached the encoder"
        queued = client.ingest({"directory": str(folder)})
        cancelled = client.cancel_job(queued)
        assert (cancelled.id, cancelled.state) == (queued, "cancelled")
        assert rest.get(f"/v1/jobs/{queued}").json()["state"] == "cancelled"
    finally:
        blocking.release.set()
    assert wait_job(client, busy).state == "completed"
    with pytest.raises(ClipsearchError) as ended:
        client.cancel_job(busy)
    assert ended.value.type is ErrorType.conflict
    with pytest.raises(ClipsearchError) as unknown:
        client.get_job("no-such-job")
    assert unknown.value.type is ErrorType.not_found
