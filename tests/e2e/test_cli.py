"""The real `clipsearch` processes: serve, then ingest and search through the CLI."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clipsearch", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _wait_ready(url: str, proc: subprocess.Popen[str], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("server never became ready")


@pytest.fixture()
def server(tmp_path: Path, tiny_bundle_dir: Path) -> Iterator[tuple[str, dict[str, str], Path]]:
    port = _free_port()
    src = tmp_path / "src"
    src.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path.cwd())}
    env["CLIPSEARCH_GRPC_PORT"] = "0"  # the default 50052 may be taken by another gateway
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clipsearch",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "data"),
            "--bundle",
            str(tiny_bundle_dir),
            "--allow-root",
            str(src),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc)
        yield url, env, src
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_ingest_and_search_through_the_cli(server: tuple[str, dict[str, str], Path]) -> None:
    from models.data.scenes import write_demo_dataset

    url, env, src = server
    write_demo_dataset(src / "scenes", n=12, seed=7)
    (src / "scenes" / "broken.png").write_bytes(b"not an image at all")

    result = _cli("ingest", str(src / "scenes"), "--server", url, env=env)
    assert result.returncode == 1, result.stderr  # one item failed: non-zero, and it is listed
    assert "12 indexed, 1 failed" in result.stdout  # the result on stdout, progress on stderr
    assert f"failed {src / 'scenes' / 'broken.png'}: " in result.stdout
    assert "ingest" in result.stderr and "indexed" not in result.stderr

    found = _cli(
        "search", "a red circle", "--mode", "description", "--limit", "3", "--server", url, env=env
    )
    assert found.returncode == 0, found.stderr
    assert "3 hits" in found.stderr and "tiny-test@0.1.0" in found.stderr
    assert len(found.stdout.splitlines()) == 3  # one line per hit, nothing else

    outside = _cli("ingest", "/", "--server", url, env=env)
    assert outside.returncode == 1
    assert "outside the allowed roots" in outside.stderr
    # ... and says how to allow a folder: the gateway's option, its setting, `make run`.
    for how in ("--allow-root /", "CLIPSEARCH_SOURCES__ALLOWED_ROOTS", "make run ALLOW=/"):
        assert how in outside.stderr, outside.stderr
    assert not outside.stdout

    neither = _cli("search", "--server", url, env=env)
    assert neither.returncode == 2


def test_jobs_commands_show_resume_and_refuse(server: tuple[str, dict[str, str], Path]) -> None:
    """``clipsearch jobs``: show a finished job, retry its failed item as a new job (followed,
    exit 1 as it fails again), and clear errors for what cannot be done."""
    from models.data.scenes import write_demo_dataset

    url, env, src = server
    write_demo_dataset(src / "jobs", n=4, seed=3)
    (src / "jobs" / "broken.png").write_bytes(b"not an image at all")
    ingest = _cli("ingest", str(src / "jobs"), "--server", url, env=env)
    found = re.search(r"job ([0-9a-f]{32}): completed", ingest.stdout)
    assert found, ingest.stdout
    job_id = found.group(1)

    shown = _cli("jobs", "show", job_id, "--server", url, env=env)
    assert shown.returncode == 0, shown.stderr
    assert f"job {job_id}: completed, 4 indexed, 1 failed, 5 in all" in shown.stdout
    assert "broken.png" in shown.stdout

    again = _cli("jobs", "retry-failed", job_id, "--server", url, env=env)
    assert again.returncode == 1, again.stderr  # the broken file fails again, and says so
    retried = re.search(
        r"job ([0-9a-f]{32}): completed, 0 indexed, 1 failed, 1 in all", again.stdout
    )
    assert retried and retried.group(1) != job_id, again.stdout

    for action in ("retry", "cancel"):  # a completed job has nothing to resume or cancel
        refused = _cli("jobs", action, job_id, "--server", url, env=env)
        assert refused.returncode == 1, refused.stderr
        assert "error 409: conflict" in refused.stderr, refused.stderr
    missing = _cli("jobs", "show", "0" * 32, "--server", url, env=env)
    assert missing.returncode == 1 and "error 404" in missing.stderr, missing.stderr


def test_cli_reports_an_unreachable_server(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    result = _cli("search", "x", "--server", f"http://127.0.0.1:{_free_port()}", env=env)
    assert result.returncode == 1
    assert "cannot reach" in result.stderr


def test_cli_results_go_to_stdout_whole_and_as_json(
    server: tuple[str, dict[str, str], Path],
) -> None:
    """stdout carries results alone (ids, whole file names however long, with spaces), stderr
    the status; ``--json`` is the API's JSON, the same ids as the text lines."""
    from models.data.scenes import write_demo_dataset

    url, env, src = server
    folder = src / ("a folder with spaces and a long name " * 3).strip()
    write_demo_dataset(folder, n=3, seed=11)
    long_name = folder / ("scene-with-a-very-long-file-name-" * 4 + ".png")
    for suffix in (".png", ".txt", ".desc.txt"):  # its captions keep with it
        (folder / f"scene-0000{suffix}").rename(long_name.with_suffix(suffix))

    ingested = _cli("ingest", str(folder), "--json", "--server", url, env=env)
    assert ingested.returncode == 0, ingested.stderr
    job = json.loads(ingested.stdout)
    assert (job["state"], job["done"], job["failed"]) == ("completed", 3, 0)
    assert f"job {job['id']} started" in ingested.stderr

    args = ("search", "a red circle", "--mode", "image", "--limit", "3", "--server", url)
    text = _cli(*args, env=env)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert len(lines) == 3 and "3 hits" in text.stderr
    assert "3 hits" not in text.stdout
    as_json = _cli(*args, "--json", env=env)
    assert as_json.returncode == 0, as_json.stderr
    hits = json.loads(as_json.stdout)["hits"]
    assert [h["id"] for h in hits] == [line.split()[3] for line in lines]
    paths = {Path(unquote(urlsplit(h["uri"]).path)) for h in hits}
    assert paths == set(folder.glob("*.png"))
    # The long name is printed whole, on its hit's line, as a path to paste into a shell.
    assert sum(str(long_name) in line for line in lines) == 1, text.stdout

    listed = _cli("jobs", "list", "--limit", "1", "--server", url, env=env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith(f"job {job['id']}: completed, 3 indexed"), listed.stdout
    page = json.loads(_cli("jobs", "list", "--json", "--server", url, env=env).stdout)
    assert page["jobs"][0]["id"] == job["id"]
    shown = json.loads(_cli("jobs", "show", job["id"], "--json", "--server", url, env=env).stdout)
    assert shown == job

    bad = _cli("search", "x", "--limit", "0", "--json", "--server", url, env=env)
    assert bad.returncode == 2 and not bad.stdout  # bad input: an error, and no JSON to parse
