"""Zero-downtime reindex on a real gateway (tiny bundle, ONNX Runtime, Qdrant Edge): the next
version is rebuilt from the stored sources under search load, swapped in atomically, and can be
rolled back; writes during the rebuild reach both versions; cancel and a crash leave the current
version untouched."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from clipsearch.bootstrap import build_embedder
from indexer.reindex import PAGE, InProcessReindexer
from service.clients.base import EmbeddingClient
from service.core.config import Settings
from service.core.domain import Point
from service.items.points import Item, build_points
from service.store.factory import open_store
from service.store.versions import VersionedStore
from tests.indexer.pipeline.test_video import make_video
from tests.service.gateway.conftest import make_settings, png, running_client
from tests.support import wait_for_job, wait_until

SETTLED = ("ready", "completed", "failed", "cancelled")


def wait_rollout(fetch: Any, rollout_id: str, timeout: float = 120.0) -> dict[str, Any]:
    """Poll until the rollout is built (ready) or has ended."""
    box: list[dict[str, Any]] = []

    def settled() -> bool:
        box[:] = [fetch(rollout_id)]
        return box[0]["state"] in SETTLED

    wait_until(settled, timeout)
    return box[0]


N_IMAGES = 40


def _ids(store: VersionedStore, collection: str) -> set[str]:
    out: set[str] = set()
    offset = None
    while True:
        page, offset = store.scroll(collection, limit=100, offset=offset)
        out |= {r.id for r in page}
        if offset is None:
            return out


@pytest.fixture
def gateway(tmp_path: Path, tiny_bundle_dir: Path) -> Iterator[TestClient]:
    yield from running_client(make_settings(tmp_path, tiny_bundle_dir))


def test_reindex_under_search_load_swaps_and_rolls_back(
    gateway: TestClient, tmp_path: Path
) -> None:
    client = gateway
    components = client.app.state.runtime.components  # type: ignore[attr-defined]
    store: VersionedStore = components.store
    folder = tmp_path / "src" / "media"
    folder.mkdir(parents=True)
    for i in range(N_IMAGES):
        (folder / f"{i:03}.png").write_bytes(png((i * 6 % 256, 90, 200 - i * 4)))
        (folder / f"{i:03}.txt").write_text(f"picture number {i}")
    make_video(folder / "clip.mp4")
    job = client.post("/v1/ingest", json={"source": str(folder)}).json()["job_id"]
    assert wait_for_job(lambda j: client.get(f"/v1/jobs/{j}").json(), job)["state"] == "completed"
    inline = client.post(
        "/v1/items", files={"file": ("x.png", png((1, 2, 3)), "image/png")}, data={"tags": "keep"}
    ).json()["id"]
    text = client.post("/v1/items", data={"description": "a quiet harbour at dawn"}).json()["id"]
    before = _ids(store, "media")
    first = store.aliases()["media"]
    assert len(before) == N_IMAGES + 3 + 2  # 3 video segments (5 s, 5 s, 2 s)

    searches, failures = [0], []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            r = client.post("/v1/search", json={"text": "picture number 7", "limit": 5})
            searches[0] += 1
            if r.status_code != 200 or len(r.json()["hits"]) != 5:
                failures.append((r.status_code, r.text))

    loader = threading.Thread(target=load)
    loader.start()
    try:
        started = client.post("/v1/admin/reindex", json={"promote": "auto"})
        assert started.status_code == 202, started.text
        record = started.json()
        assert record["state"] in ("queued", "building") and record["source"] == first
        searched_before = searches[0]
        again = client.post("/v1/admin/reindex", json={})
        assert again.status_code == 409, again.text
        done = wait_rollout(lambda r: client.get(f"/v1/admin/reindex/{r}").json(), record["id"])
        searched_during = searches[0] - searched_before
    finally:
        stop.set()
        loader.join()
    assert failures == [] and searched_during > 0
    assert done["state"] == "completed", done
    assert done["target"] == first.rsplit("__", 1)[0] + "__2"
    # Every image, the video and the text document were made again; the inline upload (its
    # bytes were never stored) was copied and is named.
    assert (done["total"], done["rebuilt"], done["copied"]) == (len(before), N_IMAGES + 2, 1)
    assert any("copied" in n["reason"] for n in done["notes"])
    assert _ids(store, "media") == before and done["points"] == len(before)
    kept = store.retrieve("media", [inline])[0].payload
    assert kept["tags"] == ["keep"]
    assert store.retrieve("media", [text])[0].payload["description"] == "a quiet harbour at dawn"

    listed = client.get("/v1/collections").json()["collections"]
    assert [c["alias"] for c in listed] == ["media"]
    info = listed[0]
    assert (info["current"], info["previous"], info["building"]) == (done["target"], first, None)
    assert info["points"] == len(before) and info["served"] is True
    assert {v["role"] for v in info["versions"]} == {"current", "previous"}
    assert client.get("/v1/collections/media").json() == info
    assert client.get("/v1/collections/nope").status_code == 404

    back = client.post("/v1/admin/rollback", json={})
    assert back.status_code == 200, back.text
    assert back.json() == {
        "collection": "media",
        "from": done["target"],
        "to": first,
        "bundle": done["bundle"],
    }
    assert client.get("/v1/collections/media").json()["current"] == first
    hits = client.post("/v1/search", json={"text": "picture number 7", "limit": 3})
    assert hits.status_code == 200 and len(hits.json()["hits"]) == 3
    assert [r["id"] for r in client.get("/v1/admin/reindex").json()] == [record["id"]]


def test_a_deleted_video_segment_stays_deleted_through_reindexes(
    gateway: TestClient, tmp_path: Path
) -> None:
    """The rebuild cuts the video again from its source: a segment deleted before it must not
    come back, in the new version nor in the one after (issue 19)."""
    client = gateway
    store: VersionedStore = client.app.state.runtime.components.store  # type: ignore[attr-defined]
    folder = tmp_path / "src" / "videos"
    folder.mkdir(parents=True)
    make_video(folder / "clip.mp4")
    job = client.post("/v1/ingest", json={"source": str(folder)}).json()["job_id"]
    assert wait_for_job(lambda j: client.get(f"/v1/jobs/{j}").json(), job)["state"] == "completed"
    video = (folder / "clip.mp4").resolve().as_uri()

    def segment(i: int) -> str:
        return "/v1/items/" + quote(f"{video}#{i}", safe="")

    def status(rollout_id: str) -> dict[str, Any]:
        body: dict[str, Any] = client.get(f"/v1/admin/reindex/{rollout_id}").json()
        return body

    assert [client.get(segment(i)).status_code for i in range(4)] == [200, 200, 200, 404]
    assert client.delete(segment(1)).status_code == 204
    for rollout in range(2):
        started = client.post("/v1/admin/reindex", json={"promote": "auto"})
        assert started.status_code == 202, started.text
        done = wait_rollout(status, started.json()["id"])
        assert done["state"] == "completed", done
        assert [client.get(segment(i)).status_code for i in range(3)] == [200, 404, 200], rollout
        assert done["points"] == 2 and done["missing"] == 0
    assert _ids(store, "media") == _ids(store, "media.previous")
    assert client.delete("/v1/videos/" + quote(video, safe="")).json()["deleted"] == 2
    assert store.count("media") == 0 and store.count("media.previous") == 0


def test_reindex_refuses_bad_requests(gateway: TestClient) -> None:
    bad_bundle = gateway.post("/v1/admin/reindex", json={"bundle": "someone-else@9"})
    assert bad_bundle.status_code == 404 and "someone-else@9" in bad_bundle.text
    assert gateway.post("/v1/admin/reindex", json={"collection": "nope"}).status_code == 404
    assert gateway.post("/v1/admin/reindex", json={"colection": "x"}).status_code == 422
    assert gateway.get("/v1/admin/reindex/0123").status_code == 404
    no_previous = gateway.post("/v1/admin/rollback", json={})
    assert no_previous.status_code == 409 and "no previous version" in no_previous.text


class GatedBulk:
    """The real client; bulk-lane text calls wait for the gate (to hold a rebuild mid-run)."""

    def __init__(self, inner: EmbeddingClient) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.bulk_calls = 0

    def embed_texts(
        self, texts: Sequence[str], *, lane: Any = "interactive", bundle: str | None = None
    ) -> Any:
        if lane == "bulk":
            self.bulk_calls += 1
            self.gate.wait(60)
        return self.inner.embed_texts(texts, lane=lane, bundle=bundle)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def parts(
    tmp_path: Path, tiny_bundle_dir: Path
) -> Iterator[tuple[Settings, GatedBulk, VersionedStore]]:
    settings = make_settings(tmp_path, tiny_bundle_dir)
    embedder = GatedBulk(build_embedder(settings))
    store = open_store(settings)
    info = embedder.info()
    store.ensure("media", dict(info.spaces), info.bundle)  # type: ignore[arg-type]
    yield settings, embedder, store
    embedder.gate.set()
    store.close()
    embedder.inner.close()


def _texts(embedder: GatedBulk, n: int, start: int = 0) -> list[Point]:
    items = [
        Item(description=f"document {i} about boats", source_id=f"d{i}")
        for i in range(start, start + n)
    ]
    out = build_points(embedder, "media", items, lane="interactive")  # type: ignore[arg-type]
    assert all(isinstance(p, Point) for p in out)
    return out  # type: ignore[return-value]


def test_writes_during_a_rebuild_reach_the_new_version(
    parts: tuple[Settings, GatedBulk, VersionedStore],
) -> None:
    settings, embedder, store = parts
    docs = _texts(embedder, 2 * PAGE)
    store.upsert("media", docs)
    reindexer = InProcessReindexer(settings=settings, embedder=embedder, store=store)  # type: ignore[arg-type]
    try:
        record = reindexer.start("media", promote="auto")
        wait_until(lambda: embedder.bulk_calls == 1)  # the first page is inside the encoder
        # While the rebuild is held: a new document, and a delete of one not rebuilt yet.
        added = _texts(embedder, 1, start=1000)
        store.upsert("media", added)
        last_page = sorted(p.id for p in docs)[-1]
        store.delete("media", [last_page])
        embedder.gate.set()
        done = wait_rollout(reindexer.status, record["id"])
    finally:
        reindexer.close()
    assert done["state"] == "completed", done
    now = _ids(store, "media")
    assert added[0].id in now and last_page not in now
    assert now == {p.id for p in docs + added} - {last_page}
    assert store.aliases()["media"] == record["target"]


def test_cancel_and_a_crash_leave_the_current_version_serving(
    parts: tuple[Settings, GatedBulk, VersionedStore],
) -> None:
    settings, embedder, store = parts
    store.upsert("media", _texts(embedder, 10))
    current = store.aliases()["media"]
    reindexer = InProcessReindexer(settings=settings, embedder=embedder, store=store)  # type: ignore[arg-type]
    try:
        record = reindexer.start("media")
        wait_until(lambda: embedder.bulk_calls == 1)
        threading.Timer(0.5, embedder.gate.set).start()  # the held page finishes, then it stops
        cancelled = reindexer.cancel(record["id"])
    finally:
        reindexer.close()
    assert cancelled["state"] == "cancelled"
    assert store.aliases() == {"media": current}
    assert not store.inner.collection_exists(record["target"])
    assert store.count("media") == 10

    # A gateway that died mid-reindex: on restart the record says interrupted and the
    # half-built version is gone; the current version never changed.
    building = store.begin("media", dict(embedder.info().spaces), "tiny@1")  # type: ignore[arg-type]
    crashed = {**record, "id": "crashed", "state": "running", "target": building}
    (settings.data_dir / "reindex" / "crashed.json").write_text(json.dumps(crashed))
    restarted = InProcessReindexer(settings=settings, embedder=embedder, store=store)  # type: ignore[arg-type]
    try:
        crashed_now = restarted.status("crashed")
        assert crashed_now["state"] == "failed" and "interrupted" in crashed_now["error"]
        assert store.aliases() == {"media": current}
        assert not store.inner.collection_exists(building)
    finally:
        restarted.close()
