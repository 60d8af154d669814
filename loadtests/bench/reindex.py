"""``clipsearch bench reindex``: a full reindex under search load, against a real gateway.

A ``clipsearch serve`` process (embedded: in-process encoder, Qdrant Edge, job runner) on a temp
data dir ingests N scene PNGs; then search clients hammer ``POST /v1/search`` over HTTP for a
baseline window, and keep going while ``POST /v1/admin/reindex`` rebuilds all N items and swaps
the alias. The report: failed searches during the reindex (the target is zero), search latency
before and during as a ratio, the reindex's rate, and the point counts before and after.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from loadtests.bench.deployment import free_port
from loadtests.bench.encoder import make_inputs
from loadtests.bench.load import machine
from loadtests.procs import stop

READY_TIMEOUT_S = 300.0
JOB_TIMEOUT_S = 3600.0
QUERIES = ("a red circle", "two blue squares", "a green triangle on the left", "yellow")


def run_reindex_bench(
    bundle: Path, *, images: int, clients: int, baseline_s: float
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="clipsearch-bench-reindex-") as tmp:
        root = Path(tmp)
        folder = root / "images"
        folder.mkdir()
        for i, data in enumerate(make_inputs(images).pngs):
            (folder / f"scene-{i:06d}.png").write_bytes(data)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "CLIPSEARCH_DATA_DIR": str(root / "data"),
            "CLIPSEARCH_BUNDLE": str(bundle),
            "CLIPSEARCH_PORT": str(port),
            "CLIPSEARCH_GRPC_PORT": "0",  # the default 50052 may be taken by another gateway
            "CLIPSEARCH_SOURCES__ALLOWED_ROOTS": str(root),
            "CLIPSEARCH_LOG_LEVEL": "WARNING",
        }
        cmd = [sys.executable, "-m", "clipsearch", "serve"]
        log = (root / "gateway.log").open("wb")
        server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            with httpx.Client(base_url=url, timeout=60) as http:
                _wait_ready(http, server, root / "gateway.log")
                job = http.post("/v1/ingest", json={"source": str(folder)}).json()["job_id"]
                ingested = _wait(http, f"/v1/jobs/{job}")
                before = http.get("/v1/collections/media").json()
                report = _under_load(http, url, clients=clients, baseline_s=baseline_s)
                after = http.get("/v1/collections/media").json()
        finally:
            stop(server, 60)
            log.close()
    reindex = report["reindex"]
    report.update(
        {
            "machine": machine(),
            "images": images,
            "clients": clients,
            "ingest": {k: ingested[k] for k in ("state", "done", "failed")},
            "points_before": before["points"],
            "points_after": after["points"],
            "versions": {"before": before["current"], "after": after["current"]},
            "reindex_items_per_s": reindex["total"] / max(reindex["seconds"], 1e-9),
        }
    )
    report["meets_target"] = (
        report["during"]["failed"] == 0
        and reindex["state"] == "completed"
        and report["points_before"] == report["points_after"] == images
    )
    return report


def _under_load(http: httpx.Client, url: str, *, clients: int, baseline_s: float) -> dict[str, Any]:
    phase = ["baseline"]
    samples: dict[str, list[float]] = {"baseline": [], "during": []}
    failures: dict[str, list[str]] = {"baseline": [], "during": []}
    stop = threading.Event()

    def client(n: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as own:
            i = n
            while not stop.is_set():
                body = {"text": QUERIES[i % len(QUERIES)], "limit": 10}
                i += 1
                now = phase[0]
                start = time.perf_counter()
                try:
                    r = own.post("/v1/search", json=body)
                    ok = r.status_code == 200 and len(r.json()["hits"]) == 10
                    reason = "" if ok else f"{r.status_code}: {r.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, reason = False, repr(exc)
                (samples[now] if ok else failures[now]).append(
                    time.perf_counter() - start if ok else reason  # type: ignore[arg-type]
                )

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for t in threads:
        t.start()
    try:
        time.sleep(baseline_s)
        phase[0] = "during"
        start = time.perf_counter()
        started = http.post("/v1/admin/reindex", json={})
        started.raise_for_status()
        record = _wait(http, f"/v1/admin/reindex/{started.json()['id']}")
        seconds = time.perf_counter() - start
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    out: dict[str, Any] = {
        "reindex": {
            "state": record["state"],
            "seconds": seconds,
            "total": record["total"],
            "rebuilt": record["rebuilt"],
            "copied": record["copied"],
            "error": record.get("error"),
        }
    }
    for name in ("baseline", "during"):
        lat = np.asarray(samples[name]) * 1000
        out[name] = {
            "searches": int(lat.size),
            "failed": len(failures[name]),
            "failures": failures[name][:5],
            "p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
            "p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
        }
    if out["baseline"]["p99_ms"] and out["during"]["p99_ms"]:
        out["p99_ratio_during_to_baseline"] = out["during"]["p99_ms"] / out["baseline"]["p99_ms"]
        out["p50_ratio_during_to_baseline"] = out["during"]["p50_ms"] / out["baseline"]["p50_ms"]
    return out


def _wait(http: httpx.Client, path: str) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while (record := http.get(path).json())["state"] in ("queued", "running"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} still {record['state']} after {JOB_TIMEOUT_S} s")
        time.sleep(0.1)
    return record


def _wait_ready(http: httpx.Client, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            err = log.read_text("utf-8", "replace")[-2000:]
            raise RuntimeError(f"the gateway exited ({server.returncode}): {err}")
        try:
            if http.get("/health/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError("the gateway never became ready")
