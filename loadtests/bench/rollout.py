"""A model rollout's timings on a real gateway: tiny → tiny-narrow under search load.

A ``clipsearch serve`` process (embedded: in-process encoder, Qdrant Edge, in-process jobs) on the
tiny bundle ingests N captioned scene PNGs (a ``.txt`` caption beside each). ``--clients`` threads
``POST /v1/search`` (text queries, which the comparison also samples) for a baseline window, then
keep going while ``POST /v1/admin/reindex {"bundle": tiny-narrow, "promote": "manual"}`` rebuilds
every item with the other bundle (32 dims where tiny has 64), reconciles, compares the two
versions, and waits in ``ready``; then ``promote`` swaps the alias.

Figures: the time of each phase (rebuild, reconcile, compare) and of build + compare together,
points rebuilt per second, the promote's time, search p50/p99 idle against during the rollout and
their ratio, failed searches, and the bundle that answers after the promote. ::

    python -m loadtests.bench.rollout          # bench-results/rollout.json

``--from`` and ``--to`` take bundle folders instead of building tiny and tiny-narrow here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from loadtests.bench.deployment import REPO_ROOT, free_port, wait
from loadtests.bench.encoder import make_inputs
from loadtests.bench.faults import percentile
from loadtests.bench.late_start import process, wait_gateway_ready
from loadtests.bench.load import machine
from service.core.bundle.manifest import load_bundle

IMAGES = 300
CLIENTS = 2
BASELINE_S = 8.0
ROLLOUT_TIMEOUT_S = 900.0
PHASES = ("rebuild", "reconcile", "compare")
QUERIES = ("a red circle", "two blue squares", "a green triangle on the left", "yellow")


class _Searches:
    """``clients`` threads searching; each call's start, latency and status."""

    def __init__(self, url: str, clients: int) -> None:
        self.calls: list[tuple[float, float, int]] = []
        self.models: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(url, i)) for i in range(clients)]
        for thread in self._threads:
            thread.start()

    def _run(self, url: str, n: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            i = n
            while not self._stop.is_set():
                start = time.monotonic()
                try:
                    response = http.post(
                        "/v1/search", json={"text": QUERIES[i % len(QUERIES)], "limit": 10}
                    )
                    status = response.status_code
                    if status == 200:
                        self.models.append(str(response.json().get("model")))
                except httpx.HTTPError:
                    status = 0
                self.calls.append((start, time.monotonic() - start, status))
                i += 1

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def latencies(self, since: float, until: float) -> list[float]:
        return [s for start, s, _ in self.calls if since <= start < until]


def _write_inputs(folder: Path, images: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    inputs = make_inputs(images)
    for i, (caption, data) in enumerate(zip(inputs.texts, inputs.pngs, strict=True)):
        (folder / f"scene-{i:05d}.png").write_bytes(data)
        (folder / f"scene-{i:05d}.txt").write_text(caption)


def run_rollout_bench(
    source: Path,
    target: Path,
    work: Path,
    *,
    images: int = IMAGES,
    clients: int = CLIENTS,
    baseline_s: float = BASELINE_S,
) -> dict[str, Any]:
    folder = work / "src" / "scenes"
    _write_inputs(folder, images)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPSEARCH_")}
    env |= {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT), "CLIPSEARCH_GRPC_PORT": "0"}
    serve = ["serve", "--port", str(port), "--data-dir", str(work / "data")]
    serve += ["--bundle", str(source), "--allow-root", str(work / "src")]
    log = work / "gateway.log"
    with process(serve, env, log) as gateway, httpx.Client(base_url=url, timeout=60) as http:
        wait_gateway_ready(url, gateway, log)
        job_id = http.post("/v1/ingest", json={"source": {"directory": str(folder)}}).json()
        job_id = job_id["job_id"]
        job: dict[str, Any] = {}

        def ingested() -> bool:
            job.update(http.get(f"/v1/jobs/{job_id}").json())
            return job["state"] not in ("queued", "running")

        wait("ingest", ingested, ROLLOUT_TIMEOUT_S, poll_s=0.2)
        if (job["state"], job["done"]) != ("completed", images):
            raise AssertionError(f"ingest did not complete: {job}")

        # The first fused search measures the bundle's score nulls: not part of the figures.
        http.post("/v1/search", json={"text": QUERIES[0]}, timeout=300)
        load = _Searches(url, clients)
        try:
            t0 = time.monotonic()
            time.sleep(baseline_s)
            started = time.monotonic()
            response = http.post(
                "/v1/admin/reindex", json={"bundle": str(target), "promote": "manual"}
            )
            if response.status_code != 202:
                raise AssertionError(f"rollout refused: {response.status_code} {response.text}")
            rid = response.json()["id"]
            phases: dict[str, float] = {}
            record: dict[str, Any] = {}

            def built() -> bool:
                record.update(http.get(f"/v1/admin/reindex/{rid}").json())
                phase = record.get("phase")
                if phase and phase not in phases:
                    phases[phase] = time.monotonic()
                if record["state"] in ("failed", "cancelled"):
                    raise AssertionError(f"the rollout ended: {record}")
                return record["state"] == "ready"

            wait("rollout ready", built, ROLLOUT_TIMEOUT_S, poll_s=0.02)
            ready_at = time.monotonic()
            promoting = time.monotonic()
            promoted = http.post(f"/v1/admin/reindex/{rid}/promote")
            if promoted.status_code not in (200, 202):
                raise AssertionError(f"promote refused: {promoted.status_code} {promoted.text}")

            def completed() -> bool:
                record.update(http.get(f"/v1/admin/reindex/{rid}").json())
                return record["state"] == "completed"

            wait("rollout promoted", completed, 120, poll_s=0.02)
            promoted_at = time.monotonic()
            time.sleep(1.0)
        finally:
            load.stop()
        model_after = http.post("/v1/search", json={"text": "a red circle"}).json().get("model")
        collection = http.get("/v1/collections/media").json()

    idle = load.latencies(t0, started)
    during = load.latencies(started, ready_at)
    # Each phase seen, until the next one seen (a phase shorter than a poll is not seen).
    marks = [(phases[p], p) for p in PHASES if p in phases] + [(ready_at, "ready")]
    spans = {p: round(marks[i + 1][0] - t, 3) for i, (t, p) in enumerate(marks[:-1])}
    rebuild_s = spans.get("rebuild", 0.0)
    comparison = record.get("comparison") or {}
    result: dict[str, Any] = {
        "machine": machine(),
        "from": load_bundle(source, verify=False).manifest.ref,
        "to": load_bundle(target, verify=False).manifest.ref,
        "images": images,
        "captioned": True,
        "clients": clients,
        "points": record.get("points"),
        "rebuilt": record.get("rebuilt"),
        "copied": record.get("copied"),
        "missing": record.get("missing"),
        "queued_s": round(marks[0][0] - started, 3),
        "phase_s": spans,
        "build_and_compare_s": round(ready_at - started, 3),
        "promote_s": round(promoted_at - promoting, 3),
        "points_per_s": round((record.get("rebuilt") or 0) / rebuild_s, 1) if rebuild_s else None,
        "compare_sampled_queries": comparison.get("sampled_queries"),
        "search_idle_p50_ms": round(percentile(idle, 50) * 1000, 2),
        "search_idle_p99_ms": round(percentile(idle, 99) * 1000, 2),
        "search_during_p50_ms": round(percentile(during, 50) * 1000, 2),
        "search_during_p99_ms": round(percentile(during, 99) * 1000, 2),
        "searches_idle": len(idle),
        "searches_during": len(during),
        "failed_searches": sum(status != 200 for _, _, status in load.calls),
        "model_after_promote": model_after,
        "current_after_promote": collection.get("current"),
    }
    idle_p50 = result["search_idle_p50_ms"]
    result["search_p50_ratio"] = (
        round(result["search_during_p50_ms"] / idle_p50, 2) if idle_p50 else None
    )
    result["ok"] = (
        result["failed_searches"] == 0
        and record["state"] == "completed"
        and result["points"] == images
        and model_after == result["to"]
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", default=None, help="bundle folder (tiny)")
    parser.add_argument("--to", dest="target", default=None, help="bundle folder (tiny-narrow)")
    parser.add_argument("--images", type=int, default=IMAGES)
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--baseline", type=float, default=BASELINE_S, help="idle search seconds")
    parser.add_argument("--out", type=Path, default=Path("bench-results/rollout.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="clipsearch-bench-rollout-") as tmp:
        work = Path(tmp)
        if args.source is None:
            from models.tiny import build_tiny_bundle

            source = build_tiny_bundle(work / "tiny", seed=0)
        else:
            source = Path(args.source)
        if args.target is None:
            # The tests' second tiny bundle (32 dims), built the same way here.
            sys.path.insert(0, str(REPO_ROOT))
            from models.tiny import build_tiny_narrow_bundle

            target = build_tiny_narrow_bundle(work / "narrow")
        else:
            target = Path(args.target)
        result = run_rollout_bench(
            source, target, work, images=args.images, clients=args.clients, baseline_s=args.baseline
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
