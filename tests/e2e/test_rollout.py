"""A model rollout on real processes: `clipsearch serve` (the tiny bundle, the embedded store) with
searches running the whole time, rolled onto `tiny-narrow` (32 dims, the tiny bundle's 64):
no search fails during the build, the comparison or the promote; items ingested mid-rollout are
found after the swap; responses name the new bundle, also after a restart; rollback restores the
old model's results exactly."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.rollouts import Server, ingest, ranking, search, served, wait_rollout
from tests.service.gateway.conftest import png

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
NARROW = "tiny-narrow@0.1.0"
WORDS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]


@pytest.fixture()
def server(tmp_path: Path, tiny_bundle_dir: Path) -> Iterator[Server]:
    with served(tmp_path, tiny_bundle_dir) as s:
        yield s


def _search(url: str, text: str, **extra: Any) -> dict[str, Any]:
    return search(url, text, limit=6, **extra)


def _rollout(url: str, rid: str, states: tuple[str, ...], timeout: float = 180) -> dict[str, Any]:
    return wait_rollout(url, rid, states, timeout)


def test_roll_a_live_collection_onto_a_narrower_bundle(
    server: Server, tiny_narrow_bundle_dir: Path
) -> None:
    url = server.url
    media = server.tmp / "src" / "media"
    for i in range(40):
        (media / f"{i:03}.png").write_bytes(png((i * 6 % 256, 30 + i * 5, 220 - i * 5)))
        (media / f"{i:03}.txt").write_text(f"a {WORDS[i % 8]} shape, picture {i}")
    ingest(url, media)
    old_model = _search(url, "a red shape")["model"]
    queries = [f"a {w} shape" for w in WORDS]
    # Exact baselines: one channel, cosine scores (the mid-rollout items carry no caption).
    baseline = {q: ranking(_search(url, q, mode="caption")) for q in queries}

    failed: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    stop = threading.Event()

    def searches() -> None:
        with httpx.Client(timeout=30) as client:
            i = 0
            while not stop.is_set():
                i += 1
                r = client.post(f"{url}/v1/search", json={"text": queries[i % 8], "limit": 5})
                if r.status_code != 200 or len(r.json()["hits"]) != 5:
                    failed.append((r.status_code, r.text))
                else:
                    seen[r.json()["model"]] = seen.get(r.json()["model"], 0) + 1

    thread = threading.Thread(target=searches)
    thread.start()
    try:
        started = httpx.post(
            f"{url}/v1/admin/reindex", json={"bundle": str(tiny_narrow_bundle_dir)}
        )
        assert started.status_code == 202, started.text
        rid = started.json()["id"]
        assert started.json()["bundle"] == NARROW
        # Mid-rollout ingestion: a text item, an uploaded image, and a folder job.
        text_id = httpx.post(
            f"{url}/v1/items", data={"description": "a lighthouse above the sea"}
        ).json()["id"]
        upload = httpx.post(
            f"{url}/v1/items",
            files={"file": ("u.png", png((250, 250, 10)), "image/png")},
            data={"description": "an uploaded zebra crossing"},
        )
        assert upload.status_code == 200, upload.text
        late = server.tmp / "src" / "late"
        late.mkdir()
        (late / "k.png").write_bytes(png((10, 250, 250)))
        (late / "k.desc.txt").write_text("a kite over the dunes")
        ingest(url, late)
        ready = _rollout(url, rid, ("ready",))
        report = ready["comparison"]
        assert report["sampled_queries"] >= len(queries)
        assert report["new"]["latency_p50_ms"] > 0 and report["old"]["latency_p50_ms"] > 0
        assert _search(url, "a red shape")["model"] == old_model
        promoted = httpx.post(f"{url}/v1/admin/reindex/{rid}/promote")
        assert promoted.status_code == 200 and promoted.json()["state"] == "completed"
        deadline = time.monotonic() + 30
        while seen.get(NARROW, 0) < 5:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join()
    assert failed == [], failed[:3]
    assert set(seen) == {old_model, NARROW}

    # After the swap: the new bundle answers, and what came in mid-rollout is there.
    lighthouse = _search(url, "a lighthouse above the sea", mode="description")
    assert lighthouse["model"] == NARROW and lighthouse["hits"][0]["id"] == text_id
    assert (
        _search(url, "an uploaded zebra crossing", mode="description")["hits"][0]["id"]
        == (upload.json()["id"])
    )
    kite = _search(url, "a kite over the dunes", mode="description")["hits"][0]
    assert kite["description"] == "a kite over the dunes" and kite["kind"] == "image"
    info = httpx.get(f"{url}/v1/collections/media").json()
    assert info["bundle"] == NARROW and info["vectors"]["image"] == 32
    assert info["points"] == 40 + 3

    # A restart keeps serving the collection with the bundle it was promoted to.
    server.stop()
    server.start()
    assert _search(url, "a lighthouse above the sea", mode="description")["model"] == NARROW

    back = httpx.post(f"{url}/v1/admin/rollback", json={})
    assert back.status_code == 200 and back.json()["bundle"] == old_model, back.text
    # The old version got the mid-rollout items too (dual write), none with a caption: its
    # caption search answers exactly as before the rollout.
    for q, before in baseline.items():
        now = _search(url, q, mode="caption")
        assert now["model"] == old_model
        assert ranking(now) == before
