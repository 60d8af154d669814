"""An S3-compatible server on the loopback for tests and benchmarks: moto's standalone server
(the one s3fs's own test suite uses) in a child process, reached through the standard AWS
variables (``aws_env``) as a real deployment reaches MinIO or S3."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_s3(tmp: Path) -> Iterator[str]:
    """moto's standalone S3 server in a child process on the loopback; yields its URL. The
    caller sets AWS_ENDPOINT_URL etc. (``aws_env``)."""
    port = _free_port()
    log = (tmp / "moto.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/moto-api/", timeout=1)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"moto server did not start: {(tmp / 'moto.log').read_text()}"
                    ) from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def aws_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def upload(endpoint: str, folder: Path, bucket: str, prefix: str) -> None:
    """Put every file of ``folder`` under ``s3://bucket/prefix/`` (creating the bucket)."""
    import s3fs

    fs = s3fs.S3FileSystem(
        key="testing", secret="testing", endpoint_url=endpoint, skip_instance_cache=True
    )
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    for path in sorted(folder.iterdir()):
        if path.is_file():
            fs.put_file(str(path), f"{bucket}/{prefix}/{path.name}")
