"""Issue 17's acceptance "rate limits hold per key under a locust burst": a real `clipsearch serve`
with two tenants' keys, each scoped to its own collection, and per-key search limits; the locust
profile ``tenants`` (through its CLI) has 8 users of one key search closed loop while 2 users of
the other search once a second. The bulk key is held to its bucket (429 + Retry-After, at most
per_s x duration + burst accepted) and the other tenant's searches all succeed, none limited.
The same run with the tenant on the bulk script's key fails: the limit is per key, not per user."""

from __future__ import annotations

import csv
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loadtests.loadtest import LocustRun, run_locust
from loadtests.profiles import PROFILES
from tests.service.gateway.conftest import COLOURS, png
from tests.support import running_gateway

pytestmark = pytest.mark.slow
PER_S, BURST = 5, 5
RUN_S = float(PROFILES["tenants"].run_time.removesuffix("s"))  # 20 s
KEYS = "k1:search@alpha+ingest@alpha:alpha-bot,k2:search@beta:beta-bot,ops:search+ingest+admin:ops"
TENANTS = {
    "LOADTEST_BURST_KEY": "k1",
    "LOADTEST_BURST_COLLECTION": "alpha",
    "LOADTEST_TENANT_KEY": "k2",
    "LOADTEST_TENANT_COLLECTION": "beta",
}
BURST_OK, BURST_LIMITED, TENANT = (
    "/v1/search [burst]",
    "/v1/search [burst 429 limited]",
    "/v1/search [tenant]",
)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path) -> Iterator[str]:
    """The gateway with both tenants' collections made by the ops key, one item in each."""
    env = {
        "CLIPSEARCH_AUTH__API_KEYS": KEYS,
        "CLIPSEARCH_AUTH__SEARCH_RATE__PER_S": str(PER_S),
        "CLIPSEARCH_AUTH__SEARCH_RATE__BURST": str(BURST),
    }
    with running_gateway(tmp_path_factory.mktemp("tenants"), tiny_bundle_dir, env=env) as url:
        ops = {"Authorization": "Bearer ops"}
        for name, colour in (("alpha", "red"), ("beta", "blue")):
            made = httpx.post(f"{url}/v1/collections", json={"name": name}, headers=ops)
            assert made.status_code == 201, made.text
            posted = httpx.post(
                f"{url}/v1/items",
                files={"file": (f"{colour}.png", png(COLOURS[colour]), "image/png")},
                data={"caption": f"a {colour} square", "id": f"{name}-item", "collection": name},
                headers=ops,
                timeout=60,
            )
            assert posted.status_code == 200, posted.text
            # A first search measures the bundle's score null (48 probe images on the
            # interactive lane); concurrent first searches each measure it, and 5 of them fill
            # the lane (256), refusing the next with a 429 that no rate limit caused. Measured
            # here, with the ops key's own bucket, so the run sees only the limits under test.
            warm = httpx.post(
                f"{url}/v1/search",
                json={"text": "a square", "collection": name},
                headers=ops,
                timeout=60,
            )
            assert warm.status_code == 200 and warm.json()["hits"], warm.text
        yield url


def _run(url: str, out: Path, env: dict[str, str], run_time: str | None = None) -> LocustRun:
    return run_locust(PROFILES["tenants"], url, out, env=env, run_time=run_time)


def _failures(out: Path) -> list[dict[str, str]]:
    with (out / "locust_failures.csv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_one_tenants_burst_is_limited_and_the_other_tenant_is_not(
    gateway: str, tmp_path: Path
) -> None:
    out = tmp_path / "tenants"
    started = time.monotonic()
    run = _run(gateway, out, TENANTS)
    # Every request the run made happened inside this span: the bucket's bound uses it.
    span_s = time.monotonic() - started
    log = (out / "locust.log").read_text()
    assert run.returncode == 0, log[-4000:]
    assert _failures(out) == [], log[-4000:]
    rows = run.stats
    assert set(rows) == {BURST_OK, BURST_LIMITED, TENANT, "Aggregated"}, sorted(rows)
    assert all(row["failures"] == 0 for row in rows.values()), rows

    # The bulk script's key: held to its bucket (it started full), refused most of the time.
    accepted, limited = rows[BURST_OK]["requests"], rows[BURST_LIMITED]["requests"]
    assert accepted <= PER_S * span_s + BURST + 1, (accepted, span_s)
    assert accepted >= PER_S * RUN_S / 2, accepted  # limited, not locked out
    assert limited >= 3 * accepted, (limited, accepted)

    # The other tenant: every search answered 200 (a 429 fails the row), about one a second
    # per user for the run.
    tenant = rows[TENANT]["requests"]
    assert 2 * RUN_S * 0.6 <= tenant <= 2 * (span_s + 1), (tenant, span_s)


def test_a_tenant_on_the_bulk_scripts_key_is_starved_and_fails_the_run(
    gateway: str, tmp_path: Path
) -> None:
    """The same profile with both users on k1: the limit is the key's, so the steady user's
    searches meet the burst's empty bucket; the test above can fail."""
    out = tmp_path / "shared"
    shared = {**TENANTS, "LOADTEST_TENANT_KEY": "k1", "LOADTEST_TENANT_COLLECTION": "alpha"}
    run = _run(gateway, out, shared, run_time="8s")
    assert run.returncode != 0
    assert run.stats[TENANT]["failures"] > 0, run.stats
    assert run.stats[BURST_OK]["failures"] == run.stats[BURST_LIMITED]["failures"] == 0
    reasons = {row["Error"] for row in _failures(out) if row["Name"] == TENANT}
    assert reasons and all("HTTP 429" in r and "rate limit" in r for r in reasons), reasons


def test_the_tenant_profile_without_its_keys_fails_with_their_names(
    gateway: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in TENANTS:
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "no-keys"
    run = _run(gateway, out, {}, run_time="3s")
    assert run.returncode != 0
    log = (out / "locust.log").read_text()
    assert "LOADTEST_BURST_KEY and LOADTEST_BURST_COLLECTION must be set" in log, log[-3000:]
    assert "LOADTEST_TENANT_KEY and LOADTEST_TENANT_COLLECTION must be set" in log, log[-3000:]
