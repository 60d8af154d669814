#!/usr/bin/env python3
"""``clipsearch-probe``: health probes and the search round trip of the clipsearch images.

One script serves the Docker HEALTHCHECKs, the Kubernetes exec probes and the chart's ``helm test``
pod, so that each asks a process the question it answers truthfully:

    clipsearch-probe gateway      GET /health/ready of this container's gateway (200 = ready)
    clipsearch-probe worker       the encoder worker's gRPC Health: ready only after its warm-up
    clipsearch-probe indexer      a Celery ping to this container's indexer node (indexer@HOST)
    clipsearch-probe search URL   POST URL/v1/search; passes on 200 with a list of hits

Ports and the broker come from the settings the processes themselves read (``CLIPSEARCH_*``).
Exit status 0 means healthy; anything else prints why on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request

from service.core import keys as api_keys
from service.core.config import Settings

LOCAL = "127.0.0.1"
# The indexer's Celery node name: `clipsearch indexer --name indexer@%h` in the chart and compose.
INDEXER_NODE = "indexer@{host}"
SEARCH_BODY = {"text": "a red circle", "mode": "auto", "limit": 1}


class ProbeFailed(Exception):
    """The probed process is not healthy (the message says why)."""


def probe_gateway(settings: Settings, timeout: float) -> str:
    url = f"http://{LOCAL}:{settings.port}/health/ready"
    status, body = _request(url, None, {}, timeout)
    if status != 200:
        raise ProbeFailed(f"{url} answered {status}: {body[:300]!r}")
    return "gateway ready"


def probe_worker(settings: Settings, timeout: float) -> str:
    import grpc

    from service.rpc.proto import encoder_pb2 as pb
    from service.rpc.proto import encoder_pb2_grpc as pb_grpc

    address = f"{LOCAL}:{settings.worker.port}"
    with grpc.insecure_channel(address) as channel:
        try:
            health = pb_grpc.EncoderStub(channel).Health(pb.HealthRequest(), timeout=timeout)
        except grpc.RpcError as exc:
            raise ProbeFailed(f"encoder worker at {address}: {exc.code().name}") from exc
    if not health.ready:
        raise ProbeFailed(f"encoder worker not ready: {health.reason}")
    return f"encoder worker ready ({health.bundle})"


def probe_indexer(settings: Settings, timeout: float) -> str:
    from indexer.distributed.app import make_celery

    node = INDEXER_NODE.format(host=socket.gethostname())
    app = make_celery(settings)
    try:
        replies = app.control.ping(destination=[node], timeout=timeout)
    finally:
        app.close()
    if not any(node in reply for reply in replies):
        raise ProbeFailed(f"indexer node {node} did not answer a ping within {timeout} s")
    return f"indexer {node} answers"


def search_round_trip(url: str, api_key: str | None, timeout: float, wait_s: float) -> str:
    """POST a text query; retry while the gateway is unreachable or still starting (503)."""
    headers = {"content-type": "application/json"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    endpoint = url.rstrip("/") + "/v1/search"
    deadline = time.monotonic() + wait_s
    while True:
        try:
            status, body = _request(endpoint, json.dumps(SEARCH_BODY).encode(), headers, timeout)
        except ProbeFailed:
            if time.monotonic() >= deadline:
                raise
            status, body = 0, ""
        if status == 200:
            hits = json.loads(body).get("hits")
            if not isinstance(hits, list):
                raise ProbeFailed(f"{endpoint} answered 200 without a list of hits: {body[:300]}")
            return f"search round trip ok: {len(hits)} hit(s)"
        if status not in (0, 503) or time.monotonic() >= deadline:
            raise ProbeFailed(f"{endpoint} answered {status}: {body[:300]}")
        time.sleep(2)


def search_key(raw: str | None) -> str | None:
    """The first key with the ``search`` scope (on every collection, else on some) in a
    ``CLIPSEARCH_AUTH__API_KEYS`` value, or in the content of a keys file (one entry a line, as
    the chart's Secret holds them)."""
    if not raw:
        return None
    entries = api_keys.read_entries(raw, lines="\n" in raw.strip())
    for wanted in (lambda k: k.everywhere("search"), lambda k: k.has_scope("search")):
        for key, record in entries:
            if wanted(record):
                return key
    raise ProbeFailed("no API key with the search scope among the configured keys")


def _request(
    url: str, data: bytes | None, headers: dict[str, str], timeout: float
) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        raise ProbeFailed(f"{url}: {exc}") from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipsearch-probe", description="clipsearch probes")
    parser.add_argument("target", choices=["gateway", "worker", "indexer", "search"])
    parser.add_argument("url", nargs="?", help="gateway base URL (search)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per request")
    parser.add_argument("--wait", type=float, default=0.0, help="search: retry this long")
    parser.add_argument(
        "--api-keys-env",
        default="CLIPSEARCH_AUTH__API_KEYS",
        help="search: environment variable with the gateway's keys (key:scopes,...)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        message = run(args)
    except ProbeFailed as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    print(message)
    return 0


def run(args: argparse.Namespace) -> str:
    if args.target == "search":
        if not args.url:
            raise ProbeFailed("search needs the gateway URL")
        key = search_key(os.environ.get(args.api_keys_env))
        return search_round_trip(args.url, key, args.timeout, args.wait)
    settings = Settings()
    probes = {"gateway": probe_gateway, "worker": probe_worker, "indexer": probe_indexer}
    return probes[args.target](settings, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
