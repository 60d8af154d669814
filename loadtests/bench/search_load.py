"""Text search under load over a big collection, against the text tower's own ceiling (issue 16:
``/v1/search`` text queries ≥ 0.6 x the text tower's ONNX Runtime ceiling in queries/s at 16
clients, over a collection of ≥ 20,000 points).

In one run: the embedded demo (``clipsearch demo``, the default bundle) on a free port; N
text-only documents ingested into it as one job per 5,000 (their descriptions made from a fixed
vocabulary, every one different); the text tower's ceiling measured in-process on the bundle's
own ``text.onnx`` (``loadtests/peers/ceiling.py``: batch 32, the peers' sentences, the server's
session settings); then the locust ``search`` profile (16 closed-loop users, text queries in
mixed modes) through its CLI, once the maintenance thread's HNSW index covers the collection
(``--index-wait``: the steady state of a collection this size; 0 measures at once, brute force
until the build swaps in). Writes ``bench-results/search_load.json``. ::

    python -m loadtests.bench.search_load --documents 20000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from loadtests.loadtest import embedded_demo, run_locust, wait_jobs_idle
from loadtests.peers.compare import ceiling
from loadtests.profiles import PROFILES

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "bench-results"
TARGET = 0.6
JOB_DOCS = 5_000
PLACES = ("kitchen", "harbour", "forest", "street", "beach", "office", "garden", "station")
THINGS = (
    "a red bicycle",
    "two dogs",
    "an old car",
    "a blue umbrella",
    "a stack of books",
    "a cup of coffee",
    "a sleeping cat",
    "three lamps",
    "a wooden boat",
    "a green door",
)
TIMES = ("at night", "in the morning", "in the rain", "at noon", "in winter", "at dusk")


def document(i: int) -> dict[str, str]:
    """The i-th document: a scene description, different for every i."""
    place = PLACES[i % len(PLACES)]
    thing = THINGS[(i // len(PLACES)) % len(THINGS)]
    when = TIMES[(i // (len(PLACES) * len(THINGS))) % len(TIMES)]
    return {"id": f"doc-{i}", "description": f"{thing} in a {place} {when}, scene {i}"}


def ingest_documents(url: str, n: int, api_key: str | None, timeout_s: float) -> float:
    """Ingest ``n`` documents, one job per :data:`JOB_DOCS`; seconds until every job ended."""
    headers = {"content-type": "application/json"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    began = time.perf_counter()
    for start in range(0, n, JOB_DOCS):
        lines = [document(i) for i in range(start, min(n, start + JOB_DOCS))]
        body = json.dumps({"source": {"manifest_lines": lines}}).encode()
        request = urllib.request.Request(f"{url}/v1/ingest", body, headers, method="POST")
        with urllib.request.urlopen(request, timeout=60) as answer:
            if answer.status != 202:
                raise SystemExit(f"ingest refused: {answer.status} {answer.read()[:300]!r}")
    wait_jobs_idle(url, api_key, timeout_s)
    return time.perf_counter() - began


def points(url: str) -> int:
    with urllib.request.urlopen(f"{url}/v1/collections/media", timeout=30) as answer:
        found: int = json.loads(answer.read())["points"]
    return found


def index_state(url: str) -> dict[str, Any]:
    """The served version's points and index (``GET /v1/collections/media``): points the index
    covers and whether a build runs (absent where the store manages its index itself)."""
    with urllib.request.urlopen(f"{url}/v1/collections/media", timeout=30) as answer:
        info = json.loads(answer.read())
    current = next(v for v in info["versions"] if v["role"] == "current")
    return {"points": current["points"], **(current.get("index") or {})}


def wait_indexed(url: str, timeout_s: float) -> tuple[float, dict[str, Any]]:
    """Seconds until the maintenance thread's HNSW build covers every point of the served
    version (at most ``timeout_s``), and the index state then."""
    began = time.perf_counter()
    state = index_state(url)
    while (
        "indexed_points" in state
        and (state["building"] or state["indexed_points"] < state["points"])
        and time.perf_counter() - began < timeout_s
    ):
        time.sleep(2.0)
        state = index_state(url)
    return time.perf_counter() - began, state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.bench.search_load", description=__doc__
    )
    parser.add_argument("--documents", type=int, default=20_000)
    parser.add_argument("--run-time", default="60s", help="the locust run (locust's format)")
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--ceiling-seconds", type=float, default=10.0)
    parser.add_argument(
        "--index-wait",
        type=float,
        default=600.0,
        help="seconds to wait for the HNSW index to cover the collection before the run (the "
        "steady state of a collection this size); 0 = measure at once, brute force until the "
        "maintenance thread's build swaps in",
    )
    parser.add_argument(
        "--bundle",
        type=Path,
        default=ROOT / "models" / "zoo" / "photo",
        help="the demo's bundle (its text.onnx is the ceiling's model)",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    api_key = os.environ.get("CLIPSEARCH_API_KEY") or None
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="clipsearch-search-load-") as tmp,
        embedded_demo(Path(tmp) / "data", api_key=api_key) as url,
    ):
        took = ingest_documents(url, args.documents, api_key, timeout_s=3600)
        size = points(url)
        print(f"{args.documents} documents ingested in {took:.0f} s: {size} points", flush=True)
        waited, index = (
            wait_indexed(url, args.index_wait) if args.index_wait else (0.0, index_state(url))
        )
        print(f"index before the run (after {waited:.0f} s): {index}", flush=True)
        top = ceiling(
            Path(sys.executable),
            args.bundle / "text.onnx",
            args.bundle / "tokenizer.json",
            args.ceiling_seconds,
            spin=False,
        )
        run = run_locust(
            PROFILES["search"],
            url,
            out / "search_load",
            api_key=api_key,
            run_time=args.run_time,
            users=args.users,
        )
    total = run.total
    per_s = float(total.get("requests_per_s", 0.0))
    ceiling_per_s = float(top["items_per_s"])
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "load_after": os.getloadavg()},
        "documents": args.documents,
        "points": size,
        "ingest_s": round(took, 1),
        "index_wait_s": round(waited, 1),
        "index_at_start": index,
        "users": args.users,
        "run_time": args.run_time,
        "queries_per_s": round(per_s, 1),
        "p50_ms": total.get("p50_ms"),
        "p99_ms": total.get("p99_ms"),
        "failures": total.get("failures"),
        "per_mode": {name: row for name, row in run.stats.items() if name != "Aggregated"},
        "ceiling": top,
        "served_over_ceiling": round(per_s / ceiling_per_s, 3) if ceiling_per_s else None,
        "target": TARGET,
    }
    result["met"] = bool(result["served_over_ceiling"] and result["served_over_ceiling"] >= TARGET)
    (out / "search_load.json").write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"{per_s:.1f} queries/s over {size} points (p50 {result['p50_ms']} ms, p99 "
        f"{result['p99_ms']} ms, {result['failures']} failed); text tower ceiling "
        f"{ceiling_per_s:.0f}/s; served ÷ ceiling {result['served_over_ceiling']} "
        f"(target ≥ {TARGET}: {'met' if result['met'] else 'missed'})"
    )
    return 0 if run.returncode == 0 else run.returncode


if __name__ == "__main__":
    sys.exit(main())
