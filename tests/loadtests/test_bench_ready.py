"""The readiness benchmark: its raw-socket HTTP reader, and one short real run on a gateway."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from loadtests.bench.ready import ResponseReader, run_ready_bench


def test_a_response_is_read_whole_when_it_arrives_in_pieces() -> None:
    ours, theirs = socket.socketpair()
    ours.settimeout(10)  # a reader that waits for bytes that never come fails, never hangs
    body = b'{"ready": true}'
    head = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: %d\r\n\r\n" % len(body)
    second = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    pieces = [head[:10], head[10:] + body[:4], body[4:] + second]

    def send() -> None:
        for piece in pieces:
            theirs.sendall(piece)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        reader = ResponseReader(ours)
        assert reader.status() == 503
        assert reader.status() == 200  # the first body was consumed exactly, the rest kept
        assert reader.buffer == b""
    finally:
        sender.join()
        ours.close()
        theirs.close()


def test_a_closed_connection_is_an_error_not_a_status() -> None:
    ours, theirs = socket.socketpair()
    ours.settimeout(10)
    theirs.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}")
    theirs.close()
    with pytest.raises(ConnectionError, match="mid-body"):
        ResponseReader(ours).status()
    ours.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_short_run_times_every_probe_on_a_real_gateway(
    tmp_path: Path, tiny_bundle_dir: Path
) -> None:
    report = run_ready_bench(tiny_bundle_dir, tmp_path, requests=50, clients=1)
    assert report["ok"] and report["bundle"] == "tiny-test@0.1.0", report
    for part in ("keepalive", "new_connection", "under_search_load"):
        r = report[part]
        assert r["requests"] == 50 and r["statuses"] == [200], (part, r)
        assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"], (part, r)
    assert report["under_search_load"]["searches"] > 0  # the load ran meanwhile
