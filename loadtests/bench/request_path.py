"""The HTTP request path of ``POST /v1/embeddings``, A/B in one run: each named checkout serves
(``clipsearch serve`` on its own loopback port, same bundle), and closed-loop clients take turns
on them, round after round, so that a shared, noisy machine slows every variant alike.

    python -m loadtests.bench.request_path --variant before=/path/to/old/checkout \
        --variant after=. --clients 16 --rounds 3 --seconds 10

Each client is one keep-alive HTTP/1.1 connection written with asyncio streams (no HTTP library:
the client must cost the shared CPUs as little as it can) sending one sentence per request, the
next as soon as the answer is in. The report gives each variant's requests/s, p50 and p99 per
round and their medians, and each variant's ratio to the first one's medians.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.procs import stop

ROOT = Path(__file__).resolve().parents[2]
SENTENCES = ROOT / "loadtests" / "data" / "sentences.txt"


@dataclass
class Round:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(name: str, checkout: Path, bundle: Path, work: Path) -> Iterator[tuple[int, str]]:
    """``clipsearch serve`` from ``checkout`` (its packages first on the path); yields its port
    and its default model (the ``model`` of the requests)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPSEARCH_")}
    env.update(HF_HUB_OFFLINE="1", CLIPSEARCH_GRPC_PORT="0", PYTHONPATH=str(checkout))
    log = (work / f"{name}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "clipsearch", "serve", "--port", str(port),
         "--data-dir", str(work / f"data-{name}"), "--bundle", str(bundle)],
        cwd=checkout, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited: see {log.name}")
            try:
                url = f"http://127.0.0.1:{port}/health/ready"
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if answer.status == 200:
                        models = json.loads(answer.read())["models"]
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{name} not ready in 180 s: see {log.name}")
            time.sleep(0.5)
        yield port, str(next((m for m in models if m["default"]), models[0])["bundle"])
    finally:
        stop(proc)
        log.close()


def _request(port: int, model: str, sentence: str, encoding: str) -> bytes:
    body = json.dumps({"model": model, "input": sentence, "encoding_format": encoding}).encode()
    head = (
        f"POST /v1/embeddings HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    writer.write(request)
    status_line = await reader.readline()
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(status_line.split()[1])


async def _round(
    server: tuple[int, str], sentences: list[str], clients: int, seconds: float, encoding: str
) -> Round:
    port, model = server
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def client(index: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        n = index
        try:
            while time.perf_counter() < stop:
                request = _request(port, model, sentences[n % len(sentences)], encoding)
                n += clients
                started = time.perf_counter()
                status = await _exchange(reader, writer, request)
                latencies.append(time.perf_counter() - started)
                errors += status != 200
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - began
    ms = sorted(x * 1000 for x in latencies)
    return Round(
        requests_per_s=len(ms) / elapsed,
        p50_ms=ms[len(ms) // 2],
        p99_ms=ms[min(len(ms) - 1, int(len(ms) * 0.99))],
        errors=errors,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--variant", action="append", default=[], metavar="NAME=CHECKOUT",
        help="a checkout to serve from (repeat; the first is the reference); default: this one",
    )  # fmt: skip
    parser.add_argument("--bundle", type=Path, default=ROOT / "models" / "zoo" / "photo")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--encoding", choices=["float", "base64"], default="float")
    parser.add_argument("--out", type=Path, default=None, help="write the report (JSON) here")
    args = parser.parse_args(argv)
    variants = [v.split("=", 1) for v in args.variant] or [["current", str(ROOT)]]
    sentences = [s for s in SENTENCES.read_text().splitlines() if s.strip()]
    results: dict[str, list[Round]] = {name: [] for name, _ in variants}
    with tempfile.TemporaryDirectory(prefix="request-path-") as tmp, contextlib.ExitStack() as st:
        ports = {
            name: st.enter_context(
                serving(name, Path(path).resolve(), args.bundle.resolve(), Path(tmp))
            )
            for name, path in variants
        }
        for name, server in ports.items():
            warm = asyncio.run(_round(server, sentences, args.clients, args.warmup, args.encoding))
            if warm.errors:
                raise SystemExit(f"{name} answered {warm.errors} requests with an error")
        for index in range(args.rounds):
            # Alternate the order too: neither variant always runs right after the other.
            order = list(ports.items()) if index % 2 == 0 else list(ports.items())[::-1]
            for name, port in order:
                result = asyncio.run(
                    _round(port, sentences, args.clients, args.seconds, args.encoding)
                )
                results[name].append(result)
                print(
                    f"round {index} {name:>10}: {result.requests_per_s:7.1f} req/s  "
                    f"p50 {result.p50_ms:6.1f} ms  p99 {result.p99_ms:6.1f} ms  "
                    f"errors {result.errors}",
                    flush=True,
                )
    report: dict[str, Any] = {"clients": args.clients, "seconds": args.seconds,
                              "encoding": args.encoding, "variants": {}}  # fmt: skip
    reference: dict[str, float] | None = None
    for name, rounds in results.items():
        medians = {
            key: statistics.median(getattr(r, key) for r in rounds)
            for key in ("requests_per_s", "p50_ms", "p99_ms")
        }
        reference = reference or medians
        ratios = {key: medians[key] / reference[key] for key in medians}
        report["variants"][name] = {
            "rounds": [vars(r) for r in rounds], "median": medians, "vs_first": ratios,
        }  # fmt: skip
        print(
            f"{name:>10} median: {medians['requests_per_s']:7.1f} req/s  "
            f"p50 {medians['p50_ms']:6.1f} ms  p99 {medians['p99_ms']:6.1f} ms  "
            f"(x first: {ratios['requests_per_s']:.2f} req/s, {ratios['p50_ms']:.2f} p50, "
            f"{ratios['p99_ms']:.2f} p99)"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    failed = sum(r.errors for rounds in results.values() for r in rounds)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
