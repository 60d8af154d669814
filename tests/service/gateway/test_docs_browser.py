"""/docs and /redoc in a real browser with the network cut off: headless Chromium (Debian's, at
/usr/bin/chromium, driven by Playwright) loads the pages from a running `clipsearch serve` on
loopback, every request to any other host aborted, and sees the API's operations listed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support import running_gateway

CHROMIUM = Path("/usr/bin/chromium")
LOCAL_HOSTS = {"127.0.0.1", "localhost"}

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
    """`clipsearch serve` on a loopback port, API keys on (the pages must not need one)."""
    tmp = tmp_path_factory.mktemp("docs-browser")
    keys = {"CLIPSEARCH_AUTH__API_KEYS": "secret:search"}
    with running_gateway(tmp, tiny_bundle_dir, env=keys) as url:
        yield url


@pytest.fixture()
def offline_page(gateway: str) -> Iterator[tuple[object, list[str]]]:
    """A Chromium page whose requests to any non-local host are aborted (and recorded)."""
    from playwright.sync_api import Route, sync_playwright

    aborted: list[str] = []

    def only_local(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            aborted.append(url)
            route.abort("internetdisconnected")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page()
            page.route("**/*", only_local)
            yield page, aborted
        finally:
            browser.close()


def test_swagger_ui_lists_the_operations_offline(
    gateway: str, offline_page: tuple[object, list[str]]
) -> None:
    from playwright.sync_api import Page, expect

    page, aborted = offline_page
    assert isinstance(page, Page)
    page.goto(f"{gateway}/docs")
    # Swagger UI renders each operation as #operations-<tag>-<operationId>.
    search = page.locator("#operations-search-search")
    expect(search).to_be_visible(timeout=30_000)
    expect(search).to_contain_text("/v1/search")
    expect(page.locator("#operations-jobs-ingest")).to_be_visible()
    assert page.locator(".opblock").count() >= 10
    assert page.locator(".opblock-summary-path", has_text="/v1/search/image").count() == 1
    assert aborted == [], aborted  # nothing off this machine was even asked for


def test_redoc_lists_the_operations_offline(
    gateway: str, offline_page: tuple[object, list[str]]
) -> None:
    from playwright.sync_api import Page, expect

    page, aborted = offline_page
    assert isinstance(page, Page)
    page.goto(f"{gateway}/redoc")
    # ReDoc gives each operation a section with id operation/<operationId>.
    section = page.locator('[id="operation/search"]')
    expect(section).to_be_attached(timeout=30_000)
    expect(section.locator("h2").first).to_be_visible()
    expect(page.locator('[id="operation/search_image"]')).to_be_attached()
    expect(page.get_by_role("menuitem").first).to_be_visible()
    assert aborted == [], aborted
