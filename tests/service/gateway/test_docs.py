"""/docs and /redoc serve their assets themselves (no CDN), and need no API key."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.core.config import AuthSettings, Settings
from service.gateway.app import create_app
from service.gateway.docs import assets_dir
from service.gateway.state import Components
from tests.service.gateway.conftest import make_settings


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path) -> Iterator[TestClient]:
    """A gateway with API keys whose components never finish building: the documentation
    needs neither a key nor a loaded model."""
    release = threading.Event()

    def waiting(settings: Settings) -> Components:
        release.wait(60)
        raise RuntimeError("not needed here")

    settings = make_settings(
        tmp_path_factory.mktemp("docs"),
        tiny_bundle_dir,
        auth=AuthSettings(api_keys={"k": ["search"]}),
    )
    with TestClient(create_app(settings, waiting)) as client:
        yield client
        release.set()


def _local_assets(html: str) -> list[str]:
    """Every URL the page loads (``src``/``href``/``spec-url`` attributes and the JS's
    ``url:``)."""
    urls = re.findall(r"""(?:src|href|spec-url)=["']([^"']+)["']""", html)
    urls += re.findall(r"""url: ?['"]([^'"]+)['"]""", html)
    return urls


@pytest.mark.parametrize(
    ("page", "assets"),
    [
        ("/docs", {"/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css"}),
        ("/redoc", {"/redoc/redoc.standalone.js"}),
    ],
)
def test_pages_load_only_local_assets_without_a_key(
    keyed: TestClient, page: str, assets: set[str]
) -> None:
    response = keyed.get(page)
    assert response.status_code == 200, response.text
    html = response.text
    assert "cdn" not in html.lower() and "googleapis" not in html, html
    urls = _local_assets(html)
    assert assets <= set(urls), urls
    assert "/openapi.json" in urls
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        fetched = keyed.get(url)
        assert fetched.status_code == 200, (url, fetched.status_code)
        assert fetched.content, url


def test_assets_are_the_package_files(keyed: TestClient) -> None:
    static = assets_dir()
    for url, path in [
        ("/docs/swagger-ui-bundle.js", static / "swagger" / "swagger-ui-bundle.js"),
        ("/docs/swagger-ui.css", static / "swagger" / "swagger-ui.css"),
        ("/redoc/redoc.standalone.js", static / "redoc" / "redoc.standalone.js"),
        ("/docs/fastapi/favicon.png", static / "fastapi" / "favicon.png"),
    ]:
        response = keyed.get(url)
        assert response.status_code == 200, url
        assert response.content == path.read_bytes(), url
    assert "javascript" in keyed.get("/docs/swagger-ui-bundle.js").headers["content-type"]
    assert keyed.get("/docs/swagger-ui.css").headers["content-type"].startswith("text/css")
    # ReDoc's logo is asked of the page's own folder, not Redocly's CDN.
    assert b"cdn.redoc.ly" not in (static / "redoc" / "redoc.standalone.js").read_bytes()
    assert keyed.get("/redoc/logo-mini.svg").status_code == 200


def test_the_api_still_needs_its_key_and_unknown_assets_are_404(keyed: TestClient) -> None:
    assert keyed.get("/openapi.json").status_code == 200
    assert keyed.get("/docs/oauth2-redirect").status_code == 200
    assert keyed.post("/v1/search", json={"text": "a"}).status_code == 401
    for url in ("/docs/no-such.js", "/redoc/no-such.js", "/docs/../pyproject.toml"):
        assert keyed.get(url).status_code == 404, url
    # The documentation routes stay out of the schema.
    paths = keyed.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith(("/docs", "/redoc"))]
