"""``make loadtest PROFILE=name``: run a locust profile (``loadtests/profiles.py``) headless against
a gateway, and keep locust's HTML report and CSVs under ``bench-results/loadtest/<profile>/``.

Without ``--host`` it starts the embedded service with the demo data first (as ``make run``:
``clipsearch models demo-data`` into a fresh data dir, then ``clipsearch demo`` on a free loopback
port), waits for ``/health/ready`` and for the demo's ingest job, runs the profile, and stops the
service. With ``--host URL`` it only runs locust against that gateway (a deployed cluster), with
``$CLIPSEARCH_API_KEY`` as its key.

Locust runs as a subprocess through its CLI: gevent's monkey-patching crashes a process that
imported ssl, httpx or redis first, so nothing here imports locust.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests.procs import stop
from loadtests.profiles import PROFILES, Profile

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile.py"
RESULTS = Path("bench-results") / "loadtest"
CSV_PREFIX = "locust"


@dataclass
class LocustRun:
    returncode: int
    out: Path
    stats: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def total(self) -> dict[str, float]:
        return self.stats.get("Aggregated", {})


def locust_binary() -> str:
    """The ``locust`` next to this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("locust")
    if beside.is_file():
        return str(beside)
    found = shutil.which("locust")
    if found is None:
        raise SystemExit("locust is not installed: pip install -e '.[dev]' (or `make venv`)")
    return found


def locust_command(
    profile: Profile, host: str, out: Path, *, run_time: str | None = None, users: int | None = None
) -> list[str]:
    return [
        locust_binary(),
        "--locustfile", str(LOCUSTFILE),
        "--headless",
        "--host", host,
        "--users", str(users or profile.users),
        "--spawn-rate", str(profile.spawn_rate),
        "--run-time", run_time or profile.run_time,
        "--stop-timeout", "30",
        "--csv", str(out / CSV_PREFIX),
        "--html", str(out / "report.html"),
        "--only-summary",
        *profile.user_classes,
    ]  # fmt: skip


def summarise(out: Path) -> dict[str, dict[str, float]]:
    """Locust's ``<out>/locust_stats.csv`` by row name: requests, failures, requests/s, latency
    percentiles in ms (locust's own rounding)."""
    rows: dict[str, dict[str, float]] = {}
    path = out / f"{CSV_PREFIX}_stats.csv"
    if not path.is_file():
        return rows
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            rows[row["Name"]] = {
                "requests": int(row["Request Count"]),
                "failures": int(row["Failure Count"]),
                "requests_per_s": float(row["Requests/s"]),
                "avg_ms": float(row["Average Response Time"]),
                "p50_ms": float(row["50%"] if row["50%"] != "N/A" else "nan"),
                "p99_ms": float(row["99%"] if row["99%"] != "N/A" else "nan"),
            }
    return rows


def run_locust(
    profile: Profile,
    host: str,
    out: Path,
    *,
    api_key: str | None = None,
    env: dict[str, str] | None = None,
    run_time: str | None = None,
    users: int | None = None,
) -> LocustRun:
    """Run ``profile`` against ``host``; locust's output goes to ``<out>/locust.log``."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(f"{CSV_PREFIX}_*.csv"):
        old.unlink()
    full_env = {**os.environ, **(env or {})}
    full_env.pop("CLIPSEARCH_API_KEY", None)
    if api_key:
        full_env["CLIPSEARCH_API_KEY"] = api_key
    command = locust_command(profile, host, out, run_time=run_time, users=users)
    with (out / "locust.log").open("w", encoding="utf-8") as log:
        done = subprocess.run(
            command, env=full_env, stdout=log, stderr=subprocess.STDOUT, check=False
        )
    return LocustRun(done.returncode, out, summarise(out))


def gc_pauses(url: str, api_key: str | None) -> dict[str, dict[str, float]] | None:
    """The service's garbage-collector pauses so far (``clipsearch_gc_pause_seconds`` on its
    /metrics): per generation, the cumulative count at each bucket bound (``+Inf``: all). None
    where /metrics cannot be read or has no such histogram."""
    from prometheus_client.parser import text_string_to_metric_families

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        request = urllib.request.Request(f"{url}/metrics", headers=headers)
        with urllib.request.urlopen(request, timeout=5) as response:
            text = response.read().decode("utf-8")
    except (OSError, urllib.error.HTTPError):
        return None
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "clipsearch_gc_pause_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                by_bound = found.setdefault(sample.labels["generation"], {})
                by_bound[sample.labels["le"]] = sample.value
    return found or None


def gc_during(
    before: dict[str, dict[str, float]] | None, after: dict[str, dict[str, float]] | None
) -> dict[str, dict[str, float | None]]:
    """Per generation: the collections between two :func:`gc_pauses` readings and the bucket
    bound (ms) that held the longest of them (None: above the highest bound, or none ran)."""
    if after is None:
        return {}
    during: dict[str, dict[str, float | None]] = {}
    for generation, buckets in sorted(after.items()):
        start = (before or {}).get(generation, {})
        delta = {le: count - start.get(le, 0.0) for le, count in buckets.items()}
        total = delta.get("+Inf", 0.0)
        bounds = sorted((float(le), le) for le in delta if le != "+Inf")
        longest = next((bound for bound, le in bounds if delta[le] >= total), None)
        during[generation] = {
            "collections": total,
            "longest_at_most_ms": None if not total or longest is None else longest * 1e3,
        }
    return during


def gc_line(during: dict[str, dict[str, float | None]]) -> str:
    if not during:
        return "garbage collector: no figures on /metrics"
    parts = []
    for generation, figures in during.items():
        longest = figures["longest_at_most_ms"]
        count = int(figures["collections"] or 0)
        part = f"generation {generation}: {count}"
        if count and longest:
            part += f", each ≤ {longest:g} ms"
        elif count:
            part += ", the longest above the highest bucket"
        parts.append(part)
    return "garbage collections during the run: " + "; ".join(parts)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get_json(url: str, api_key: str | None, timeout: float = 5.0) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None


def wait_ready(
    url: str,
    proc: subprocess.Popen[bytes],
    log: Path,
    timeout_s: float,
    *,
    path: str = "/health/ready",
) -> None:
    """Until ``path`` answers 200; the service's log in the error if it exits first."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the service exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            if _get_json(f"{url}{path}", None, timeout=2)[0] == 200:
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"the service was not ready in {timeout_s:.0f} s; log: {log}")
        time.sleep(0.2)


