"""Model rollouts on a real gateway (tiny bundle → tiny-narrow, 64 → 32 dims, ONNX Runtime, Qdrant
Edge): the next version is built with the other bundle while searches go on, compared on the
logged queries and a golden set, promoted (queries and vectors switch together) and rolled back
to exactly the old results; writes during the build reach both versions; bad requests change
nothing."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from indexer.reindex import InProcessReindexer
from service.core.bundle.manifest import Bundle, load_bundle
from service.core.config import AdminSettings, AuthSettings, Settings
from service.core.domain import Point, point_id
from service.core.errors import ClipsearchError, ErrorType, not_found
from service.items.points import Item, build_versioned_points
from service.search.planner import Query
from service.search.querylog import QueryLog
from service.store.versions import VersionedStore
from tests.indexer import test_reindex
from tests.indexer.test_reindex import GatedBulk, _ids, wait_rollout
from tests.service.gateway.conftest import make_settings, png, running_client
from tests.support import wait_for_job, wait_until

parts = test_reindex.parts  # the fixture: settings, a gated embedder, the store
NARROW = "tiny-narrow@0.1.0"
N_IMAGES = 24
WORDS = ["red", "green", "blue", "yellow", "purple", "orange"]


@pytest.fixture
def gateway(tmp_path: Path, tiny_bundle_dir: Path) -> Iterator[TestClient]:
    yield from running_client(make_settings(tmp_path, tiny_bundle_dir))


def _ingest(client: TestClient, folder: Path) -> None:
    folder.mkdir(parents=True)
    for i in range(N_IMAGES):
        (folder / f"{i:03}.png").write_bytes(png((i * 10 % 256, 40 + i * 5, 200 - i * 7)))
        (folder / f"{i:03}.txt").write_text(f"a {WORDS[i % 6]} square number {i}")
    job = client.post("/v1/ingest", json={"source": str(folder)}).json()["job_id"]
    assert wait_for_job(lambda j: client.get(f"/v1/jobs/{j}").json(), job)["state"] == "completed"


def _search(client: TestClient, text: str, **extra: Any) -> dict[str, Any]:
    r = client.post("/v1/search", json={"text": text, "limit": 5, **extra})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _ranking(body: dict[str, Any]) -> list[tuple[str, float]]:
    return [(h["id"], h["score"]) for h in body["hits"]]


def test_rollout_onto_another_bundle_compares_promotes_and_rolls_back(
    gateway: TestClient, tmp_path: Path, tiny_narrow_bundle_dir: Path
) -> None:
    client = gateway
    store: VersionedStore = client.app.state.runtime.components.store  # type: ignore[attr-defined]
    _ingest(client, tmp_path / "src" / "media")
    first = store.aliases()["media"]
    old_model = _search(client, "a red square")["model"]
    assert old_model.startswith("tiny-test@")
    # Real queries for the comparison to replay (the query log), and exact baselines.
    queries = [f"a {w} square" for w in WORDS]
    baseline = {q: _ranking(_search(client, q, mode="caption", limit=8)) for q in queries}
    right = _search(client, "a red square number 0")["hits"][0]["id"]
    golden = client.put(
        "/v1/admin/golden",
        json={"queries": [{"text": "a red square number 0", "expected": [right]}]},
    )
    assert golden.status_code == 200 and golden.json() == {"collection": "media", "queries": 1}

    failures: list[tuple[int, str]] = []
    models: set[str] = set()
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            r = client.post("/v1/search", json={"text": "a blue square", "limit": 5})
            if r.status_code != 200 or len(r.json()["hits"]) != 5:
                failures.append((r.status_code, r.text))
            else:
                models.add(r.json()["model"])

    loader = threading.Thread(target=load)
    loader.start()
    try:
        started = client.post("/v1/admin/reindex", json={"bundle": str(tiny_narrow_bundle_dir)})
        assert started.status_code == 202, started.text
        record = started.json()
        assert (record["bundle"], record["source_bundle"]) == (NARROW, old_model)
        assert record["state"] in ("queued", "building") and record["promote"] == "manual"
        # Ingested mid-rollout: embedded by both bundles.
        mid = client.post("/v1/items", data={"description": "a lighthouse on a cliff"})
        assert mid.status_code == 200, mid.text
        mid_id = mid.json()["id"]
        ready = wait_rollout(lambda r: client.get(f"/v1/admin/reindex/{r}").json(), record["id"])
        assert ready["state"] == "ready", ready
        assert _search(client, "a red square")["model"] == old_model  # nothing switched yet
        late = client.post("/v1/items", data={"description": "a windmill in a field"}).json()["id"]

        target = ready["target"]
        assert store.vector_dims(target)["image"] == 32 and store.vector_dims(first)["image"] == 64
        report = ready["comparison"]
        assert report["sampled_queries"] >= len(queries) and report["golden_queries"] == 1
        assert 0.0 <= report["overlap_at_10"] <= 1.0
        for side in ("old", "new"):
            s = report[side]
            assert s["recall_at_1"] is not None and 0.0 <= s["recall_at_10"] <= 1.0
            assert s["score_p10"] <= s["score_p50"] <= s["score_p90"]
            assert s["latency_p50_ms"] > 0 and s["searches"] == report["sampled_queries"] + 1
        assert (report["old"]["version"], report["new"]["version"]) == (first, target)
        # The old version answers as it always did: its golden hit is the expected item.
        assert report["old"]["recall_at_1"] == 1.0
        assert {q["text"] for q in report["queries"]} >= set(queries)

        promoted = client.post(f"/v1/admin/reindex/{record['id']}/promote")
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["state"] == "completed"
        again = client.post(f"/v1/admin/reindex/{record['id']}/promote")
        assert again.status_code == 409 and "completed" in again.text
        after = _search(client, "a lighthouse on a cliff", mode="description")
        wait_until(lambda: NARROW in models)
    finally:
        stop.set()
        loader.join()
    assert failures == []
    assert after["model"] == NARROW and after["hits"][0]["id"] == mid_id
    assert client.get(f"/v1/items/{late}").status_code == 200
    assert models == {NARROW, old_model}
    new_points = store.retrieve("media", [mid_id, late], with_vectors=True)
    assert {r.payload["model"] for r in new_points} == {NARROW}
    assert all(len(r.vectors["description"]) > 0 for r in new_points)
    assert store.count("media") == N_IMAGES + 2

    back = client.post("/v1/admin/rollback", json={})
    assert back.status_code == 200, back.text
    assert back.json() == {"collection": "media", "from": target, "to": first, "bundle": old_model}
    # The old model's results exactly: the same ids, order and scores as before the rollout
    # (the mid-rollout items, which the old version got too, have no caption to be found by).
    for q, ranking in baseline.items():
        now = _search(client, q, mode="caption", limit=8)
        assert now["model"] == old_model
        assert _ranking(now) == ranking


def test_writes_during_a_build_with_another_bundle_reach_it(
    parts: tuple[Settings, GatedBulk, VersionedStore], tiny_narrow_bundle_dir: Path
) -> None:
    settings, embedder, store = parts
    docs = [Item(description=f"document {i} about boats", source_id=f"d{i}") for i in range(80)]
    for points in build_versioned_points(embedder, "media", docs, lane="interactive"):  # type: ignore[arg-type]
        assert isinstance(points, list)
        store.upsert("media", points)

    def resolve(spec: str) -> Bundle:
        return load_bundle(Path(spec))

    reindexer = InProcessReindexer(
        settings=settings,
        embedder=embedder,  # type: ignore[arg-type]
        store=store,
        resolve_bundle=resolve,
    )
    try:
        record = reindexer.start("media", str(tiny_narrow_bundle_dir))
        wait_until(lambda: embedder.bulk_calls == 1)  # the first page is inside the encoder
        # Held mid-build: promote is refused, so is a second rollout; a write reaches both
        # versions with each bundle's vectors; a delete reaches both.
        with pytest.raises(ClipsearchError) as early:
            reindexer.promote(record["id"])
        assert early.value.type == ErrorType.conflict and "building" in early.value.message
        with pytest.raises(ClipsearchError) as twice:
            reindexer.start("media", str(tiny_narrow_bundle_dir))
        assert twice.value.type == ErrorType.conflict
        bundles = store.write_bundles("media")
        assert bundles[1] == NARROW and bundles[0] != NARROW
        (added,) = build_versioned_points(
            embedder,  # type: ignore[arg-type]
            "media",
            [Item(description="a harbour at dawn", source_id="new")],
            lane="interactive",
            bundles=bundles,
        )
        assert isinstance(added, list) and len(added) == 2
        store.upsert("media", added)
        gone = sorted(_ids(store, "media"))[-1]
        store.delete("media", [gone])
        embedder.gate.set()
        done = wait_rollout(reindexer.status, record["id"])
        assert done["state"] == "ready", done
        target = done["target"]
        new = store.retrieve(target, [added[0].id], with_vectors=True)[0]
        old = store.retrieve("media", [added[0].id], with_vectors=True)[0]
        assert (new.payload["model"], old.payload["model"]) == (NARROW, bundles[0])
        assert len(new.vectors["description"]) == len(old.vectors["description"])
        assert _ids(store, target) == _ids(store, "media")
        assert gone not in _ids(store, target) and done["missing"] == 0
        reindexer.promote(record["id"])
        assert store.bundle_of("media") == (target, NARROW)
        # Writes keep reaching the previous version, with its bundle: a rollback serves them.
        assert store.write_bundles("media") == [NARROW, bundles[0]]
    finally:
        embedder.gate.set()
        reindexer.close()


def test_bad_rollout_requests_are_4xx_and_change_nothing(
    gateway: TestClient, tmp_path: Path, tiny_narrow_bundle_dir: Path
) -> None:
    client = gateway
    components = client.app.state.runtime.components  # type: ignore[attr-defined]
    store: VersionedStore = components.store
    client.post("/v1/items", data={"description": "a quiet harbour"})

    def served() -> list[str]:
        return [b.ref for b in components.embedder.info().bundles]

    before = (store.aliases(fresh=True), served(), store.list_collections())
    unknown = client.post("/v1/admin/reindex", json={"bundle": "no-such-bundle"})
    assert unknown.status_code == 404 and "no-such-bundle" in unknown.text
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_narrow_bundle_dir, corrupt)
    (corrupt / "text.onnx").write_bytes(b"not the model it was")
    broken = client.post("/v1/admin/reindex", json={"bundle": str(corrupt)})
    assert broken.status_code == 400 and "checksum" in broken.text, broken.text
    assert client.post("/v1/admin/reindex", json={"promote": "later"}).status_code == 422
    nothing = client.post("/v1/admin/rollback", json={})
    assert nothing.status_code == 409 and "no previous version" in nothing.text
    assert client.post("/v1/admin/reindex/nope/promote").status_code == 404
    bad: dict[str, Any]
    for bad in (
        {"queries": [{"text": "x"}]},
        {"queries": [{"text": "x", "expected": ["a"], "rank": 1}]},
        {"queries": []},
        {"queries": [{"text": "x", "expected": "a"}]},
        {"golden": []},
    ):
        assert client.put("/v1/admin/golden", json=bad).status_code == 422, bad
    missing = client.put(
        "/v1/admin/golden",
        json={"collection": "nope", "queries": [{"text": "x", "expected": ["a"]}]},
    )
    assert missing.status_code == 404
    assert client.get("/v1/admin/golden").json() == {"collection": "media", "queries": []}
    assert (store.aliases(fresh=True), served(), store.list_collections()) == before
    assert client.get("/v1/admin/reindex").json() == []

    # Promote before ready, and a second rollout of the collection: 409, nothing changed.
    gated = GatedBulk(components.embedder)
    components.reindexer._embedder = gated
    try:
        started = client.post("/v1/admin/reindex", json={"bundle": str(tiny_narrow_bundle_dir)})
        assert started.status_code == 202, started.text
        rid = started.json()["id"]
        wait_until(lambda: gated.bulk_calls >= 1)
        early = client.post(f"/v1/admin/reindex/{rid}/promote")
        assert early.status_code == 409 and "only a rollout that is ready" in early.text
        twice = client.post("/v1/admin/reindex", json={"bundle": str(tiny_narrow_bundle_dir)})
        assert twice.status_code == 409 and rid in twice.text
        blocked = client.post("/v1/admin/rollback", json={})
        assert blocked.status_code == 409
        aliases = store.aliases(fresh=True)
        assert aliases["media"] == before[0]["media"]
    finally:
        gated.gate.set()
    cancelled = client.delete(f"/v1/admin/reindex/{rid}")  # building or ready: dropped
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert store.aliases(fresh=True) == before[0]
    assert NARROW not in served()  # the bundle it loaded went with it


def test_every_admin_route_needs_the_admin_scope(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    keys = {"s": frozenset({"search"}), "a": frozenset({"admin"})}
    settings = make_settings(tmp_path, tiny_bundle_dir, auth=AuthSettings(api_keys=keys))  # type: ignore[arg-type]
    routes: list[tuple[str, str, dict[str, Any]]] = [
        ("post", "/v1/admin/reindex", {"json": {}}),
        ("get", "/v1/admin/reindex", {}),
        ("get", "/v1/admin/reindex/x", {}),
        ("delete", "/v1/admin/reindex/x", {}),
        ("post", "/v1/admin/reindex/x/promote", {}),
        ("post", "/v1/admin/rollback", {"json": {}}),
        ("put", "/v1/admin/golden", {"json": {"queries": [{"text": "t", "expected": ["a"]}]}}),
        ("get", "/v1/admin/golden", {}),
    ]
    for client in running_client(settings):
        for method, path, kw in routes:
            anonymous = getattr(client, method)(path, **kw)
            searcher = getattr(client, method)(path, headers={"x-api-key": "s"}, **kw)
            assert (anonymous.status_code, searcher.status_code) == (401, 403), path
        assert client.get("/v1/admin/reindex", headers={"x-api-key": "a"}).status_code == 200


def test_query_log_is_bounded_distinct_and_hashes_images() -> None:
    log = QueryLog(4)
    for text in ("a", "b", "a", "c"):
        log.record("media", Query(text=text))
    log.record("other", Query(text="z"))
    log.record("media", Query(image=b"\x89PNG secret pixels"))
    assert len(log) == 4  # the two oldest went
    assert log.recent_texts("media", 10) == ["c", "a"]
    assert log.recent_texts("other", 10) == ["z"]
    assert log.counts("media") == {"text": 2, "image": 1}
    assert "secret" not in repr(log._entries)
    log.record("media", Query(item_id="x"))  # item queries are not kept
    assert log.counts("media") == {"text": 2, "image": 1}


def test_query_log_opt_out_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLIPSEARCH_ADMIN__QUERY_LOG", "0")
    monkeypatch.setenv("CLIPSEARCH_ADMIN__RETENTION", "3")
    settings = Settings(data_dir=tmp_path)
    assert settings.admin == AdminSettings(query_log=False, retention=3)


def test_retention_keeps_that_many_replaced_versions(
    parts: tuple[Settings, GatedBulk, VersionedStore],
) -> None:
    _, embedder, store = parts
    dims = dict(embedder.info().spaces)
    made = [store.aliases()["media"]]
    for keep in (1, 2, 2):
        store.begin("media", dims, "tiny@1")  # type: ignore[arg-type]
        old, new = store.swap("media", keep=keep)
        assert old == made[-1]
        made.append(new)
    names = [v.name for v in store.versions("media")]
    # keep=2 after the last swap: the current, the previous and one more.
    assert names == made[-3:]
    assert store.aliases()["media.previous"] == made[-2]


def test_writes_while_either_bundle_serves_survive_rollback_and_roll_forward(
    gateway: TestClient, tiny_narrow_bundle_dir: Path
) -> None:
    """Issue 19: after a rollout onto another bundle, a write and a delete made while the new
    version serves, and while the previous one serves again after a rollback, are all there
    whichever version serves next: writes are embedded for the previous version's bundle too."""
    client = gateway
    store: VersionedStore = client.app.state.runtime.components.store  # type: ignore[attr-defined]

    def add(text: str) -> str:
        r = client.post("/v1/items", data={"description": text, "id": text})
        assert r.status_code == 200, r.text
        return text

    def seen(*ids: str) -> list[bool]:
        return [client.get(f"/v1/items/{i}").status_code == 200 for i in ids]

    kept, doomed = add("a kept note"), add("a doomed note")
    started = client.post("/v1/admin/reindex", json={"bundle": str(tiny_narrow_bundle_dir)})
    assert started.status_code == 202, started.text
    rollout = started.json()["id"]
    ready = wait_rollout(lambda r: client.get(f"/v1/admin/reindex/{r}").json(), rollout)
    assert ready["state"] == "ready", ready
    assert client.post(f"/v1/admin/reindex/{rollout}/promote").status_code == 200
    assert store.write_bundles("media") == [NARROW, ready["source_bundle"]]
    after_promote = add("written under narrow")
    assert client.delete(f"/v1/items/{doomed}").status_code == 204
    assert client.post("/v1/admin/rollback", json={}).status_code == 200
    assert store.bundle_of("media")[1] == ready["source_bundle"]
    assert seen(kept, doomed, after_promote) == [True, False, True]
    after_rollback = add("written after the rollback")
    assert client.delete(f"/v1/items/{kept}").status_code == 204
    assert client.post("/v1/admin/rollback", json={}).status_code == 200  # roll forward
    assert store.bundle_of("media")[1] == NARROW
    assert seen(kept, doomed, after_promote, after_rollback) == [False, False, True, True]
    (record,) = store.retrieve("media", [point_id("media", after_rollback)])
    assert record.payload["model"] == NARROW
    assert store.count("media") == store.count("media.previous") == 2


