"""``make loadtest-peers``: clipsearch's ``/v1/embeddings`` beside infinity-emb's, in one run.

Both servers start (infinity from ``.venv-peers``, made by ``loadtests/peers/setup.sh``; clipsearch
``serve`` on the default bundle), both answer the same sentences once so that their embeddings can
be compared, then the locust ``embeddings`` profile (16 closed-loop users, one sentence per
request) runs against each in turn, ``--rounds`` times, alternating which goes first. With both
stopped, each server's own ONNX Runtime ceiling is measured on the model file it serves (batch 32,
the same sentences, ``loadtests/peers/ceiling.py`` in that server's own venv), and the report gives
throughput, p50/p99 and served ÷ ceiling: ``bench-results/peers/report.md`` and ``report.json``.

infinity's known traps, handled here: the ONNX export is optimum's ``--library-name
transformers`` (setup.sh); it starts from inside the model folder with ``--model-id .``; it
mean-pools only when told (``--pooling-method mean``; otherwise CLS, silently); ``DO_NOT_TRACK=1``
keeps its telemetry off; and its optimised ONNX file is cached under ``$HF_HOME`` by the model id,
so it gets an ``HF_HOME`` of its own here (``.`` would otherwise collide with any other model).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from loadtests.loadtest import LocustRun, free_port, run_locust, service_env, wait_ready
from loadtests.procs import stop
from loadtests.profiles import PROFILES

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SENTENCES = ROOT / "loadtests" / "data" / "sentences.txt"
PEERS_VENV = ROOT / ".venv-peers"
MODEL_DIR = ROOT / ".cache" / "clipsearch" / "peers" / "all-MiniLM-L6-v2"
INFINITY_MODEL = "all-MiniLM-L6-v2"
OUT = ROOT / "bench-results" / "peers"
EMBED_ROW = "/v1/embeddings [1]"
TARGETS = {"vs_infinity": 1.5, "vs_ceiling": 0.6}


def _post_json(url: str, body: dict[str, Any], timeout: float = 60.0) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def _stop(proc: subprocess.Popen[bytes]) -> None:
    stop(proc)


@contextmanager
def infinity(out: Path, hf_home: Path) -> Iterator[str]:
    """infinity-emb v2 on a free loopback port, optimum engine, mean pooling; yields its URL."""
    port = free_port()
    env = {
        **os.environ,
        "DO_NOT_TRACK": "1",
        "INFINITY_ANONYMOUS_USAGE_STATS": "0",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(hf_home),
    }
    command = [
        str(PEERS_VENV / "bin" / "infinity_emb"), "v2",
        "--model-id", ".",
        "--served-model-name", INFINITY_MODEL,
        "--engine", "optimum",
        "--device", "cpu",
        "--pooling-method", "mean",
        "--batch-size", "32",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--url-prefix", "/v1",
    ]  # fmt: skip
    log_path = out / "infinity.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, cwd=MODEL_DIR, env=env, stdout=log, stderr=log)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, proc, log_path, 600, path="/health")
            yield url
        finally:
            _stop(proc)


@contextmanager
def clipsearch(out: Path, data: Path, bundle: Path) -> Iterator[str]:
    """``clipsearch serve`` (embedded) on a free loopback port; yields its URL."""
    port = free_port()
    log_path = out / "clipsearch.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "clipsearch", "serve", "--port", str(port),
             "--data-dir", str(data), "--bundle", str(bundle)],
            env=service_env(None), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, proc, log_path, 300)
            yield url
        finally:
            _stop(proc)


def _ready_model(url: str) -> str:
    with urllib.request.urlopen(f"{url}/health/ready", timeout=10) as response:
        models = json.loads(response.read())["models"]
    return str(next((m for m in models if m["default"]), models[0])["bundle"])


def agreement(infinity_url: str, clipsearch_url: str, model: str) -> dict[str, Any]:
    """Both servers embed the same sentences: infinity's MiniLM against clipsearch's description
    space (MiniLM, mean-pooled). A cosine near 1 says infinity mean-pools as it was told."""
    sentences = SENTENCES.read_text(encoding="utf-8").splitlines()[:8]
    name = model.split("@")[0]

    def vectors(url: str, model: str) -> list[list[float]]:
        answer = _post_json(f"{url}/v1/embeddings", {"model": model, "input": sentences})
        return [d["embedding"] for d in sorted(answer["data"], key=lambda d: d["index"])]

    theirs = vectors(infinity_url, INFINITY_MODEL)
    ours = vectors(clipsearch_url, f"{name}/description")
    cosines = []
    for a, b in zip(theirs, ours, strict=True):
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        cosines.append(dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b)))
    return {"sentences": len(sentences), "min_cosine": min(cosines), "dims": len(theirs[0])}


def ceiling(
    python: Path, model: Path, tokenizer: Path, seconds: float, *, spin: bool
) -> dict[str, Any]:
    done = subprocess.run(
        [str(python), str(HERE / "ceiling.py"), str(model), str(tokenizer), str(SENTENCES),
         "--batch", "32", "--seconds", str(seconds), *([] if spin else ["--no-spin"])],
        capture_output=True, text=True, check=False, cwd=ROOT,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"ceiling of {model} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def infinity_model_file(hf_home: Path) -> Path:
    """The file infinity serves: the optimised copy it wrote under $HF_HOME, else the export."""
    optimised = sorted(hf_home.rglob("*_optimized.onnx"))
    return optimised[-1] if optimised else MODEL_DIR / "model.onnx"


def _summary(runs: list[LocustRun], ceilings: list[float]) -> dict[str, Any]:
    """The rounds' median (and range); served ÷ ceiling pairs each run with the ceiling measured
    just before it, under the same load from the rest of the machine."""
    rows = [r.stats.get(EMBED_ROW, {}) for r in runs]
    per_s = [row.get("requests_per_s", 0.0) for row in rows]
    p99 = [row.get("p99_ms", math.nan) for row in rows]
    ratios = [served / top for served, top in zip(per_s, ceilings, strict=True)]
    return {
        "embeddings_per_s": statistics.median(per_s),
        "embeddings_per_s_range": [min(per_s), max(per_s)],
        "p50_ms": statistics.median(row.get("p50_ms", math.nan) for row in rows),
        "p99_ms": statistics.median(p99),
        "p99_ms_range": [min(p99), max(p99)],
        "requests": sum(int(row.get("requests", 0)) for row in rows),
        "failures": sum(int(row.get("failures", 0)) for row in rows),
        "ceiling_per_s": statistics.median(ceilings),
        "ceiling_per_s_range": [min(ceilings), max(ceilings)],
        "served_over_ceiling": statistics.median(ratios),
        "served_over_ceiling_range": [min(ratios), max(ratios)],
        "runs": [str(r.out) for r in runs],
    }


def markdown(report: dict[str, Any]) -> str:
    s = report["servers"]
    lines = [
        "# clipsearch beside infinity-emb: `/v1/embeddings`",
        "",
        f"{report['users']} closed-loop locust users, one sentence per request "
        f"({report['run_time']} per run, {report['rounds']} round(s), alternating order; median "
        f"of the rounds, range in brackets); ceiling: ONNX Runtime in-process, batch 32, the same "
        f"{report['sentences']} sentences, on each server's own model file. Machine: "
        f"{report['machine']['cpus']} CPUs, load average {report['machine']['load_before']} before "
        f"and {report['machine']['load_after']} after (the machine is shared).",
        "",
        "| server | embeddings/s | p50 | p99 | own ORT ceiling (batch 32) | served ÷ ceiling |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in (
        ("infinity", f"infinity-emb {report['infinity_version']}, optimum engine, "
                     "all-MiniLM-L6-v2"),
        ("clipsearch", f"clipsearch `/v1/embeddings`, bundle {report['clipsearch_model']}"),
    ):  # fmt: skip
        row = s[key]
        lo, hi = row["embeddings_per_s_range"]
        lines.append(
            f"| {label} | {row['embeddings_per_s']:.0f} [{lo:.0f}-{hi:.0f}] | "
            f"{row['p50_ms']:.0f} ms | {row['p99_ms']:.0f} ms | {row['ceiling_per_s']:.0f}/s | "
            f"{row['served_over_ceiling']:.2f} |"
        )
    t = report["targets"]
    lines += [
        "",
        f"- clipsearch ÷ infinity throughput: **{t['vs_infinity']:.2f}** "
        f"(target ≥ {TARGETS['vs_infinity']}: {'met' if t['vs_infinity_met'] else 'missed'})",
        f"- clipsearch served ÷ its ceiling: **{t['vs_ceiling']:.2f}** "
        f"(target ≥ {TARGETS['vs_ceiling']}: {'met' if t['vs_ceiling_met'] else 'missed'})",
        f"- clipsearch p99 ≤ infinity's: {'met' if t['p99_met'] else 'missed'}",
        f"- same embeddings: infinity vs clipsearch's description space, min cosine "
        f"{report['agreement']['min_cosine']:.4f} over {report['agreement']['sentences']} "
        "sentences (mean pooling in effect)",
        "",
        "Each run, in order (1-minute load average as its ceiling began):",
        "",
        "| round | server | load | ceiling/s | served/s | p50 | p99 | served ÷ ceiling |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {r['round']} | {r['server']} | {r['load_1m']} | {r['ceiling_per_s']:.0f} | "
            f"{r['embeddings_per_s']:.0f} | {r['p50_ms']:.0f} ms | {r['p99_ms']:.0f} ms | "
            f"{r['embeddings_per_s'] / r['ceiling_per_s']:.2f} |"
            for r in report["runs"]
        ),
        "",
        f"Command: `{report['command']}`",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.peers.compare", description=__doc__)
    parser.add_argument("--run-time", default="30s", help="each locust run (locust's format)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ceiling-seconds", type=float, default=10.0)
    parser.add_argument("--bundle", type=Path, default=ROOT / "models" / "zoo" / "photo")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if (
        not (PEERS_VENV / "bin" / "infinity_emb").is_file()
        or not (MODEL_DIR / ".exported").is_file()
    ):
        raise SystemExit("no infinity venv or model: run loadtests/peers/setup.sh first")
    profile = PROFILES["embeddings"]
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    runs: dict[str, list[LocustRun]] = {"infinity": [], "clipsearch": []}
    ceilings: dict[str, list[dict[str, Any]]] = {"infinity": [], "clipsearch": []}
    rounds: list[dict[str, Any]] = []
    hf_home = MODEL_DIR.parent / "hf-home"  # setup.sh empties it when it exports anew
    with tempfile.TemporaryDirectory(prefix="clipsearch-peers-") as tmp, ExitStack() as stack:
        urls = {
            "infinity": stack.enter_context(infinity(out, hf_home)),
            "clipsearch": stack.enter_context(clipsearch(out, Path(tmp) / "data", args.bundle)),
        }
        model = _ready_model(urls["clipsearch"])
        models = {"infinity": INFINITY_MODEL, "clipsearch": model}
        # Each server's own model file and session settings: infinity serves the optimised copy
        # it wrote (optimum's ORT defaults: threads spin); clipsearch its text tower (no spin).
        own = {
            "infinity": (PEERS_VENV / "bin" / "python", infinity_model_file(hf_home),
                         MODEL_DIR / "tokenizer.json", True),
            "clipsearch": (Path(sys.executable), args.bundle / "text.onnx",
                           args.bundle / "tokenizer.json", False),
        }  # fmt: skip
        agree = agreement(urls["infinity"], urls["clipsearch"], model)
        print(f"agreement: {agree}", flush=True)
        order = ["infinity", "clipsearch"]
        for server in order:  # warm-up: every padded shape and both servers' thread pools
            run_locust(profile, urls[server], out / f"{server}-warmup",
                       env={"LOADTEST_MODEL": models[server]}, run_time="5s")  # fmt: skip
        for round_ in range(args.rounds):
            for server in order if round_ % 2 == 0 else order[::-1]:
                python, file, tokenizer, spin = own[server]
                load = os.getloadavg()[0]
                top = ceiling(python, file, tokenizer, args.ceiling_seconds, spin=spin)
                ceilings[server].append(top)
                run = run_locust(
                    profile, urls[server], out / f"{server}-{round_}",
                    env={"LOADTEST_MODEL": models[server]}, run_time=args.run_time,
                )  # fmt: skip
                got = run.stats.get(EMBED_ROW, {})
                print(f"{server} round {round_}: ceiling {top['items_per_s']:.0f}/s, "
                      f"served {got.get('requests_per_s', 0):.0f}/s, p50 {got.get('p50_ms')} ms, "
                      f"p99 {got.get('p99_ms')} ms", flush=True)  # fmt: skip
                if run.returncode != 0:
                    raise SystemExit(f"{server}: locust exited {run.returncode}; see {run.out}")
                runs[server].append(run)
                rounds.append({
                    "round": round_, "server": server, "load_1m": round(load, 1),
                    "ceiling_per_s": top["items_per_s"],
                    "embeddings_per_s": got.get("requests_per_s", 0.0),
                    "p50_ms": got.get("p50_ms"), "p99_ms": got.get("p99_ms"),
                })  # fmt: skip
    load_after = os.getloadavg()
    servers = {k: _summary(runs[k], [c["items_per_s"] for c in ceilings[k]]) for k in runs}
    ours, theirs = servers["clipsearch"], servers["infinity"]
    report = {
        "users": profile.users,
        "run_time": args.run_time,
        "rounds": args.rounds,
        "sentences": len(SENTENCES.read_text(encoding="utf-8").splitlines()),
        "infinity_version": "0.0.78",
        "clipsearch_model": model,
        "servers": servers,
        "ceilings": ceilings,
        "runs": rounds,
        "agreement": agree,
        "targets": {
            "vs_infinity": ours["embeddings_per_s"] / theirs["embeddings_per_s"],
            "vs_infinity_met": ours["embeddings_per_s"]
            >= TARGETS["vs_infinity"] * theirs["embeddings_per_s"],
            "vs_ceiling": ours["served_over_ceiling"],
            "vs_ceiling_met": ours["served_over_ceiling"] >= TARGETS["vs_ceiling"],
            "p99_met": ours["p99_ms"] <= theirs["p99_ms"],
        },
        "machine": {
            "cpus": len(os.sched_getaffinity(0)),
            "platform": platform.platform(),
            "load_before": [round(x, 1) for x in load_before],
            "load_after": [round(x, 1) for x in load_after],
        },
        "command": "make loadtest-peers  # python -m loadtests.peers.compare "
        + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
