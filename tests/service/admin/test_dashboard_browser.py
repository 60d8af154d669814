"""The dashboard in a real browser: headless Chromium (Debian's, /usr/bin/chromium, through
Playwright) against a running `clipsearch serve` on loopback with API keys on, every request to
another host aborted. Log in; the jobs page shows the ingest job; a playground search shows
thumbnails; an unauthenticated request and a forged post are refused; a rollout onto
``tiny-narrow`` is started, reaches ready, is compared, promoted and rolled back.

With ``CLIPSEARCH_SCREENSHOTS=DIR`` each page's screenshot is saved there
(scripts/dashboard_screenshots.py writes docs/screenshots this way)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.service.admin.conftest import ADMIN_KEY, CARD, SEARCH_KEY, carded_bundle, write_images
from tests.support import running_gateway

CHROMIUM = Path("/usr/bin/chromium")
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
API = {"x-api-key": ADMIN_KEY}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"no Chromium at {CHROMIUM}: `make system-deps` as root installs Debian's chromium",
    ),
]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path) -> Iterator[str]:
    """`clipsearch serve` on loopback with an admin key, the test images ingested."""
    tmp = tmp_path_factory.mktemp("admin-browser")
    bundle = carded_bundle(tiny_bundle_dir, tmp / "bundle")  # with a card: what it is for
    src = tmp / "src"
    write_images(src)
    keys = f"{ADMIN_KEY}:admin+search+ingest,{SEARCH_KEY}:search"
    with running_gateway(
        tmp, bundle, "--allow-root", str(src), env={"CLIPSEARCH_AUTH__API_KEYS": keys}
    ) as url:
        # The start-up log says what the model is for.
        assert f"model tiny-test@0.1.0 (domain: {CARD['domain']}" in (tmp / "serve.log").read_text()
        job = httpx.post(f"{url}/v1/ingest", json={"source": str(src)}, headers=API).json()
        while httpx.get(f"{url}/v1/jobs/{job['job_id']}", headers=API).json()["state"] in (
            "queued",
            "running",
        ):
            time.sleep(0.1)
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture()
def page(browser: Any) -> Iterator[tuple[Any, list[str]]]:
    """A fresh browser context (no cookies); requests to non-local hosts aborted and recorded;
    confirmation dialogs accepted."""
    from playwright.sync_api import Route

    aborted: list[str] = []

    def only_local(route: Route) -> None:
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            aborted.append(route.request.url)
            route.abort("internetdisconnected")

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        p = context.new_page()
        p.route("**/*", only_local)
        p.on("dialog", lambda dialog: dialog.accept())
        yield p, aborted
    finally:
        context.close()


def _shot(page: Any, name: str) -> None:
    folder = os.environ.get("CLIPSEARCH_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def _login(page: Any, gateway: str, target: str = "/admin/") -> None:
    page.goto(f"{gateway}{target}")
    assert "/admin/login" in page.url
    page.fill("#key", ADMIN_KEY)
    page.click("#login")
    page.wait_for_url(f"{gateway}{target}")


def test_unauthenticated_requests_are_refused(gateway: str, page: tuple[Any, list[str]]) -> None:
    from playwright.sync_api import expect

    p, aborted = page
    p.goto(f"{gateway}/admin/jobs")
    expect(p.locator("#key")).to_be_visible()  # sent to the login page
    assert "/admin/login?next=" in p.url
    _shot(p, "login")
    refused = p.request.get(f"{gateway}/admin/api/jobs")
    assert refused.status == 401
    p.fill("#key", SEARCH_KEY)  # a key without the admin scope
    p.click("#login")
    expect(p.locator("#error")).to_contain_text("admin")
    assert p.request.get(f"{gateway}/admin/api/jobs").status == 401
    assert aborted == []


def test_login_overview_collections_and_jobs(gateway: str, page: tuple[Any, list[str]]) -> None:
    from playwright.sync_api import expect

    p, aborted = page
    _login(p, gateway)
    expect(p.locator("#health")).to_have_text("ready")
    expect(p.locator("#models")).to_contain_text("tiny-test")
    expect(p.locator("#models .domain")).to_have_text(CARD["domain"])
    expect(p.locator("#models .intended")).to_have_text(CARD["intended_use"])
    expect(p.locator("#load")).to_contain_text("tiny-test@0.1.0")
    cookies = p.context.cookies()
    [session] = [c for c in cookies if c["name"] == "clipsearch_admin"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert ADMIN_KEY not in session["value"]
    assert ADMIN_KEY not in p.content()
    assert p.evaluate("document.cookie") == ""  # scripts cannot read the session
    _shot(p, "overview")

    p.click("text=Collections")
    expect(p.locator("section.collection")).to_contain_text("tiny-test@0.1.0")
    _shot(p, "collections")

    p.click("text=Jobs")
    job = p.locator("tr.job").first
    expect(job).to_contain_text("ingest")
    expect(job.locator(".state")).to_have_text("completed")
    expect(job.locator(".bar")).to_have_attribute("aria-valuenow", "100.0")
    job.locator("details summary").click()
    expect(job.locator(".errors")).to_contain_text("broken.png")
    _shot(p, "jobs")
    assert aborted == []


def test_playground_search_shows_thumbnails(gateway: str, page: tuple[Any, list[str]]) -> None:
    from playwright.sync_api import expect

    p, aborted = page
    _login(p, gateway, "/admin/search")
    p.fill("#q", "red")
    p.select_option("#mode", "image")
    p.click("#go")
    expect(p.locator("#summary")).to_contain_text("3 hits")
    images = p.locator("#results figure.hit img")
    expect(images).to_have_count(3)
    p.wait_for_function(
        "() => [...document.querySelectorAll('#results img')]"
        ".every(img => img.complete && img.naturalWidth > 0)"
    )
    expect(p.locator("#results .score").first).to_have_text(
        p.locator("#results .score").first.inner_text()
    )
    _shot(p, "search")
    assert aborted == []


def test_a_forged_post_without_the_csrf_token_is_refused(
    gateway: str, page: tuple[Any, list[str]]
) -> None:
    p, _ = page
    _login(p, gateway, "/admin/rollouts")
    before = httpx.get(f"{gateway}/v1/collections", headers=API).json()
    # The browser's own session cookie goes along; the token does not.
    forged = p.request.post(f"{gateway}/admin/rollback", form={"collection": "media"})
    assert forged.status == 403
    assert "CSRF" in forged.text()
    # A form another page injects, without the token, submitted from the dashboard's origin.
    with p.expect_navigation() as navigation:
        p.evaluate(
            """() => { const f = document.createElement('form'); f.method = 'post';
            f.action = '/admin/rollouts'; const i = document.createElement('input');
            i.name = 'bundle_path'; i.value = 'tiny'; f.appendChild(i);
            document.body.appendChild(f); f.submit(); }"""
        )
    assert navigation.value.status == 403
    assert "CSRF" in p.content()
    assert httpx.get(f"{gateway}/v1/collections", headers=API).json() == before
    assert httpx.get(f"{gateway}/v1/admin/reindex", headers=API).json() == []


def test_rollout_to_tiny_narrow_compare_promote_and_roll_back(
    gateway: str, page: tuple[Any, list[str]], tiny_narrow_bundle_dir: Path
) -> None:
    from playwright.sync_api import expect

    p, aborted = page
    for text in ("red", "green", "blue"):  # recent real queries for the comparison
        body = {"text": text, "mode": "image"}
        assert httpx.post(f"{gateway}/v1/search", json=body, headers=API).status_code == 200
    red = next(
        h["uri"]
        for h in httpx.post(f"{gateway}/v1/search", json={"text": "red"}, headers=API).json()[
            "hits"
        ]
        if h["uri"].endswith("/red.png")
    )
    _login(p, gateway, "/admin/rollouts")
    p.fill("textarea[name=golden]", f'{{"a plain red picture": ["{red}"]}}')
    p.click("#golden-form button")
    expect(p.locator("#golden-form").locator("..")).to_contain_text("1 golden query stored")
    p.fill("#bundle_path", str(tiny_narrow_bundle_dir))
    p.click("#start")  # confirms, then the page polls its progress
    rollout = p.locator("article.rollout").first
    expect(rollout).to_have_attribute("data-state", "ready", timeout=120_000)
    expect(rollout.locator(".bar")).to_have_attribute("aria-valuenow", "100.0")
    report = rollout.locator("table.report")
    expect(report).to_contain_text("top-10 overlap")
    expect(report).to_contain_text("score p50")
    expect(report).to_contain_text("p50 latency (ms)")
    expect(report).to_contain_text("golden recall@1")
    expect(rollout.locator("svg.chart rect.bar-new").first).to_be_visible()
    _shot(p, "rollouts")

    rollout.locator("button.promote").click()  # confirms
    expect(p.locator("article.rollout").first).to_have_attribute(
        "data-state", "completed", timeout=60_000
    )
    [listed] = httpx.get(f"{gateway}/v1/collections", headers=API).json()["collections"]
    assert listed["bundle"] == "tiny-narrow@0.1.0"

    p.click("#rollback")  # confirms
    p.wait_for_load_state()
    [listed] = httpx.get(f"{gateway}/v1/collections", headers=API).json()["collections"]
    assert listed["bundle"] == "tiny-test@0.1.0"
    hit = httpx.post(f"{gateway}/v1/search", json={"text": "red", "mode": "image"}, headers=API)
    assert hit.json()["model"] == "tiny-test@0.1.0"
    assert aborted == []
