"""The dashboard through HTTP: login and the session cookie, CSRF on every action, the pages on
real data (ingested images, a job with a per-item error, a rollout refused), the playground's
thumbnails, and what a model's card says where an operator looks."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.core.config import Settings
from tests.service.admin.conftest import (
    ADMIN_KEY,
    CARD,
    SEARCH_KEY,
    carded_bundle,
    csrf_of,
    login,
    start,
    wait_jobs_done,
)
from tests.service.gateway.conftest import make_settings

PAGES = ("/admin/", "/admin/collections", "/admin/jobs", "/admin/rollouts", "/admin/search")


@pytest.fixture(scope="module")
def ingested(keyed: TestClient, keyed_settings: Settings) -> TestClient:
    """The test images ingested through the API (one broken file among them)."""
    keyed.cookies.clear()
    src = keyed_settings.sources.allowed_roots[0]
    accepted = keyed.post("/v1/ingest", json={"source": str(src)}, headers={"x-api-key": ADMIN_KEY})
    assert accepted.status_code == 202, accepted.text
    login(keyed)
    wait_jobs_done(keyed)
    return keyed


@pytest.fixture()
def anonymous(keyed: TestClient) -> Iterator[TestClient]:
    keyed.cookies.clear()
    yield keyed
    keyed.cookies.clear()


def test_without_a_session_pages_redirect_to_login_and_the_rest_is_refused(
    anonymous: TestClient,
) -> None:
    for path in PAGES:
        r = anonymous.get(path)
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/admin/login?next=")
    assert anonymous.get("/admin/api/jobs").status_code == 401
    assert anonymous.get("/admin/api/rollouts").status_code == 401
    assert anonymous.post("/admin/rollback", data={"csrf_token": "x"}).status_code == 401
    assert (
        anonymous.get("/admin/media/file", params={"uri": "file:///etc/hosts"}).status_code == 401
    )
    # An API key in a header is for the API: the dashboard wants its session.
    assert anonymous.get("/admin/api/jobs", headers={"x-api-key": ADMIN_KEY}).status_code == 401


def test_login_refuses_unknown_keys_keys_without_admin_and_posts_without_a_token(
    anonymous: TestClient,
) -> None:
    token = csrf_of(anonymous.get("/admin/login").text)
    wrong = anonymous.post("/admin/login", data={"key": "nope", "csrf_token": token})
    assert wrong.status_code == 401
    assert "unknown API key" in wrong.text
    weak = anonymous.post("/admin/login", data={"key": SEARCH_KEY, "csrf_token": token})
    assert weak.status_code == 403
    assert "admin" in weak.text
    forged = anonymous.post("/admin/login", data={"key": ADMIN_KEY})
    assert forged.status_code == 403
    assert anonymous.get("/admin/api/jobs").status_code == 401  # none of them logged in


def test_login_sets_a_signed_httponly_strict_cookie_and_never_shows_the_key(
    anonymous: TestClient,
) -> None:
    token = csrf_of(anonymous.get("/admin/login?next=/admin/jobs").text)
    done = anonymous.post(
        "/admin/login", data={"key": ADMIN_KEY, "csrf_token": token, "next": "/admin/jobs"}
    )
    assert done.status_code == 303
    assert done.headers["location"] == "/admin/jobs"
    cookie = done.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert "Path=/admin" in cookie
    assert ADMIN_KEY not in cookie
    for path in PAGES:
        page = anonymous.get(path)
        assert page.status_code == 200, (path, page.text[:300])
        assert ADMIN_KEY not in page.text
    # A new CSRF token for the logged-in session: the login page's one is not valid any more.
    assert csrf_of(anonymous.get("/admin/").text) != token
    # An open redirect is not on offer.
    anonymous.cookies.clear()
    token = csrf_of(anonymous.get("/admin/login").text)
    away = anonymous.post(
        "/admin/login", data={"key": ADMIN_KEY, "csrf_token": token, "next": "//evil.example/"}
    )
    assert away.headers["location"] == "/admin/"


def test_a_tampered_cookie_is_no_session(anonymous: TestClient) -> None:
    login(anonymous)
    value = anonymous.cookies.get("clipsearch_admin")
    assert value
    payload, _, signature = value.rpartition(".")
    anonymous.cookies.clear()
    anonymous.cookies.set("clipsearch_admin", payload[:-2] + "xx." + signature, path="/admin")
    assert anonymous.get("/admin/api/jobs").status_code == 401


def test_forged_actions_are_refused_and_change_nothing(ingested: TestClient) -> None:
    client = ingested
    before = client.get("/v1/collections", headers={"x-api-key": ADMIN_KEY}).json()
    jobs = client.get("/admin/api/jobs").json()["jobs"]
    for path, data in [
        ("/admin/rollback", {}),
        ("/admin/rollback", {"csrf_token": "not-the-token"}),
        ("/admin/rollouts", {"bundle": ""}),
        (f"/admin/jobs/{jobs[0]['id']}/retry-failed", {}),
        ("/admin/search", {"text": "red"}),
        ("/admin/golden", {"golden": '{"red": ["x"]}'}),
        ("/admin/logout", {}),
    ]:
        r = client.post(path, data=data)
        assert r.status_code == 403, (path, r.text)
        assert "CSRF" in r.text
    assert client.get("/v1/collections", headers={"x-api-key": ADMIN_KEY}).json() == before
    assert client.get("/admin/api/rollouts").json() == {"rollouts": []}
    assert client.get("/admin/api/jobs").json()["total"] == len(jobs)
    assert client.get("/admin/api/jobs").status_code == 200  # still logged in


def test_jobs_page_shows_progress_counts_and_item_errors(ingested: TestClient) -> None:
    [job] = ingested.get("/admin/api/jobs").json()["jobs"]
    assert job["state"] == "completed"
    assert job["percent"] == 100.0
    assert job["failed"] == 1
    page = ingested.get("/admin/jobs").text
    assert f'data-id="{job["id"]}"' in page
    assert 'aria-valuenow="100.0"' in page
    assert "broken.png" in page  # the per-item error, by item
    assert "Retry failed items" in page


def test_retry_failed_items_from_the_jobs_page(ingested: TestClient) -> None:
    token = csrf_of(ingested.get("/admin/jobs").text)
    [job] = ingested.get("/admin/api/jobs").json()["jobs"][-1:]
    r = ingested.post(f"/admin/jobs/{job['id']}/retry-failed", data={"csrf_token": token})
    assert r.status_code == 303, r.text
    jobs = wait_jobs_done(ingested)
    assert len(jobs) == 2  # the retry is a job of its own, shown first
    unknown = ingested.post("/admin/jobs/no-such-job/cancel", data={"csrf_token": token})
    assert unknown.status_code == 404


def test_playground_finds_the_images_with_thumbnails(ingested: TestClient) -> None:
    token = csrf_of(ingested.get("/admin/search").text)
    r = ingested.post("/admin/search", data={"text": "red", "mode": "image", "csrf_token": token})
    assert r.status_code == 200, r.text
    assert "3 hits" in r.text
    sources = re.findall(r'<img src="([^"]+)"', r.text)
    assert len(sources) == 3
    for src in sources:
        thumb = ingested.get(src.replace("&amp;", "&"))
        assert thumb.status_code == 200
        assert thumb.headers["content-type"] == "image/jpeg"
        Image.open(io.BytesIO(thumb.content)).verify()
    assert any("red.png" in unquote(s) for s in sources)


def test_playground_searches_by_uploaded_image_with_filters(ingested: TestClient) -> None:
    token = csrf_of(ingested.get("/admin/search").text)
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (30, 60, 220)).save(buf, format="PNG")
    r = ingested.post(
        "/admin/search",
        data={"mode": "image", "kind": "image", "limit": "2", "csrf_token": token},
        files={"image": ("q.png", buf.getvalue(), "image/png")},
    )
    assert r.status_code == 200, r.text
    assert "2 hits" in r.text
    assert r.text.index("blue.png") < r.text.index("</figure>")  # the blue image comes first


def test_playground_bad_input_is_a_clear_4xx(ingested: TestClient) -> None:
    token = csrf_of(ingested.get("/admin/search").text)
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    cases = [
        ({"text": "", "csrf_token": token}, None, "type a query"),
        ({"text": "red", "csrf_token": token}, ("q.png", png.getvalue(), "image/png"), "not both"),
        ({"text": "red", "mode": "psychic", "csrf_token": token}, None, "unknown mode"),
        ({"text": "red", "kind": "hologram", "csrf_token": token}, None, "unknown kind"),
        ({"csrf_token": token}, ("q.png", b"not an image", "image/png"), ""),
    ]
    for data, upload, message in cases:
        files = {"image": upload} if upload else None
        r = ingested.post("/admin/search", data=data, files=files)
        assert 400 <= r.status_code < 500, (data, r.status_code, r.text[:300])
        assert message in r.text
    assert ingested.get("/admin/api/jobs").status_code == 200  # the session survived


def test_media_is_served_only_from_the_source_roots(ingested: TestClient, tmp_path: Path) -> None:
    outside = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(outside)
    for uri in (outside.as_uri(), "file:///etc/passwd", "http://example.com/a.png"):
        r = ingested.get("/admin/media/file", params={"uri": uri})
        assert r.status_code in (400, 404), uri
    assert ingested.get("/admin/media/thumbnails/media/..%2F..%2Fx.jpg").status_code == 404


def test_rollouts_page_refuses_an_unknown_bundle_and_starts_nothing(ingested: TestClient) -> None:
    token = csrf_of(ingested.get("/admin/rollouts").text)
    r = ingested.post("/admin/rollouts", data={"bundle_path": "no-such-model", "csrf_token": token})
    assert 400 <= r.status_code < 500, r.text
    assert "no-such-model" in r.text
    nothing = ingested.post("/admin/rollback", data={"csrf_token": token})
    assert nothing.status_code == 409, nothing.text  # nothing to return to
    assert ingested.get("/admin/api/rollouts").json() == {"rollouts": []}


def test_the_model_card_shows_where_an_operator_looks(
    ingested: TestClient, keyed_settings: Settings
) -> None:
    ready = ingested.get("/health/ready").json()
    assert ready["models"] == [
        {"bundle": "tiny-test@0.1.0", "default": True, **CARD},
    ]
    [listed] = ingested.get("/v1/collections", headers={"x-api-key": SEARCH_KEY}).json()[
        "collections"
    ]
    assert listed["domain"] == CARD["domain"]
    assert listed["intended_use"] == CARD["intended_use"]
    overview = ingested.get("/admin/").text
    assert CARD["domain"] in overview
    assert CARD["intended_use"] in overview
    assert CARD["domain"] in ingested.get("/admin/collections").text
    assert CARD["domain"] in ingested.get("/admin/rollouts").text  # the bundle picker


def test_overview_shows_encoder_queues_and_throughput(ingested: TestClient) -> None:
    body = ingested.get("/admin/api/overview").json()
    assert body["ready"] is True
    towers = {(row["bundle"], row["tower"]) for row in body["load"]}
    assert ("tiny-test@0.1.0", "image") in towers
    assert all(set(row["queued"]) <= {"interactive", "bulk"} for row in body["load"])
    page = ingested.get("/admin/").text
    assert 'id="load"' in page
    assert "tiny-test@0.1.0" in page


def test_stored_text_is_escaped_on_the_page(ingested: TestClient) -> None:
    evil = "<script>alert('x')</script><img src=x onerror=alert(1)>"
    lines = [{"id": "evil-doc", "description": evil}]
    accepted = ingested.post(
        "/v1/ingest", json={"source": {"manifest_lines": lines}}, headers={"x-api-key": ADMIN_KEY}
    )
    assert accepted.status_code == 202, accepted.text
    wait_jobs_done(ingested)
    token = csrf_of(ingested.get("/admin/search").text)
    page = ingested.post(
        "/admin/search", data={"text": "alert", "mode": "description", "csrf_token": token}
    ).text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page
    assert "<script>alert" not in page
    assert "onerror=alert(1)>" not in page


def test_start_up_log_names_each_models_domain(
    tmp_path: Path, tiny_bundle_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bundle = carded_bundle(tiny_bundle_dir, tmp_path / "bundle")
    with caplog.at_level(logging.INFO, logger="service.gateway.app"):
        for _ in start(make_settings(tmp_path, bundle)):
            pass
    lines = [r.getMessage() for r in caplog.records if r.name == "service.gateway.app"]
    assert any(
        line.startswith("model tiny-test@0.1.0")
        and CARD["domain"] in line
        and CARD["intended_use"] in line
        for line in lines
    ), lines


def test_without_keys_the_dashboard_is_for_loopback_only(
    tmp_path: Path, tiny_bundle_dir: Path
) -> None:
    settings = make_settings(tmp_path, tiny_bundle_dir)
    for client in start(settings):
        page = client.get("/admin/")
        assert page.status_code == 200
        assert "HttpOnly" in page.headers["set-cookie"]  # a session, for its CSRF token
        assert client.get("/admin/login").status_code == 303  # nothing to log in with
        forged = client.post("/admin/rollback", data={})
        assert forged.status_code == 403
        token = csrf_of(client.get("/admin/rollouts").text)
        assert client.post("/admin/rollback", data={"csrf_token": token}).status_code == 409
    for client in start(settings.model_copy(update={"data_dir": tmp_path / "d2"}), ("10.1.2.3", 4)):
        for path in (*PAGES, "/admin/api/jobs"):
            refused = client.get(path)
            assert refused.status_code == 403, path
            assert "loopback" in refused.text


def test_playground_shows_video_segments_with_timestamps_and_keyframes(
    tmp_path: Path, tiny_bundle_dir: Path
) -> None:
    from tests.indexer.pipeline.test_video import make_video

    settings = make_settings(tmp_path, tiny_bundle_dir)
    make_video(tmp_path / "src" / "shots.mp4")
    for client in start(settings):
        assert client.post("/v1/ingest", json={"source": str(tmp_path / "src")}).status_code == 202
        [job] = wait_jobs_done(client)
        assert job["state"] == "completed", job
        token = csrf_of(client.get("/admin/search").text)
        page = client.post(
            "/admin/search",
            data={"text": "red", "mode": "image", "kind": "video_segment", "csrf_token": token},
        ).text
        times = re.findall(r'<span class="time">([^<]+)</span>', page)
        assert times, page[-2000:]
        assert all(re.fullmatch(r"\d+:\d\d\.\d\d\u2013\d+:\d\d\.\d\d", t) for t in times), times
        keyframes = re.findall(r'<img src="(/admin/media/thumbnails/[^"]+)"', page)
        assert len(keyframes) == len(times)
        shown = client.get(keyframes[0])
        assert shown.status_code == 200
        assert shown.headers["content-type"] == "image/jpeg"
        grouped = client.post(
            "/admin/search",
            data={"text": "red", "mode": "image", "group_by": "video", "csrf_token": token},
        ).text
        assert len(re.findall(r'<span class="time">', grouped)) == 1  # the best segment only