def test_a_write_racing_a_promote_is_refused_not_misfiled(
    parts: tuple[Settings, GatedBulk, VersionedStore],
) -> None:
    _, embedder, store = parts
    store.begin("media", {"image": 4, "caption": 4, "description": 4}, NARROW)
    store.swap("media")  # the collection is now searched with tiny-narrow
    (points,) = build_versioned_points(
        embedder,  # type: ignore[arg-type]
        "media",
        [Item(description="made with the old bundle", source_id="x")],
        lane="interactive",
    )
    assert isinstance(points, list) and isinstance(points[0], Point)
    with pytest.raises(ClipsearchError) as refused:
        store.upsert("media", points)
    assert refused.value.type == ErrorType.conflict and NARROW in refused.value.message
    assert store.count("media") == 0


def test_a_version_of_a_bundle_not_served_is_unavailable(gateway: TestClient) -> None:
    components = gateway.app.state.runtime.components  # type: ignore[attr-defined]
    store: VersionedStore = components.store
    store.begin("media", {"image": 4, "caption": 4, "description": 4}, "gone@1")
    store.swap("media")
    r = gateway.post("/v1/search", json={"text": "anything"})
    assert r.status_code == 503 and "gone@1" in r.text and "roll" in r.text
    w = gateway.post("/v1/items", data={"description": "a note"})
    assert w.status_code == 503 and "gone@1" in w.text and "roll" in w.text


