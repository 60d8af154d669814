"""``/docs`` (Swagger UI) and ``/redoc`` with their JavaScript and CSS served by the gateway itself,
so the pages work without internet.

The assets come from the ``fastapi-standalone-docs`` package, whose release pins them (0.3.0:
swagger-ui-dist 5.33.1, redoc 2.5.4, with their licences) and whose ReDoc bundle asks for its logo
at ``<page>/logo-mini.svg`` instead of Redocly's CDN. Only the package's files are used: the pages
are FastAPI's own ``get_swagger_ui_html`` / ``get_redoc_html`` pointed at the local URLs (the
package's ``StandaloneDocs`` would patch FastAPI module-wide). No route here has an auth
dependency: the pages, their assets and ``/openapi.json`` load without an API key; "Try it out"
sends the key the user enters.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
REDOC_URL = "/redoc"


def assets_dir() -> Path:
    """The package's static folder (``swagger/``, ``redoc/``, ``fastapi/`` for the favicon)."""
    import fastapi_standalone_docs

    return Path(fastapi_standalone_docs.__file__).parent / "static"


def install_docs(app: FastAPI) -> None:
    """Serve the two documentation pages and their assets on ``app`` (created with
    ``docs_url=None, redoc_url=None``)."""
    static = assets_dir()
    oauth2_redirect = f"{DOCS_URL}/oauth2-redirect"

    def root(request: Request) -> str:
        return str(request.scope.get("root_path", ""))

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        base = root(request)
        return get_swagger_ui_html(
            openapi_url=f"{base}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{base}{oauth2_redirect}",
            swagger_js_url=f"{base}{DOCS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{base}{DOCS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{base}{DOCS_URL}/fastapi/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    @app.get(oauth2_redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        base = root(request)
        return get_redoc_html(
            openapi_url=f"{base}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{base}{REDOC_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{base}{REDOC_URL}/fastapi/favicon.png",
            with_google_fonts=False,  # fonts.googleapis.com is a CDN too
        )

    # After the routes (a route at /docs/oauth2-redirect wins over the mount below it), the
    # favicon's folder before the folder it sits in.
    for url in (DOCS_URL, REDOC_URL):
        app.mount(f"{url}/fastapi", StaticFiles(directory=static / "fastapi"))
    app.mount(DOCS_URL, StaticFiles(directory=static / "swagger"))
    app.mount(REDOC_URL, StaticFiles(directory=static / "redoc"))
