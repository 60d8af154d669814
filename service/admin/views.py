"""The dashboard's routes: server-rendered pages under ``/admin``, small JSON endpoints the pages
poll for live progress, and form actions (each checked for its CSRF token).

Pages need a session (see :mod:`service.admin.session`): without one a page redirects to the
login page and a JSON endpoint or an action answers 401; a forged action (no or a wrong CSRF
token) answers 403 and changes nothing.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, cast
from urllib.parse import quote, unquote, urlsplit

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from PIL import Image, UnidentifiedImageError

from service.admin import cards, data
from service.admin.context import AdminComponents, AdminRuntime
from service.admin.session import (
    COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_TTL_S,
    LoginLimiter,
    Session,
    Signer,
    auth_required,
    check_login,
    csrf_ok,
    is_loopback,
    retry_after_header,
    session_admits,
    session_who,
)
from service.core.audit import audit
from service.core.errors import HTTP_STATUS, ClipsearchError, ErrorType, invalid, not_found
from service.core.schemas.api import Hit, SearchFilter
from service.search.planner import Query, SearchOptions

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(prefix="/admin", include_in_schema=False)

MODES = ("auto", "hybrid", "image", "caption", "description")
KINDS = ("", "image", "video_segment", "text")
THUMB_PX = 256
JOBS_PER_PAGE = 20


class Refused(Exception):
    """A request the dashboard turns away: ``response`` says how (redirect, 401, 403)."""

    def __init__(self, response: Response) -> None:
        self.response = response


# -- plumbing ------------------------------------------------------------------------------


def _runtime(request: Request) -> AdminRuntime:
    return cast(AdminRuntime, request.app.state.runtime)


def _signer(request: Request) -> Signer:
    return cast(Signer, request.app.state.admin_signer)


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def _wants_html(request: Request) -> bool:
    return request.method == "GET" and not request.url.path.startswith(
        ("/admin/api/", "/admin/media/")
    )


def _refuse(request: Request, status: int, message: str) -> Refused:
    if _wants_html(request) and status == 401:
        target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        return Refused(RedirectResponse(f"/admin/login?next={target}", status_code=303))
    if _wants_html(request):
        page = templates.TemplateResponse(
            request, "refused.html", {"message": message, "status": status}, status_code=status
        )
        return Refused(page)
    kind = "unauthorized" if status == 401 else "forbidden"
    return Refused(JSONResponse({"type": kind, "message": message}, status_code=status))


def _session(request: Request) -> tuple[Session, bool]:
    """The request's admitted session, and whether its cookie must be (re)set; raises
    :class:`Refused` for anyone the dashboard does not serve."""
    settings = _runtime(request).settings
    session = _signer(request).loads(request.cookies.get(COOKIE))
    if not auth_required(settings):
        if not is_loopback(_client(request)):
            raise _refuse(
                request,
                403,
                "no API keys are configured: the dashboard answers this machine (loopback) only; "
                "configure CLIPSEARCH_AUTH__API_KEYS with a key that has the admin scope",
            )
        if session is None:
            return Session.new(""), True
        return session, False
    if session_admits(settings, session, _client(request)):
        assert session is not None
        return session, False
    raise _refuse(request, 401, "log in with an API key that has the admin scope")


async def _action(request: Request) -> tuple[Session, dict[str, Any]]:
    """An admitted session for a state-changing request with its CSRF token (form field or
    header); the parsed form."""
    session, _ = _session(request)
    form = dict(await request.form())
    presented = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)
    if not csrf_ok(session, presented if isinstance(presented, str) else None):
        raise _refuse(request, 403, "missing or wrong CSRF token: reload the page and try again")
    return session, form


def _set_cookie(request: Request, response: Response, session: Session) -> None:
    response.set_cookie(
        COOKIE,
        _signer(request).dumps(session),
        max_age=SESSION_TTL_S,
        path="/admin",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def _render(
    request: Request,
    name: str,
    context: dict[str, Any],
    session: Session,
    fresh: bool,
    *,
    status_code: int = 200,
) -> Response:
    settings = _runtime(request).settings
    context = {
        "csrf": session.csrf,
        "csrf_field": CSRF_FIELD,
        "logged_in": bool(session.subject),
        "auth": auth_required(settings),
        "page": name.removesuffix(".html"),
        **context,
    }
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    if fresh:
        _set_cookie(request, response, session)
    return response


def _components(request: Request) -> AdminComponents:
    return _runtime(request).components


def _status(exc: ClipsearchError) -> int:
    return HTTP_STATUS[exc.type]


def _see_other(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def _safe_next(target: str | None) -> str:
    """Only a path of this dashboard: never another site (an open redirect)."""
    target = unquote(target or "")
    if target.startswith("/admin") and not target.startswith("//") and "\\" not in target:
        return target
    return "/admin/"


# -- login ---------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/admin/") -> Response:  # noqa: A002
    settings = _runtime(request).settings
    if not auth_required(settings):
        return _see_other("/admin/")
    session = _signer(request).loads(request.cookies.get(COOKIE))
    if session_admits(settings, session, _client(request)):
        return _see_other(_safe_next(next))
    pre = session or Session.new("")
    return _render(request, "login.html", {"next": _safe_next(next)}, pre, session is None)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    settings = _runtime(request).settings
    if not auth_required(settings):
        return _see_other("/admin/")
    form = dict(await request.form())
    pre = _signer(request).loads(request.cookies.get(COOKIE))
    target = _safe_next(str(form.get("next") or ""))
    if not csrf_ok(pre, str(form.get(CSRF_FIELD) or "")):
        return JSONResponse(
            {"type": "forbidden", "message": "missing or wrong CSRF token: reload the login page"},
            status_code=403,
        )
    assert pre is not None
    limiter = cast(LoginLimiter, request.app.state.admin_login_limiter)
    client = _client(request)
    wait_s = limiter.retry_after(client)
    if wait_s is not None:  # the key is not even checked: guessing gains nothing
        retry = retry_after_header(wait_s)
        log.warning("admin login from %s refused: too many failures, retry in %s s", client, retry)
        message = f"too many failed logins from this address; try again in {retry} s"
        context = {"next": target, "error": message}
        page = _render(request, "login.html", context, pre, False, status_code=429)
        page.headers["Retry-After"] = retry
        return page
    try:
        subject = check_login(settings, str(form.get("key") or ""))
    except ClipsearchError as exc:
        limiter.failed(client)
        log.warning("admin login refused from %s: %s", client, exc.message)
        context = {"next": target, "error": exc.message}
        return _render(request, "login.html", context, pre, False, status_code=_status(exc))
    limiter.succeeded(client)
    session = Session.new(subject)  # a new CSRF token for the logged-in session
    response = _see_other(target)
    _set_cookie(request, response, session)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    await _action(request)
    response = _see_other(
        "/admin/login" if auth_required(_runtime(request).settings) else "/admin/"
    )
    response.delete_cookie(COOKIE, path="/admin")
    return response


# -- overview ------------------------------------------------------------------------------


def _overview(request: Request) -> dict[str, Any]:
    runtime = _runtime(request)
    ok, detail = runtime.readiness()
    out: dict[str, Any] = {"ready": ok, "detail": detail, "models": [], "load": []}
    try:
        components = runtime.components
    except ClipsearchError:
        return out
    out["models"] = [c.as_dict() for c in cards.served(components.embedder)]
    out["load"] = data.encoder_load(components.registries)
    out["collection"] = components.collection
    return out


@router.get("/", response_class=HTMLResponse)
def overview_page(request: Request) -> Response:
    session, fresh = _session(request)
    return _render(request, "overview.html", {"o": _overview(request)}, session, fresh)


@router.get("/api/overview")
def overview_api(request: Request) -> JSONResponse:
    _session(request)
    return JSONResponse(_overview(request))


# -- collections ---------------------------------------------------------------------------


@router.get("/collections", response_class=HTMLResponse)
def collections_page(request: Request) -> Response:
    session, fresh = _session(request)
    components = _components(request)
    context = {"collections": data.collections(components), "served": components.collection}
    return _render(request, "collections.html", context, session, fresh)


# -- jobs ----------------------------------------------------------------------------------


def _jobs(request: Request, offset: int) -> dict[str, Any]:
    page, total = _components(request).jobs.list_jobs(limit=JOBS_PER_PAGE, offset=offset)
    return {
        "jobs": [data.progress(j) for j in page],
        "total": total,
        "offset": offset,
        "limit": JOBS_PER_PAGE,
    }


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(request: Request, offset: int = 0) -> Response:
    session, fresh = _session(request)
    context = _jobs(request, max(0, offset))
    return _render(request, "jobs.html", context, session, fresh)


@router.get("/api/jobs")
def jobs_api(request: Request, offset: int = 0) -> JSONResponse:
    _session(request)
    return JSONResponse(_jobs(request, max(0, offset)))


@router.post("/jobs/{job_id}/{verb}")
async def job_action(request: Request, job_id: str, verb: str) -> Response:
    session, _ = await _action(request)
    jobs = _components(request).jobs
    actions = {"cancel": jobs.cancel, "retry": jobs.retry, "retry-failed": jobs.retry_failed}
    if verb not in actions:
        raise not_found(f"no job action {verb!r}; one of {sorted(actions)}")
    name = "cancel_job" if verb == "cancel" else None
    done = _audited(request, session, name, {"id": job_id}, lambda: actions[verb](job_id))
    return done or _see_other("/admin/jobs")


def _audited(
    request: Request,
    session: Session,
    action: str | None,
    target: dict[str, Any],
    do: Callable[[], object],
) -> Response | None:
    """Run a form action, with its audit line when ``action`` names one (the REST operation
    id); the error page when it is refused, None when done."""
    result = ErrorType.internal.value
    try:
        do()
        result = "ok"
    except ClipsearchError as exc:
        result = exc.type.value
        return _error_page(request, exc)
    finally:
        if action is not None:
            who = session_who(_runtime(request).settings, session)
            audit(
                who=who,
                action=action,
                target=target,
                result=result,
                via="dashboard",
                client=_client(request),
            )
    return None


def _error_page(request: Request, exc: ClipsearchError) -> Response:
    session, _ = _session(request)
    context = {
        "message": exc.message,
        "status": _status(exc),
        "back": request.headers.get("referer"),
    }
    return _render(request, "refused.html", context, session, False, status_code=_status(exc))


# -- rollouts ------------------------------------------------------------------------------


def _rollout_view(record: dict[str, Any]) -> dict[str, Any]:
    view = data.progress(record)
    rows = data.comparison_rows(record.get("comparison"))
    view["comparison_rows"] = [r.as_dict() for r in rows]
    view["charts"] = data.charts(rows)
    view["active"] = record.get("state") in data.ACTIVE_STATES
    view["cancellable"] = record.get("state") in ("queued", "building", "ready")
    compared = (record.get("comparison") or {}).get("queries") or []
    view["compared"] = compared[:10]
    return view


def _rollouts(request: Request) -> dict[str, Any]:
    components = _components(request)
    reindexer = components.reindexer
    return {
        "rollouts": [_rollout_view(r) for r in reindexer.list()],
        "bundles": [c.as_dict() for c in cards.served(components.embedder)],
        "collections": components.store.names(),
        "served": components.collection,
        "golden": len(reindexer.golden(components.collection)),
    }


@router.get("/rollouts", response_class=HTMLResponse)
def rollouts_page(request: Request) -> Response:
    session, fresh = _session(request)
    return _render(request, "rollouts.html", _rollouts(request), session, fresh)


@router.get("/api/rollouts")
def rollouts_api(request: Request) -> JSONResponse:
    _session(request)
    found = _rollouts(request)
    # What the page polls: progress and state (the page reloads itself when a state changes).
    keep = ("id", "state", "phase", "percent", "done", "total", "rate_per_s", "eta", "error")
    return JSONResponse({"rollouts": [{k: r.get(k) for k in keep} for r in found["rollouts"]]})


@router.post("/rollouts")
async def start_rollout(request: Request) -> Response:
    session, form = await _action(request)
    components = _components(request)
    reindexer = components.reindexer
    collection = str(form.get("collection") or components.collection)
    bundle = str(form.get("bundle_path") or "").strip() or str(form.get("bundle") or "").strip()
    promote = str(form.get("promote") or "manual")

    def start() -> None:
        if promote not in ("manual", "auto"):
            raise invalid(f"promote must be 'manual' or 'auto', not {promote!r}")
        reindexer.start(collection, bundle=bundle or None, promote=promote)

    target = {"collection": collection, "bundle": bundle or None}
    done = _audited(request, session, "start_reindex", target, start)
    return done or _see_other("/admin/rollouts")


@router.post("/rollouts/{rollout_id}/{verb}")
async def rollout_action(request: Request, rollout_id: str, verb: str) -> Response:
    session, _ = await _action(request)
    reindexer = _components(request).reindexer
    actions = {"promote": reindexer.promote, "cancel": reindexer.cancel}
    if verb not in actions:
        raise not_found(f"no rollout action {verb!r}; one of {sorted(actions)}")
    name = f"{verb}_reindex"
    done = _audited(request, session, name, {"id": rollout_id}, lambda: actions[verb](rollout_id))
    return done or _see_other("/admin/rollouts")


@router.post("/rollback")
async def rollback(request: Request) -> Response:
    session, form = await _action(request)
    components = _components(request)
    collection = str(form.get("collection") or components.collection)
    target = {"collection": collection}
    done = _audited(
        request, session, "rollback", target, lambda: components.reindexer.rollback(collection)
    )
    return done or _see_other("/admin/rollouts")


@router.post("/golden")
async def set_golden(request: Request) -> Response:
    """The golden set as JSON: ``[{"text": ..., "expected": [ids]}, ...]`` (what the API
    takes), or the shorthand ``{"query text": [ids], ...}``."""
    session, form = await _action(request)
    components = _components(request)
    collection = str(form.get("collection") or components.collection)

    def store() -> None:
        try:
            raw = json.loads(str(form.get("golden") or ""))
        except json.JSONDecodeError as exc:
            raise invalid(f"the golden set is not valid JSON: {exc.msg}") from exc
        if isinstance(raw, dict):
            raw = [{"text": text, "expected": ids} for text, ids in raw.items()]
        if not isinstance(raw, list) or not raw:
            raise invalid('the golden set is [{"text": ..., "expected": [ids]}, ...]')
        components.reindexer.set_golden(collection, raw)

    done = _audited(request, session, "set_golden", {"collection": collection}, store)
    return done or _see_other("/admin/rollouts")


# -- search playground ---------------------------------------------------------------------


def _playground_context(request: Request, form: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "modes": MODES,
        "kinds": KINDS,
        "form": form or {"mode": "auto", "limit": 12},
        "collection": _components(request).collection,
    }


@router.get("/search", response_class=HTMLResponse)
def search_page(request: Request) -> Response:
    session, fresh = _session(request)
    return _render(request, "search.html", _playground_context(request), session, fresh)


def _media_link(hit: Hit, collection: str) -> str | None:
    """Where the page gets the hit's picture: a video segment's keyframe, or the image file."""
    if hit.thumbnail:
        name = hit.thumbnail.rsplit("/", 1)[-1]
        return f"/admin/media/thumbnails/{quote(collection)}/{quote(name)}"
    if hit.uri and hit.uri.startswith("file:") and hit.kind == "image":
        return f"/admin/media/file?uri={quote(hit.uri, safe='')}"
    return None


@router.post("/search", response_class=HTMLResponse)
async def search(
    request: Request,
    text: Annotated[str, Form()] = "",
    mode: Annotated[str, Form()] = "auto",
    limit: Annotated[int, Form(ge=1, le=100)] = 12,
    kind: Annotated[str, Form()] = "",
    tags: Annotated[str, Form()] = "",
    group_by: Annotated[str, Form()] = "",
    image: Annotated[UploadFile | None, File()] = None,
) -> Response:
    session, _ = await _action(request)
    components = _components(request)
    settings = _runtime(request).settings
    form = {"text": text, "mode": mode, "limit": limit, "kind": kind, "tags": tags,
            "group_by": group_by}  # fmt: skip
    context = _playground_context(request, form)
    try:
        upload = await image.read(settings.limits.max_upload_bytes + 1) if image else b""
        if len(upload) > settings.limits.max_upload_bytes:
            raise invalid(f"the image is over the {settings.limits.max_upload_bytes}-byte limit")
        if mode not in MODES:
            raise invalid(f"unknown mode {mode!r}; one of {list(MODES)}")
        if upload and text.strip():
            raise invalid("give a text or an image, not both")
        if not upload and not text.strip():
            raise invalid("type a query or choose an image")
        filters = {"kind": kind or None, "tags": [t.strip() for t in tags.split(",") if t.strip()]}
        search_filter = SearchFilter.model_validate(
            {k: v for k, v in filters.items() if v}
        ).as_filter()
        query = Query(image=upload) if upload else Query(text=text.strip())
        options = SearchOptions(
            mode=cast(Any, mode),
            limit=limit,
            filter=search_filter or None,
            group_by="video" if group_by == "video" else None,
        )
        result = components.search.search(query, options)
    except ClipsearchError as exc:
        context["error"] = exc.message
        return _render(request, "search.html", context, session, False, status_code=_status(exc))
    hits = []
    for h in result.hits:
        hit = Hit.from_payload(h.id, h.score, h.payload)
        hits.append({**hit.model_dump(), "media": _media_link(hit, components.collection)})
    context["result"] = {
        "hits": hits,
        "mode": result.mode,
        "model": result.model,
        "took_ms": round(result.took_ms, 1),
        "score_kind": result.score_kind,
        "channels": list(result.channels),
    }
    return _render(request, "search.html", context, session, False)


def _jpeg_thumbnail(path: Path) -> Response:
    try:
        with Image.open(path) as opened:
            opened.draft("RGB", (THUMB_PX, THUMB_PX))
            img = opened.convert("RGB")
            img.thumbnail((THUMB_PX, THUMB_PX))
            out = io.BytesIO()
            img.save(out, format="JPEG", quality=85)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise ClipsearchError(ErrorType.unsupported_media, f"cannot read {path.name}") from exc
    return Response(
        out.getvalue(), media_type="image/jpeg", headers={"Cache-Control": "private, max-age=600"}
    )


@router.get("/media/file")
def media_file(request: Request, uri: str) -> Response:
    """A small JPEG of an indexed image file: only under the configured source roots."""
    _session(request)
    settings = _runtime(request).settings
    parts = urlsplit(uri)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        raise invalid("only file: URIs of indexed images are shown here")
    path = Path(unquote(parts.path)).resolve()
    roots = [Path(r).resolve() for r in settings.sources.allowed_roots]
    if not any(path == r or r in path.parents for r in roots) or not path.is_file():
        raise not_found("no such indexed image under the allowed source roots")
    return _jpeg_thumbnail(path)


@router.get("/media/thumbnails/{collection}/{name}")
def media_thumbnail(request: Request, collection: str, name: str) -> Response:
    """A video segment's keyframe (the same file ``GET /v1/thumbnails/...`` serves)."""
    _session(request)
    settings = _runtime(request).settings
    folder = (settings.data_dir / "thumbnails").resolve()
    path = (folder / collection / name).resolve()
    if folder not in path.parents or not name.endswith(".jpg") or not path.is_file():
        raise not_found(f"no thumbnail {name} in {collection!r}")
    return _jpeg_thumbnail(path)
