"""The admin dashboard at ``/admin``: server-rendered pages (Jinja2), a little local JS that
polls small JSON endpoints for live progress, every asset served from this package (no CDN: it
works air-gapped).

``admin`` is a layer below ``gateway``: the gateway mounts it (:func:`mount_dashboard`) and hands
it its runtime through ``app.state``; the dashboard reads the components through the protocols in
:mod:`service.admin.context`, never the gateway's modules.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from service.admin.session import LoginLimiter, Signer
from service.admin.views import Refused, router

STATIC = Path(__file__).parent / "static"


def mount_dashboard(
    app: FastAPI, signer: Signer | None = None, limiter: LoginLimiter | None = None
) -> None:
    """Serve the dashboard on ``app`` at ``/admin`` (``app.state.runtime`` must be set)."""
    app.state.admin_signer = signer or Signer()
    app.state.admin_login_limiter = limiter or LoginLimiter()

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refused)
        return exc.response

    app.add_exception_handler(Refused, refused)
    app.include_router(router)
    app.mount("/admin/static", StaticFiles(directory=STATIC), name="admin-static")


__all__ = ["mount_dashboard"]
