"""The dashboard's session: a signed cookie, and the CSRF token that every form carries.

The admin key is typed once on the login page; the cookie then holds a signed record of *which*
key was used (its sha256, never the key), a random CSRF token and an expiry. HttpOnly (page
scripts cannot read it), SameSite=Strict (another site's page cannot send it), ``Secure`` when
the request came over HTTPS. The signing key is random per process: a restart logs everyone out,
and nothing secret is stored anywhere.

Every request re-checks that the key behind the session is still configured with the ``admin``
scope for every collection (a key scoped to some, ``admin@alpha``, uses the API: the dashboard
shows and acts on all collections), so removing a key ends its sessions. Without API keys the
dashboard, like the API, is for this machine only: it answers loopback peers and no one else.

Failed logins are rate-limited per client address (:class:`LoginLimiter`): a token bucket of
``LOGIN_BURST`` failures refilled at ``LOGIN_FAILURES_PER_MINUTE``; an address whose bucket is
empty gets 429 with ``Retry-After`` for every login attempt, the right key included (it is not
even checked), so guessing keys costs minutes per handful. The address is the TCP peer's (behind
a reverse proxy, run uvicorn with ``--forwarded-allow-ips`` so that it is the client's).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from service.core.config import Settings
from service.core.errors import ClipsearchError, ErrorType
from service.core.keys import digest as key_digest
from service.core.keys import find_key

COOKIE = "clipsearch_admin"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SESSION_TTL_S = 12 * 3600
LOGIN_BURST = 5  # failed logins an address may make at once
LOGIN_FAILURES_PER_MINUTE = 5.0  # and then this many a minute
LOGIN_MAX_CLIENTS = 10_000  # addresses remembered; the least recently failing is forgotten


def key_id(key: str) -> str:
    """What a session records of the key: its sha256 (the key itself is never stored), the
    digest that the settings keep of it."""
    return key_digest(key)


def session_who(settings: Settings, session: Session) -> str:
    """The audit trail's name for a session's key (``loopback`` for a keyless session)."""
    if not session.subject:
        return "loopback"
    for key in settings.auth.api_keys:
        if hmac.compare_digest(key.digest, session.subject):
            return key.id
    return "unknown-key"


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
    must be configured and carry the ``admin`` scope, for every collection: the dashboard shows
    and acts on all of them, so a key scoped to some (``admin@alpha``) uses the API instead."""
    presented = presented.strip()
    if not presented:
        raise ClipsearchError(ErrorType.unauthorized, "enter an API key with the admin scope")
    key = find_key(settings.auth.api_keys, presented)
    if key is None:
        raise ClipsearchError(ErrorType.unauthorized, "unknown API key")
    if not key.everywhere("admin"):
        raise ClipsearchError(
            ErrorType.forbidden, "this key lacks the 'admin' scope for every collection"
        )
    return key.digest


def session_admits(settings: Settings, session: Session | None, client_host: str | None) -> bool:
    """Whether ``session`` (from a valid cookie) may use the dashboard now."""
    if not auth_required(settings):
        return is_loopback(client_host)
    if session is None or not session.subject:
        return False
    return any(
        hmac.compare_digest(key.digest, session.subject) and key.everywhere("admin")
        for key in settings.auth.api_keys
    )


def csrf_ok(session: Session | None, presented: str | None) -> bool:
    return bool(session and presented and hmac.compare_digest(session.csrf, presented))


class LoginLimiter:
    """Failed dashboard logins per client address, as token buckets: each address holds up to
    ``burst`` tokens, a failure takes one, and they come back at ``per_minute`` a minute. Memory
    is bounded: at most ``max_clients`` addresses are remembered (a forgotten one starts full,
    as an address that never failed). Thread-safe."""

    def __init__(
        self,
        *,
        burst: int = LOGIN_BURST,
        per_minute: float = LOGIN_FAILURES_PER_MINUTE,
        max_clients: int = LOGIN_MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = float(burst)
        self.rate = per_minute / 60.0  # tokens per second
        self.max_clients = max_clients
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def retry_after(self, client: str | None) -> float | None:
        """Seconds until ``client`` may try to log in again; None when it may now."""
        with self._lock:
            tokens = self._tokens(client or "", self.clock())
        if tokens >= 1.0:
            return None
        return (1.0 - tokens) / self.rate

    def failed(self, client: str | None) -> None:
        key = client or ""
        with self._lock:
            now = self.clock()
            tokens = self._tokens(key, now)
            self._buckets[key] = (max(0.0, tokens - 1.0), now)
            self._buckets.move_to_end(key)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)

    def succeeded(self, client: str | None) -> None:
        with self._lock:
            self._buckets.pop(client or "", None)

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, key: str, now: float) -> float:
        entry = self._buckets.get(key)
        if entry is None:
            return self.burst
        tokens, at = entry
        return min(self.burst, tokens + max(0.0, now - at) * self.rate)


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` in whole seconds, never 0 while refused."""
    return str(max(1, math.ceil(seconds)))