class Remote:
    """The real client as a gateway sees remote workers: no bundle loading at run time."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        if name in ("add_bundle", "drop_bundle"):
            raise AttributeError(name)
        return getattr(self.inner, name)


def test_with_remote_workers_a_rollout_uses_only_bundles_they_serve(
    parts: tuple[Settings, GatedBulk, VersionedStore], tiny_narrow_bundle_dir: Path
) -> None:
    settings, embedder, store = parts
    before = store.aliases(fresh=True)
    reindexer = InProcessReindexer(
        settings=settings,
        embedder=Remote(embedder.inner),  # type: ignore[arg-type]
        store=store,
        resolve_bundle=lambda spec: load_bundle(Path(spec)),
    )
    try:
        with pytest.raises(ClipsearchError) as refused:
            reindexer.start("media", str(tiny_narrow_bundle_dir))
        assert refused.value.type == ErrorType.invalid_input
        assert "--bundle" in refused.value.message and "tiny-test@" in refused.value.message
        assert store.aliases(fresh=True) == before and reindexer.list() == []
    finally:
        reindexer.close()


def test_a_ready_rollout_survives_a_restart_and_reloads_its_bundle(
    parts: tuple[Settings, GatedBulk, VersionedStore], tiny_narrow_bundle_dir: Path
) -> None:
    settings, embedder, store = parts
    embedder.gate.set()
    for points in build_versioned_points(
        embedder,  # type: ignore[arg-type]
        "media",
        [Item(description=f"note {i}", source_id=f"n{i}") for i in range(5)],
        lane="interactive",
    ):
        assert isinstance(points, list)
        store.upsert("media", points)

    def make() -> InProcessReindexer:
        return InProcessReindexer(
            settings=settings,
            embedder=embedder,  # type: ignore[arg-type]
            store=store,
            resolve_bundle=lambda spec: load_bundle(Path(spec)),
        )

    first = make()
    rid = first.start("media", str(tiny_narrow_bundle_dir))["id"]
    assert wait_rollout(first.status, rid)["state"] == "ready"
    first.close()
    # A fresh process serves only its default.
    embedder.inner.drop_bundle(NARROW, grace_s=0)  # type: ignore[attr-defined]
    restarted = make()
    try:
        assert NARROW in [b.ref for b in embedder.info().bundles]  # loaded again
        assert restarted.status(rid)["state"] == "ready"
        assert restarted.promote(rid)["state"] == "completed"
        assert store.bundle_of("media")[1] == NARROW and store.count("media") == 5
        back = restarted.rollback("media")  # the previous version, tiny's, serves again
    finally:
        restarted.close()
    # Writes reach the previous version too, embedded by its bundle: restarted where that
    # bundle cannot be loaded again, the previous version is given up, and writes go on.
    embedder.inner.drop_bundle(NARROW, grace_s=0)  # type: ignore[attr-defined]

    def lost(spec: str) -> Bundle:
        raise not_found(f"no bundle {spec!r}")

    third = InProcessReindexer(
        settings=settings,
        embedder=embedder,  # type: ignore[arg-type]
        store=store,
        resolve_bundle=lost,
    )
    try:
        assert store.aliases() == {"media": back["to"]}
        assert store.write_bundles("media") == [back["bundle"]]
        with pytest.raises(ClipsearchError) as refused:
            third.rollback("media")
        assert refused.value.type == ErrorType.conflict
    finally:
        third.close()


def test_openai_embeddings_serve_every_loaded_bundle(
    gateway: TestClient, tiny_narrow_bundle_dir: Path
) -> None:
    components = gateway.app.state.runtime.components  # type: ignore[attr-defined]
    components.embedder.add_bundle(load_bundle(tiny_narrow_bundle_dir))
    body = {"input": "a red square", "encoding_format": "float"}
    narrow = gateway.post("/v1/embeddings", json={**body, "model": "tiny-narrow"})
    default = gateway.post("/v1/embeddings", json={**body, "model": "tiny-test"})
    assert narrow.status_code == default.status_code == 200, narrow.text
    assert narrow.json()["model"] == NARROW
    assert len(narrow.json()["data"][0]["embedding"]) == 32
    assert len(default.json()["data"][0]["embedding"]) == 64
