"""kill -9 during a reindex (issue 19, item 6), on a real `clipsearch serve` process (tiny bundle,
ONNX Runtime, Qdrant Edge, in-process jobs).

300 image files and 6 images by URL are ingested. The URLs come from an HTTP server of the test's
own, which a reindex must fetch again to rebuild them: the test holds those requests, so the build
is caught mid-run (state ``building``, its version created) for as long as the test likes, with
no timing guess. Meanwhile one item is written and one deleted (they reach the serving version
and the one being built). Then the gateway gets SIGKILL and is started again on the same data dir:

* the reindex reads ``failed`` with the reason ``interrupted``, the half-built version is gone
  (nothing ``building``), and the version that served before still serves;
* every item is there (each id answers ``GET /v1/items/{id}``), the one written during the build
  too, the one deleted stays deleted, and search answers;
* a new reindex (the URLs answered again) completes and is promoted, with the same items.
"""

from __future__ import annotations

import http.server
import io
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from PIL import Image

from service.core.domain import point_id
from tests.indexer.distributed.test_batches import write_images
from tests.support import free_port, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(180)]

N_FILES = 300
N_URLS = 6
READY_S = 120.0
HOLD_S = 90.0  # a held fetch is answered after this at the latest (the kill comes well before)


class HeldImages:
    """A loopback HTTP server of PNGs; while ``held``, each request waits until released and
    ``asked`` is set, so a reindex that fetches them stops there."""

    def __init__(self, n: int) -> None:
        rng = np.random.default_rng(5)
        self.pngs = {}
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(buf, "PNG")
            self.pngs[f"/url-{i}.png"] = buf.getvalue()
        self.open = threading.Event()
        self.open.set()
        self.asked = threading.Event()
        held = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = held.pngs.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                if not held.open.is_set():
                    held.asked.set()
                    held.open.wait(HOLD_S)
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the gateway that asked was killed meanwhile
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.urls = [f"http://127.0.0.1:{self.server.server_address[1]}{p}" for p in self.pngs]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.open.set()
        self.server.shutdown()
        self.server.server_close()


