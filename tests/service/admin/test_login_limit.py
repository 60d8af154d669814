"""Failed dashboard logins are rate-limited per client address (a bounded token bucket): after
5 failures an address gets 429 with Retry-After, even for the right key; other addresses are not
affected; once the window has passed the right key works again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.admin.session import LoginLimiter
from service.core.config import AuthSettings, Settings
from tests.service.admin.conftest import ADMIN_KEY, SEARCH_KEY, csrf_of, start
from tests.service.gateway.conftest import make_settings

ATTACKER = ("203.0.113.7", 40001)
OTHER = ("198.51.100.2", 40002)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def gateway(tmp_path: Path, tiny_bundle_dir: Path) -> Iterator[TestClient]:
    keys = {ADMIN_KEY: frozenset({"admin"}), SEARCH_KEY: frozenset({"search"})}
    settings: Settings = make_settings(tmp_path, tiny_bundle_dir).model_copy(
        update={"auth": AuthSettings(api_keys=keys)}
    )
    yield from start(settings, ATTACKER)


def _try(client: TestClient, key: str) -> tuple[int, str | None, str]:
    token = csrf_of(client.get("/admin/login").text)
    r = client.post("/admin/login", data={"key": key, "csrf_token": token, "next": "/admin/"})
    return r.status_code, r.headers.get("retry-after"), r.text


def test_failed_logins_are_limited_per_address_and_the_window_passes(
    gateway: TestClient,
) -> None:
    clock = Clock()
    limiter = LoginLimiter(clock=clock)
    gateway.app.state.admin_login_limiter = limiter  # type: ignore[attr-defined]
    # Without a lifespan of its own: the same app, seen from another address.
    other = TestClient(gateway.app, client=OTHER, follow_redirects=False)

    codes = [_try(gateway, k)[0] for k in ["wrong-1", "wrong-2", SEARCH_KEY, "", "wrong-5"]]
    assert codes == [401, 401, 403, 401, 401]
    status, retry, text = _try(gateway, "wrong-6")
    assert (status, retry) == (429, "12") and "too many failed logins" in text
    # The right key is refused too: it is not even checked while the address is limited.
    status, retry, _ = _try(gateway, ADMIN_KEY)
    assert status == 429 and retry is not None and int(retry) > 0
    assert gateway.get("/admin/api/overview").status_code == 401  # no session was made

    # Another address is not affected.
    assert _try(other, ADMIN_KEY)[0] == 303
    assert other.get("/admin/api/overview").status_code == 200

    # One token back after 12 s: one more guess, then limited again.
    clock.now += 12.0
    assert _try(gateway, "wrong-7")[0] == 401
    assert _try(gateway, "wrong-8")[0] == 429
    # After the window the right key works, and a success starts the address afresh.
    clock.now += 60.0
    assert _try(gateway, ADMIN_KEY)[0] == 303
    assert gateway.get("/admin/api/overview").status_code == 200
    assert limiter.retry_after(ATTACKER[0]) is None and len(limiter) == 0


def test_the_limiter_is_bounded_and_refills() -> None:
    clock = Clock()
    limiter = LoginLimiter(burst=2, per_minute=6.0, max_clients=3, clock=clock)
    for _ in range(2):
        limiter.failed("a")
    assert limiter.retry_after("a") == pytest.approx(10.0)
    for address in ("b", "c", "d"):  # the fourth address pushes out the oldest, "a"
        limiter.failed(address)
    assert len(limiter) == 3 and limiter.retry_after("a") is None
    clock.now += 5.0
    limiter.failed("d")  # 1 + 0.5 - 1 tokens left
    assert limiter.retry_after("d") == pytest.approx(5.0)
    clock.now += 5.0
    assert limiter.retry_after("d") is None
