"""The dashboard's session: a signed cookie, and the CSRF token that every form carries.

The admin key is typed once on the login page; the cookie then holds a signed record of *which*
key was used (its sha256, never the key), a random CSRF token and an expiry. HttpOnly (page
scripts cannot read it), SameSite=Strict (another site's page cannot send it), ``Secure`` when
the request came over HTTPS. The signing key is random per process: a restart logs everyone out,
and nothing secret is stored anywhere.

Every request re-checks that the key behind the session is still configured with the ``admin``
scope, so removing a key ends its sessions. Without API keys the dashboard, like the API, is for
this machine only: it answers loopback peers and no one else.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import time
from dataclasses import dataclass

from service.core.config import Settings
from service.core.errors import ClipsearchError, ErrorType

COOKIE = "clipsearch_admin"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SESSION_TTL_S = 12 * 3600


def key_id(key: str) -> str:
    """What a session records of the key: its sha256 (the key itself is never stored)."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    subject: str  # key_id of the admin key, or "" for a keyless loopback session
    csrf: str
    expires: float

    @classmethod
    def new(cls, subject: str, now: float | None = None) -> Session:
        now = time.time() if now is None else now
        return cls(subject, secrets.token_urlsafe(32), now + SESSION_TTL_S)


class Signer:
    """Signs and reads session cookies with an HMAC-SHA256 key made at start-up."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)

    def dumps(self, session: Session) -> str:
        body = json.dumps(
            {"sub": session.subject, "csrf": session.csrf, "exp": int(session.expires)},
            separators=(",", ":"),
        ).encode()
        payload = base64.urlsafe_b64encode(body).decode().rstrip("=")
        return f"{payload}.{self._sign(payload)}"

    def loads(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session in ``cookie``; None when absent, forged, malformed or expired."""
        if not cookie or "." not in cookie:
            return None
        payload, _, signature = cookie.rpartition(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            raw = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            session = Session(str(raw["sub"]), str(raw["csrf"]), float(raw["exp"]))
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires < (time.time() if now is None else now):
            return None
        return session

    def _sign(self, payload: str) -> str:
        digest = hmac.new(self._secret, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def auth_required(settings: Settings) -> bool:
    return bool(settings.auth.api_keys)


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def check_login(settings: Settings, presented: str) -> str:
    """The session subject for an admin key typed on the login page; the API's rule: the key
    must be configured and carry the ``admin`` scope."""
    presented = presented.strip()
    if not presented:
        raise ClipsearchError(ErrorType.unauthorized, "enter an API key with the admin scope")
    for key, scopes in settings.auth.api_keys.items():
        if hmac.compare_digest(key.encode(), presented.encode()):
            if "admin" not in scopes:
                raise ClipsearchError(ErrorType.forbidden, "this key lacks the 'admin' scope")
            return key_id(key)
    raise ClipsearchError(ErrorType.unauthorized, "unknown API key")


def session_admits(settings: Settings, session: Session | None, client_host: str | None) -> bool:
    """Whether ``session`` (from a valid cookie) may use the dashboard now."""
    if not auth_required(settings):
        return is_loopback(client_host)
    if session is None or not session.subject:
        return False
    return any(
        hmac.compare_digest(key_id(key), session.subject) and "admin" in scopes
        for key, scopes in settings.auth.api_keys.items()
    )


def csrf_ok(session: Session | None, presented: str | None) -> bool:
    return bool(session and presented and hmac.compare_digest(session.csrf, presented))
