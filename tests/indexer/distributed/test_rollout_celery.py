"""A model rollout in a Celery deployment (issue 14), on real processes: a private Redis, a real
``clipsearch indexer`` worker, and ``clipsearch serve`` with the writer inside, all on the
shipped default bundle (``photo``). The collection is rolled out onto ``tiny`` (the tiny test
bundle, other vector dims), which the indexer has never served: jobs sent while the rollout
builds and while it waits ``ready`` carry both bundles, the indexer loads ``tiny`` from the
spec and embeds every item twice, and the writer routes each point to its bundle's version. After
the promote every item is there, searched with tiny; a rollback serves the old model again.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.indexer.distributed.test_batches import write_images
from tests.support import celery_deployment, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT = REPO_ROOT / "models" / "zoo" / "photo"
N_FIRST, N_DURING, N_READY = 8, 6, 5
TIMEOUT_S = 300.0


def _wait_job(url: str, job_id: str) -> dict[str, Any]:
    box: list[dict[str, Any]] = [{}]

    def ended() -> bool:
        box[0] = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=10).json()
        return box[0].get("state") in ("completed", "failed", "cancelled", "interrupted")

    wait_until(ended, TIMEOUT_S)
    return box[0]


def _ingest(url: str, folder: Path) -> str:
    r = httpx.post(f"{url}/v1/ingest", json={"source": {"directory": str(folder)}}, timeout=30)
    assert r.status_code == 202, r.text
    return str(r.json()["job_id"])


def _search(url: str, text: str) -> dict[str, Any]:
    r = httpx.post(
        f"{url}/v1/search", json={"text": text, "mode": "image", "limit": 50}, timeout=30
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _versions(url: str) -> dict[str, dict[str, Any]]:
    info = httpx.get(f"{url}/v1/collections/media", timeout=10).json()
    return {v["role"] or v["name"]: v for v in info["versions"]}


def test_a_rollout_onto_tiny_with_celery_indexers_misses_nothing_ingested_meanwhile(
    tmp_path: Path, tiny_bundle_dir: Path
) -> None:
    with celery_deployment(tmp_path, DEFAULT, N_FIRST, workers=("w1",)) as d:
        # ``tiny`` is the tiny test bundle built for each process's data dir.
        for data in (d.data_dir, tmp_path / "indexer-data"):
            shutil.copytree(tiny_bundle_dir, data / "bundles" / "tiny-test", dirs_exist_ok=True)
        first = _wait_job(d.url, _ingest(d.url, d.photos))
        assert (first["state"], first["done"]) == ("completed", N_FIRST), first
        old = _search(d.url, "a photo")
        assert old["model"].startswith("photo@") and len(old["hits"]) == N_FIRST

        started = httpx.post(f"{d.url}/v1/admin/reindex", json={"bundle": "tiny"}, timeout=60)
        assert started.status_code in (200, 202), started.text
        rollout = started.json()
        assert rollout["bundle"].startswith("tiny-test@"), rollout
        # A job sent while the rollout builds, and one while it waits ready (still dual write).
        during = write_images(d.photos.parent / "during", N_DURING, seed=1)
        job = _ingest(d.url, d.photos.parent / "during")

        def settled() -> bool:
            state = httpx.get(f"{d.url}/v1/admin/reindex/{rollout['id']}", timeout=10).json()
            rollout.update(state)
            return state["state"] not in ("queued", "building")

        wait_until(settled, TIMEOUT_S)
        assert rollout["state"] == "ready", rollout
        assert _wait_job(d.url, job)["done"] == N_DURING
        ready = write_images(d.photos.parent / "ready", N_READY, seed=2)
        later = _wait_job(d.url, _ingest(d.url, d.photos.parent / "ready"))
        assert (later["state"], later["done"], later["failed"]) == ("completed", N_READY, 0)

        total = N_FIRST + N_DURING + N_READY
        versions = _versions(d.url)
        assert versions["current"]["points"] == total, versions
        assert versions["next"]["points"] == total, versions
        assert versions["next"]["bundle"] == rollout["bundle"]
        assert any("loaded bundle tiny-test@" in p.read_text() for p in d.worker_logs.values())

        promoted = httpx.post(f"{d.url}/v1/admin/reindex/{rollout['id']}/promote", timeout=120)
        assert promoted.status_code == 200, promoted.text
        new = _search(d.url, "a photo")
        assert new["model"] == rollout["bundle"] and len(new["hits"]) == total, new["model"]
        for path in [*d.images, *during, *ready]:
            item = httpx.get(f"{d.url}/v1/items/{quote(path.as_uri(), safe='')}", timeout=10)
            assert item.status_code == 200, (path, item.text)
        # After the swap writes still reach both (the previous version, for a rollback).
        after = write_images(d.photos.parent / "after", 3, seed=3)
        assert _wait_job(d.url, _ingest(d.url, d.photos.parent / "after"))["done"] == 3
        versions = _versions(d.url)
        assert versions["current"]["points"] == versions["previous"]["points"] == total + 3

        back = httpx.post(f"{d.url}/v1/admin/rollback", json={"collection": "media"}, timeout=60)
        assert back.status_code == 200, back.text
        again = _search(d.url, "a photo")
        assert again["model"] == old["model"] and len(again["hits"]) == total + 3
        for path in after:  # written after the swap: there after the rollback too
            item = httpx.get(f"{d.url}/v1/items/{quote(path.as_uri(), safe='')}", timeout=10)
            assert item.status_code == 200, (path, item.text)
