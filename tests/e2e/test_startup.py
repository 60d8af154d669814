"""A fatal start-up error — the data dir held by another gateway, a bad bundle, the port in use —
makes `serve`, `demo` and `worker` exit non-zero with one clear last line on stderr: never a
traceback, never a server that answers 503 for ever. And a newcomer's folder: `demo
--allow-root DIR` (what `make run ALLOW=DIR` runs) lets ingestion read it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_cli import _free_port, _wait_ready
from tests.support import wait_for_job

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    for name in [n for n in env if n.startswith("CLIPSEARCH_")]:
        del env[name]
    env["CLIPSEARCH_GRPC_PORT"] = "0"  # HTTP alone: two gateways here would share gRPC's port
    return env


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    """The command to its end: a process that keeps serving fails the test by its timeout."""
    return subprocess.run(
        [sys.executable, "-m", "clipsearch", *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode not in (0, None), result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    return lines[-1]


@pytest.fixture()
def held_port() -> Iterator[int]:
    """A loopback port that something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture()
def corrupt_bundle(tmp_path: Path, tiny_bundle_dir: Path) -> Path:
    bundle = tmp_path / "corrupt"
    shutil.copytree(tiny_bundle_dir, bundle)
    (bundle / "image.onnx").write_bytes(b"not a model")
    return bundle


def test_a_second_gateway_on_the_same_data_dir_exits(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    data = str(tmp_path / "data")
    port = _free_port()
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clipsearch",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            data,
            "--bundle",
            str(tiny_bundle_dir),
        ],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_ready(f"http://127.0.0.1:{port}", first)
        second = _run(
            "serve",
            "--port",
            str(_free_port()),
            "--data-dir",
            data,
            "--bundle",
            str(tiny_bundle_dir),
        )
        line = _last_line(second)
        assert second.returncode == 1
        assert line.startswith("clipsearch cannot start: data dir "), line
        assert f"in use by another process (pid {first.pid})" in line, line
        # The first gateway is untouched by the attempt.
        assert httpx.get(f"http://127.0.0.1:{port}/health/ready").status_code == 200
    finally:
        first.terminate()
        first.wait(timeout=30)


def test_a_corrupt_bundle_exits_instead_of_serving_503(
    tmp_path: Path, corrupt_bundle: Path
) -> None:
    result = _run(
        "serve",
        "--port",
        str(_free_port()),
        "--data-dir",
        str(tmp_path / "data"),
        "--bundle",
        str(corrupt_bundle),
    )
    line = _last_line(result)
    assert result.returncode == 1
    assert line == (
        f"clipsearch cannot start: bundle {corrupt_bundle}: checksum mismatch for 'image.onnx': "
        "the file is corrupt or was replaced"
    ), result.stderr


def test_a_missing_bundle_exits_before_binding(tmp_path: Path) -> None:
    result = _run(
        "serve",
        "--port",
        str(_free_port()),
        "--data-dir",
        str(tmp_path / "data"),
        "--bundle",
        str(tmp_path / "no-such-bundle"),
    )
    assert result.returncode == 2
    assert "is neither a bundle folder nor a zoo name" in _last_line(result)


def test_a_port_in_use_exits_before_loading(
    tmp_path: Path, tiny_bundle_dir: Path, held_port: int
) -> None:
    result = _run(
        "serve",
        "--port",
        str(held_port),
        "--data-dir",
        str(tmp_path / "data"),
        "--bundle",
        str(tiny_bundle_dir),
    )
    line = _last_line(result)
    assert result.returncode == 1
    assert line.startswith(f"cannot listen on 127.0.0.1:{held_port}: Address already in use")
    assert "--port" in line
    assert "bundle tiny-test" not in result.stderr  # refused before the model loaded
    assert not (tmp_path / "data").exists()  # ... and before the store opened


def test_demo_exits_on_a_port_in_use_and_on_a_missing_folder_to_allow(
    tmp_path: Path, tiny_bundle_dir: Path, held_port: int
) -> None:
    from models.data.scenes import write_demo_dataset

    data = tmp_path / "data"
    write_demo_dataset(data / "demo", n=2, seed=1)
    busy = _run(
        "demo", "--port", str(held_port), "--data-dir", str(data), "--bundle", str(tiny_bundle_dir)
    )
    assert busy.returncode == 1
    assert _last_line(busy).startswith(f"cannot listen on 127.0.0.1:{held_port}")
    typo = _run(
        "demo",
        "--port",
        str(_free_port()),
        "--data-dir",
        str(data),
        "--bundle",
        str(tiny_bundle_dir),
        "--allow-root",
        str(tmp_path / "Picturs"),
    )
    assert typo.returncode == 2
    assert _last_line(typo) == f"--allow-root {tmp_path / 'Picturs'}: no such folder"


def test_worker_exits_on_a_bad_bundle_and_a_port_in_use(
    corrupt_bundle: Path, tiny_bundle_dir: Path, held_port: int
) -> None:
    bad = _run("worker", "--port", "0", "--metrics-port", "0", "--bundle", str(corrupt_bundle))
    assert bad.returncode == 1
    assert "checksum mismatch for 'image.onnx'" in _last_line(bad)
    busy = _run(
        "worker", "--port", str(held_port), "--metrics-port", "0", "--bundle", str(tiny_bundle_dir)
    )
    assert busy.returncode == 1
    line = _last_line(busy)
    assert (
        f"the encoder worker cannot start: cannot bind the encoder worker to 127.0.0.1:{held_port}"
        in line
    )


def test_demo_allows_a_folder_of_yours(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    """`make run ALLOW=DIR` runs `demo --allow-root DIR`: that folder ingests, one beside it is
    refused with how to allow it."""
    from models.data.scenes import write_demo_dataset

    data, mine, other = tmp_path / "data", tmp_path / "Pictures", tmp_path / "Other"
    write_demo_dataset(data / "demo", n=2, seed=1)
    write_demo_dataset(mine, n=3, seed=2)
    other.mkdir()
    port = _free_port()
    log = (tmp_path / "demo.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clipsearch",
            "demo",
            "--port",
            str(port),
            "--data-dir",
            str(data),
            "--bundle",
            str(tiny_bundle_dir),
            "--allow-root",
            str(mine),
        ],
        env=_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc)
        accepted = httpx.post(f"{url}/v1/ingest", json={"source": {"directory": str(mine)}})
        assert accepted.status_code == 202, accepted.text
        job = wait_for_job(
            lambda j: httpx.get(f"{url}/v1/jobs/{j}").json(), accepted.json()["job_id"]
        )
        assert (job["state"], job["done"], job["failed"]) == ("completed", 3, 0)
        refused = httpx.post(f"{url}/v1/ingest", json={"source": {"directory": str(other)}})
        assert refused.status_code == 403
        message = refused.json()["error"]["message"]
        assert f"`--allow-root {other}`" in message, message
        assert f"`make run ALLOW={other}`" in message and "CLIPSEARCH_SOURCES__" in message
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")
def test_make_run_passes_allow_to_the_demo() -> None:
    # As a user types it, also when the suite itself runs under `make test` (a sub-make would
    # print "Entering/Leaving directory" lines and inherit the outer make's flags).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    dry = subprocess.run(
        ["make", "--no-print-directory", "-n", "run", "ALLOW=/srv/my photos", "PORT=8123"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    command = dry.stdout.strip().splitlines()[-1]
    assert command.endswith(
        'clipsearch demo --host 127.0.0.1 --port 8123 --allow-root "/srv/my photos"'
    )
    plain = subprocess.run(
        ["make", "--no-print-directory", "-n", "run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "--allow-root" not in plain.stdout
