"""The session cookie's signature and expiry, the login rule, and who the dashboard admits."""

from __future__ import annotations

import base64

import pytest

from service.admin.session import (
    Session,
    Signer,
    check_login,
    csrf_ok,
    is_loopback,
    key_id,
    session_admits,
)
from service.core.config import AuthSettings, Settings
from service.core.errors import ClipsearchError, ErrorType


def _settings(**keys: frozenset[str]) -> Settings:
    return Settings(auth=AuthSettings(api_keys=keys))  # type: ignore[arg-type]


def test_a_signed_session_reads_back_and_nothing_else_does() -> None:
    signer = Signer()
    session = Session.new(key_id("s3cret-admin-key"), now=1_000.0)
    cookie = signer.dumps(session)
    expected = Session(session.subject, session.csrf, 1_000.0 + 12 * 3600)
    assert signer.loads(cookie, now=1_001.0) == expected
    body = base64.urlsafe_b64decode(cookie.split(".")[0] + "==").decode()
    assert key_id("s3cret-admin-key") in body
    assert "s3cret-admin-key" not in body  # its hash, never the key
    payload, _, signature = cookie.rpartition(".")
    # Another first character (its 6 bits are all signature; the last one's may be padding).
    forged = ("B" if signature[0] == "A" else "A") + signature[1:]
    assert signer.loads(payload + "." + forged, now=1_001.0) is None
    assert signer.loads(payload[:-1] + "." + signature, now=1_001.0) is None
    assert Signer().loads(cookie, now=1_001.0) is None  # another process's key
    assert signer.loads(cookie, now=session.expires + 1) is None  # expired
    for junk in (None, "", "no-dot", ".", "a.b.c"):
        assert signer.loads(junk) is None


def test_login_needs_a_configured_key_with_the_admin_scope() -> None:
    settings = _settings(boss=frozenset({"admin"}), reader=frozenset({"search"}))
    assert check_login(settings, " boss ") == key_id("boss")
    for key, kind in (("reader", ErrorType.forbidden), ("nobody", ErrorType.unauthorized),
                      ("", ErrorType.unauthorized)):  # fmt: skip
        with pytest.raises(ClipsearchError) as err:
            check_login(settings, key)
        assert err.value.type == kind


def test_a_session_ends_when_its_key_is_removed_or_loses_admin() -> None:
    session = Session.new(key_id("boss"))
    assert session_admits(_settings(boss=frozenset({"admin"})), session, "203.0.113.9")
    assert not session_admits(_settings(other=frozenset({"admin"})), session, "127.0.0.1")
    assert not session_admits(_settings(boss=frozenset({"search"})), session, "127.0.0.1")
    assert not session_admits(_settings(boss=frozenset({"admin"})), None, "127.0.0.1")
    assert not session_admits(_settings(boss=frozenset({"admin"})), Session.new(""), "127.0.0.1")


def test_without_keys_only_loopback_peers_are_admitted() -> None:
    keyless = Settings()
    for host in ("127.0.0.1", "127.8.9.1", "::1", "localhost"):
        assert is_loopback(host)
        assert session_admits(keyless, None, host)
    for host in (None, "", "10.0.0.1", "192.168.1.2", "::ffff:8.8.8.8", "testclient", "0.0.0.0"):
        assert not session_admits(keyless, None, host), host


def test_csrf_token_must_match_the_sessions() -> None:
    session = Session.new("")
    assert csrf_ok(session, session.csrf)
    assert not csrf_ok(session, None)
    assert not csrf_ok(session, "")
    assert not csrf_ok(session, session.csrf[:-1])
    assert not csrf_ok(None, session.csrf)
    assert not csrf_ok(session, Session.new("").csrf)
