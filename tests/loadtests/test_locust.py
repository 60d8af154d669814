"""The locust scenarios (loadtests/locustfile.py): the 20-second smoke profile, run through locust's
CLI in a subprocess against a real `clipsearch serve` on a free port with an API key, makes every
kind of request and fails none; a wrong key makes the same run fail."""

from __future__ import annotations

import csv
import io
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from loadtests.loadtest import main as loadtest_main
from loadtests.loadtest import run_locust
from loadtests.profiles import PROFILES
from tests.support import running_gateway

pytestmark = pytest.mark.slow
KEY = "loadtest-key"
SEEDS = 6


def _png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("locust")
    env = {"CLIPSEARCH_AUTH__API_KEYS": f"{KEY}:search+ingest"}
    with running_gateway(tmp, tiny_bundle_dir, env=env) as url:
        headers = {"Authorization": f"Bearer {KEY}"}
        for i in range(SEEDS):
            files = {"file": (f"seed-{i}.png", _png((40 * i, 200 - 30 * i, 90)), "image/png")}
            data = {"caption": f"seed picture {i}", "id": f"seed-{i}"}
            answer = httpx.post(f"{url}/v1/items", files=files, data=data, headers=headers)
            assert answer.status_code == 200, answer.text
        yield url


def _points(url: str) -> int:
    answer = httpx.get(f"{url}/v1/collections", headers={"Authorization": f"Bearer {KEY}"})
    assert answer.status_code == 200, answer.text
    return sum(int(c["points"]) for c in answer.json()["collections"])


def test_the_smoke_profile_makes_every_kind_of_request_and_fails_none(
    gateway: str, tmp_path: Path
) -> None:
    before = _points(gateway)
    run = run_locust(PROFILES["smoke"], gateway, tmp_path / "smoke", api_key=KEY)
    log = (tmp_path / "smoke" / "locust.log").read_text()
    assert run.returncode == 0, log[-4000:]
    assert run.total["failures"] == 0 and run.total["requests"] > 100, run.total
    rows = run.stats
    for name in (
        "/v1/search [auto]",
        "/v1/search [image]",
        "/v1/search [caption]",
        "/v1/search [description]",
        "/v1/embeddings [1]",
        "/v1/embeddings [16]",
        "/v1/items/[id]",
        "/v1/ingest [manifest]",
        "/v1/jobs/[id]",
    ):
        assert rows.get(name, {}).get("requests", 0) > 0, (name, sorted(rows))
        assert rows[name]["failures"] == 0
    uploads = sum(v["requests"] for k, v in rows.items() if k.startswith("/v1/search/image"))
    assert uploads > 0, sorted(rows)
    # The bulk user's jobs completed while the others searched: their documents are stored.
    assert _points(gateway) >= before + 50
    # Locust's own reports are there: the HTML page and the CSVs.
    assert "<html" in (tmp_path / "smoke" / "report.html").read_text().lower()
    for suffix in ("stats", "failures", "stats_history"):
        assert (tmp_path / "smoke" / f"locust_{suffix}.csv").is_file()


def test_a_failed_request_fails_the_run(gateway: str, tmp_path: Path) -> None:
    run = run_locust(
        PROFILES["search"], gateway, tmp_path / "bad-key", api_key="wrong", run_time="3s", users=2
    )
    assert run.returncode != 0
    assert run.total["failures"] == run.total["requests"] > 0
    failures = (tmp_path / "bad-key" / "locust_failures.csv").read_text()
    reasons = [row["Error"] for row in csv.DictReader(io.StringIO(failures))]
    assert reasons and all("HTTP 401" in r for r in reasons), reasons


def test_a_run_against_nothing_fails(tmp_path: Path) -> None:
    """`--host` with no gateway there: every request fails, and so does the run's exit code."""
    from loadtests.loadtest import free_port, summarise

    host = f"http://127.0.0.1:{free_port()}"
    out = tmp_path / "none"
    args = ["search", "--host", host, "--run-time", "2s", "--users", "1", "--out", str(out)]
    assert loadtest_main(args) != 0
    total = summarise(out)["Aggregated"]
    assert total["requests"] > 0 and total["failures"] == total["requests"]


def test_an_unknown_profile_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exited:
        loadtest_main(["no-such-profile"])
    assert exited.value.code == 2


def test_make_loadtest_runs_the_module_with_the_profile() -> None:
    dry = subprocess.run(
        ["make", "-n", "loadtest", "PROFILE=search"],
        capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert "-m loadtests.loadtest search" in dry.stdout, dry.stdout


def test_a_run_reports_the_garbage_collections_it_saw(
    gateway: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service's collector pauses are read from its /metrics before and after the run."""
    import json

    monkeypatch.setenv("CLIPSEARCH_API_KEY", KEY)
    out = tmp_path / "gc"
    args = ["search", "--host", gateway, "--run-time", "3s", "--users", "2", "--out", str(out)]
    assert loadtest_main(args) == 0
    during = json.loads((out / "gc.json").read_text())
    assert during["0"]["collections"] > 0  # requests allocate: young collections ran
    assert during["0"]["longest_at_most_ms"] > 0


def test_collections_during_a_run_are_the_difference_of_two_readings() -> None:
    from loadtests.loadtest import gc_during, gc_line

    before = {"2": {"0.001": 1.0, "0.1": 3.0, "0.25": 3.0, "+Inf": 3.0}}
    after = {
        "2": {"0.001": 2.0, "0.1": 6.0, "0.25": 6.0, "+Inf": 6.0},  # 3 more: all <= 100 ms
        "1": {"0.001": 0.0, "0.1": 0.0, "0.25": 0.0, "+Inf": 2.0},  # new, above every bound
    }
    during = gc_during(before, after)
    assert during["2"] == {"collections": 3.0, "longest_at_most_ms": 100.0}
    assert during["1"] == {"collections": 2.0, "longest_at_most_ms": None}
    line = gc_line(during)
    assert "generation 2: 3, each ≤ 100 ms" in line
    assert "generation 1: 2, the longest above the highest bucket" in line
    assert gc_during(before, None) == {}
    assert gc_line({}) == "garbage collector: no figures on /metrics"


def test_a_service_setting_without_a_value_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exited:
        loadtest_main(["search", "--service-env", "CLIPSEARCH_STARTUP__GC_FREEZE"])
    assert exited.value.code == 2