class Gateway:
    """`clipsearch serve` on a fixed data dir and port, started again after a kill."""

    def __init__(self, tmp: Path, bundle: Path, root: Path) -> None:
        self.tmp, self.bundle, self.root = tmp, bundle, root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.http = httpx.Client(base_url=self.url, timeout=30)  # reconnects after a restart

    def start(self) -> None:
        self.starts += 1
        log = self.tmp / f"serve-{self.starts}.log"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CLIPSEARCH_")},
            "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(Path.cwd()),
            "CLIPSEARCH_GRPC_PORT": "0",
            "CLIPSEARCH_SOURCES__ALLOWED_NETWORKS": "127.0.0.1/32",
            # A held fetch must not time out before the kill, however slow the machine.
            "CLIPSEARCH_SOURCES__FETCH_TIMEOUT_S": "120",
        }
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "clipsearch", "serve", "--port", str(self.port),
                 "--data-dir", str(self.tmp / "data"), "--bundle", str(self.bundle),
                 "--allow-root", str(self.root)],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

        def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, log.read_text()[-3000:]
            try:
                return self.http.get("/health/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, READY_S)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        self.http.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)

    def get(self, path: str) -> httpx.Response:
        return self.http.get(path)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.post(path, **kw)


@pytest.fixture(name="held")
def held_fixture() -> Iterator[HeldImages]:
    server = HeldImages(N_URLS)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(name="gateway")
def gateway_fixture(tmp_path: Path, tiny_bundle_dir: Path) -> Iterator[Gateway]:
    g = Gateway(tmp_path, tiny_bundle_dir, tmp_path / "src")
    try:
        yield g
    finally:
        g.stop()


def _ingest(g: Gateway, source: dict[str, Any]) -> None:
    job_id = g.post("/v1/ingest", json={"source": source}).json()["job_id"]
    job: dict[str, Any] = {}

    def ended() -> bool:
        job.update(g.get(f"/v1/jobs/{job_id}").json())
        return job["state"] not in ("queued", "running")

    wait_until(ended, 120)
    assert (job["state"], job["failed"]) == ("completed", 0), job


def _reindex(g: Gateway, rollout_id: str) -> dict[str, Any]:
    response = g.get(f"/v1/admin/reindex/{rollout_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def _assert_items(g: Gateway, present: set[str], gone: str) -> None:
    missing = [
        i for i in sorted(present) if g.get(f"/v1/items/{quote(i, safe='')}").status_code != 200
    ]
    assert missing == [], f"{len(missing)} of {len(present)} items lost: {missing[:5]}"
    assert g.get(f"/v1/items/{quote(gone, safe='')}").status_code == 404
    info = g.get("/v1/collections/media").json()
    assert info["points"] == len(present), info
    hits = g.post("/v1/search", json={"text": "a colourful picture", "mode": "image", "limit": 10})
    assert hits.status_code == 200 and len(hits.json()["hits"]) == 10, hits.text
    assert gone not in {h["id"] for h in hits.json()["hits"]}


def test_a_gateway_killed_mid_reindex_serves_every_item_and_reindexes_again(
    tmp_path: Path, gateway: Gateway, held: HeldImages
) -> None:
    g = gateway
    files = write_images(tmp_path / "src" / "photos", N_FILES)
    g.start()
    _ingest(g, {"directory": str(files[0].parent)})
    _ingest(g, {"urls": held.urls})
    ids = {point_id("media", p.as_uri()) for p in files} | {point_id("media", u) for u in held.urls}
    before = g.get("/v1/collections/media").json()
    assert before["points"] == N_FILES + N_URLS, before
    serving = before["current"]

    held.open.clear()  # the rebuild's fetches of the URL items now wait
    started = g.post("/v1/admin/reindex", json={"promote": "auto"})
    assert started.status_code == 202, started.text
    rollout = started.json()
    assert held.asked.wait(60), _reindex(g, rollout["id"])  # the build reached a URL item
    mid = _reindex(g, rollout["id"])
    assert mid["state"] == "building" and mid["target"] != serving, mid
    building = g.get("/v1/collections/media").json()
    assert building["building"] == mid["target"], building  # its version exists, half built

    # A write and a delete while it builds: both must outlive the kill.
    added = g.post(
        "/v1/items",
        files={"file": ("added.png", held.pngs["/url-0.png"], "image/png")},
        data={"caption": "written during the build", "id": "during-build"},
    )
    assert added.status_code == 200, added.text
    gone = point_id("media", files[7].as_uri())
    deleted = g.http.delete(f"/v1/items/{quote(gone, safe='')}")
    assert deleted.status_code == 204, deleted.text
    present = (ids - {gone}) | {added.json()["id"]}

    assert _reindex(g, rollout["id"])["state"] == "building"  # still held
    g.kill()  # SIGKILL: the build thread dies holding a fetch, the store mid-write
    held.open.set()
    g.start()  # the same data dir and port

    after = _reindex(g, rollout["id"])
    assert after["state"] == "failed" and "interrupted" in (after["error"] or ""), after
    info = g.get("/v1/collections/media").json()
    assert (info["current"], info["building"]) == (serving, None), info
    _assert_items(g, present, gone)

    again = g.post("/v1/admin/reindex", json={"promote": "auto"})
    assert again.status_code == 202, again.text  # the interrupted one blocks nothing
    done: dict[str, Any] = {}

    def settled() -> bool:
        done.update(_reindex(g, again.json()["id"]))
        return done["state"] in ("completed", "failed", "cancelled")

    wait_until(settled, 120)
    assert done["state"] == "completed", done
    assert (done["total"], done["points"]) == (len(present), len(present)), done
    info = g.get("/v1/collections/media").json()
    assert (info["current"], info["building"]) == (done["target"], None), info
    assert done["target"] != serving
    _assert_items(g, present, gone)
    listed = {r["id"]: r["state"] for r in g.get("/v1/admin/reindex").json()}
    assert listed == {rollout["id"]: "failed", again.json()["id"]: "completed"}
