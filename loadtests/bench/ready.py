"""``/health/ready`` latency on a real gateway, over a raw socket (issue 19, item 2: readiness
answers from cached state in milliseconds, never by asking the encoder or the store on the
request's path).

A ``clipsearch serve`` process (embedded: in-process encoder, Qdrant Edge) on a temp data dir;
``GET /health/ready`` is written by hand on a plain TCP socket and timed from the first byte sent
to the last byte of the body read, so the figure is the gateway's and not an HTTP client's:

* ``keepalive``: N requests one after another on one connection;
* ``new_connection``: N requests, each on a connection of its own (connect included);
* ``under_search_load``: keep-alive again while ``--clients`` threads ``POST /v1/search``.

Every answer must be 200. ::

    python -m loadtests.bench.ready --bundle tiny       # bench-results/ready.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from loadtests.bench.deployment import REPO_ROOT, free_port
from loadtests.bench.faults import percentile
from loadtests.bench.faults_http import resolve_bundle
from loadtests.bench.late_start import process, wait_gateway_ready
from loadtests.bench.load import machine
from service.core.bundle.manifest import load_bundle

REQUESTS = 2000
CLIENTS = 4
REQUEST = b"GET /health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n"


class ResponseReader:
    """HTTP/1.1 responses (Content-Length framed) read off one socket, one at a time; bytes past
    the end of one response stay for the next."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _more(self, what: str) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"the gateway closed the connection {what}")
        self.buffer += chunk

    def status(self) -> int:
        """The next response's status code, its body consumed."""
        while b"\r\n\r\n" not in self.buffer:
            self._more("before the headers ended")
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        while len(self.buffer) < length:
            self._more("mid-body")
        self.buffer = self.buffer[length:]
        return int(lines[0].split()[1])


def keepalive(port: int, n: int) -> tuple[list[float], list[int]]:
    times, statuses = [], []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = ResponseReader(sock)
        for _ in range(n):
            start = time.perf_counter()
            sock.sendall(REQUEST)
            statuses.append(reader.status())
            times.append(time.perf_counter() - start)
    return times, statuses


def new_connections(port: int, n: int) -> tuple[list[float], list[int]]:
    times, statuses = [], []
    for _ in range(n):
        start = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(REQUEST)
            statuses.append(ResponseReader(sock).status())
        times.append(time.perf_counter() - start)
    return times, statuses


def figures(times: list[float], statuses: list[int]) -> dict[str, Any]:
    return {
        "requests": len(times),
        "p50_ms": round(percentile(times, 50) * 1000, 3),
        "p99_ms": round(percentile(times, 99) * 1000, 3),
        "max_ms": round(max(times, default=0.0) * 1000, 3),
        "statuses": sorted(set(statuses)),
    }


def run_ready_bench(
    bundle: Path, work: Path, *, requests: int = REQUESTS, clients: int = CLIENTS
) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPSEARCH_")}
    env |= {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT), "CLIPSEARCH_GRPC_PORT": "0"}
    serve = [
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(work / "data"),
        "--bundle",
        str(bundle),
    ]
    result: dict[str, Any] = {
        "machine": machine(),
        "bundle": load_bundle(bundle, verify=False).manifest.ref,
    }
    with process(serve, env, work / "gateway.log") as gateway:
        wait_gateway_ready(url, gateway, work / "gateway.log")
        keepalive(port, 100)  # warm
        result["keepalive"] = figures(*keepalive(port, requests))
        result["new_connection"] = figures(*new_connections(port, requests))
        stop = threading.Event()
        searched: list[int] = []  # statuses (0: no answer)
        errors: list[str] = []

        def search() -> None:
            with httpx.Client(base_url=url, timeout=60) as http:
                while not stop.is_set():
                    try:
                        body = {"text": "a red circle", "limit": 10}
                        searched.append(http.post("/v1/search", json=body).status_code)
                    except httpx.HTTPError as exc:
                        searched.append(0)
                        errors.append(f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=search) for _ in range(clients)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(1.0)
            result["under_search_load"] = figures(*keepalive(port, requests))
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)
        result["under_search_load"]["search_clients"] = clients
        result["under_search_load"]["searches"] = len(searched)
        result["under_search_load"]["failed_searches"] = sum(s != 200 for s in searched)
        result["under_search_load"]["search_errors"] = errors[:5]
    parts = ("keepalive", "new_connection", "under_search_load")
    result["ok"] = all(result[k]["statuses"] == [200] for k in parts)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default="tiny", help="a folder, a zoo name, or tiny")
    parser.add_argument("--requests", type=int, default=REQUESTS)
    parser.add_argument("--clients", type=int, default=CLIENTS, help="search threads (load run)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/ready.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="clipsearch-bench-ready-") as tmp:
        work = Path(tmp)
        bundle = resolve_bundle(args.bundle, work)
        result = run_ready_bench(bundle, work, requests=args.requests, clients=args.clients)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for part in ("keepalive", "new_connection", "under_search_load"):
        r = result[part]
        print(f"{part:18} p50 {r['p50_ms']:7.3f} ms  p99 {r['p99_ms']:7.3f} ms  {r['statuses']}")
    print(f"ok: {result['ok']} ({args.out})")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