def wait_jobs_idle(url: str, api_key: str | None, timeout_s: float) -> None:
    """Until no ingest job is queued or running (the demo's is indexing the demo data)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, body = _get_json(f"{url}/v1/jobs?limit=100", api_key)
        if status != 200:
            raise SystemExit(f"GET /v1/jobs answered {status}")
        if not any(job["state"] in ("queued", "running") for job in body["jobs"]):
            return
        time.sleep(0.5)
    raise SystemExit(f"the demo's ingest job did not finish in {timeout_s:.0f} s")


def service_env(api_key: str | None) -> dict[str, str]:
    """This environment without a developer's own CLIPSEARCH_* settings; ``api_key`` (if any)
    as the service's one key, with the search and ingest scopes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPSEARCH_")}
    env.update(HF_HUB_OFFLINE="1", CLIPSEARCH_GRPC_PORT="0", PYTHONPATH=str(HERE.parent))
    if api_key:
        env["CLIPSEARCH_AUTH__API_KEYS"] = f"{api_key}:search+ingest"
    return env


def rss_mb(pid: int) -> float | None:
    """Resident memory of process ``pid`` in MB (``VmRSS``), or None once it has gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class RssSampler:
    """Samples a process's RSS every ``every_s`` in a thread, for the soak profile's memory target
    (issue 16: growth <= 5 % over a 10-minute mixed run). Growth is measured from the first sample
    after ``warmup_s`` (allocators, caches and the batcher's buffers fill in the first minute) to
    the last."""

    def __init__(self, pid: int, every_s: float = 1.0, warmup_s: float = 60.0) -> None:
        self.pid, self.every_s, self.warmup_s = pid, every_s, warmup_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = rss_mb(self.pid)
            if rss is None:
                return
            self.samples.append((round(time.monotonic() - self._t0, 1), round(rss, 1)))
            self._stop.wait(self.every_s)

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {"samples": 0}
        warm = [rss for t, rss in self.samples if t >= self.warmup_s] or [self.samples[-1][1]]
        start, end = warm[0], self.samples[-1][1]
        return {
            "samples": len(self.samples),
            "first_mb": self.samples[0][1],
            "after_warmup_mb": start,
            "end_mb": end,
            "max_mb": max(rss for _, rss in self.samples),
            "warmup_s": self.warmup_s,
            "growth_after_warmup": round(end / start - 1, 4),
        }


@contextlib.contextmanager
def embedded_demo(
    data_dir: Path,
    *,
    api_key: str | None = None,
    scenes: int = 60,
    ready_s: float = 300,
    started: list[int] | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[str]:
    """``clipsearch demo`` (the default bundle) on a free loopback port over fresh demo data in
    ``data_dir``, its demo ingest finished; yields its URL, stops it on exit. The service's pid is
    appended to ``started`` (when given) as soon as it runs; ``extra_env`` is added to its
    environment (settings to compare)."""
    env = {**service_env(api_key), **(extra_env or {})}
    made = subprocess.run(
        [sys.executable, "-m", "clipsearch", "models", "demo-data", "--data-dir", str(data_dir),
         "--scenes", str(scenes)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if made.returncode != 0:
        raise SystemExit(f"clipsearch models demo-data failed:\n{made.stdout}\n{made.stderr}")
    port = free_port()
    log_path = data_dir / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "clipsearch", "demo", "--port", str(port),
             "--data-dir", str(data_dir)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        if started is not None:
            started.append(proc.pid)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, proc, log_path, ready_s)
            wait_jobs_idle(url, api_key, ready_s)
            yield url
        finally:
            stop(proc)


def report_line(run: LocustRun) -> str:
    total = run.total
    if not total:
        return f"locust exited {run.returncode} and wrote no stats (see {run.out / 'locust.log'})"
    return (
        f"{total['requests']:.0f} requests, {total['failures']:.0f} failed, "
        f"{total['requests_per_s']:.1f}/s, p50 {total['p50_ms']:.0f} ms, "
        f"p99 {total['p99_ms']:.0f} ms; report: {run.out / 'report.html'}"
    )


def memory_line(summary: dict[str, Any]) -> str:
    if not summary.get("samples"):
        return "service RSS: no samples"
    return (
        f"service RSS: {summary['after_warmup_mb']:.0f} MB after {summary['warmup_s']:.0f} s, "
        f"{summary['end_mb']:.0f} MB at the end ({summary['growth_after_warmup']:+.1%}), "
        f"max {summary['max_mb']:.0f} MB"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.loadtest", description=__doc__)
    parser.add_argument("profile", choices=sorted(PROFILES))
    parser.add_argument("--host", help="a running gateway (default: start the embedded demo)")
    parser.add_argument("--out", type=Path, help="default bench-results/loadtest/<profile>")
    parser.add_argument("--run-time", help="override the profile's (locust's format: 30s, 5m)")
    parser.add_argument("--users", type=int, help="override the profile's user count")
    parser.add_argument("--scenes", type=int, default=60, help="demo scenes (embedded only)")
    parser.add_argument(
        "--rss-warmup", type=float, default=60.0,
        help="seconds before the service's RSS growth is measured from (embedded only)",
    )  # fmt: skip
    parser.add_argument(
        "--service-env", action="append", default=[], metavar="NAME=VALUE",
        help="a setting for the embedded service (repeatable), e.g. "
        "CLIPSEARCH_STARTUP__GC_FREEZE=false",
    )  # fmt: skip
    args = parser.parse_args(argv)
    extra_env = {}
    for item in args.service_env:
        name, eq, value = item.partition("=")
        if not eq or not name:
            parser.error(f"--service-env takes NAME=VALUE, not {item!r}")
        extra_env[name] = value
    profile = PROFILES[args.profile]
    out = (args.out or RESULTS / profile.name).resolve()
    api_key = os.environ.get("CLIPSEARCH_API_KEY") or None
    if args.host:
        host = args.host.rstrip("/")
        before = gc_pauses(host, api_key)
        run = run_locust(
            profile, host, out, api_key=api_key, run_time=args.run_time, users=args.users
        )
        during = gc_during(before, gc_pauses(host, api_key))
    else:
        with tempfile.TemporaryDirectory(prefix="clipsearch-loadtest-") as tmp:
            data = Path(tmp) / "data"
            pids: list[int] = []
            with embedded_demo(
                data, api_key=api_key, scenes=args.scenes, started=pids, extra_env=extra_env
            ) as url:
                print(f"{profile.name}: {profile.about}\nservice: {url} (demo data in {data})")
                images = {"LOADTEST_IMAGES": str(data / "demo")}
                before = gc_pauses(url, api_key)
                with RssSampler(pids[0], warmup_s=args.rss_warmup) as rss:
                    run = run_locust(
                        profile, url, out, api_key=api_key, env=images, run_time=args.run_time,
                        users=args.users,
                    )  # fmt: skip
                during = gc_during(before, gc_pauses(url, api_key))
            shutil.copy(data / "serve.log", out / "serve.log")
            summary = rss.summary()
            memory = {"summary": summary, "samples": rss.samples}
            (out / "memory.json").write_text(json.dumps(memory, indent=1) + "\n")
            print(memory_line(summary))
    (out / "gc.json").write_text(json.dumps(during, indent=1) + "\n")
    print(gc_line(during))
    print(report_line(run))
    if run.returncode != 0:
        print(f"locust exited {run.returncode}: see {out / 'locust.log'}", file=sys.stderr)
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
