"""Who may do what to which collection, for REST and gRPC alike.

A call names a scope (``search``, ``ingest``, ``admin``) and acts on one collection: the one it
names (a ``collection`` path or query parameter, or JSON field) or else the configured one.
:func:`authorize` admits it when the caller's key holds the scope for that collection
(``search`` for all, or ``search@alpha``); then the key's rate limit is charged.

A key with no scope at all on the collection is told the collection does not exist — the very
404 / NOT_FOUND of an unknown collection, so a tenant cannot learn which other collections there
are. A key that sees the collection but lacks the scope gets 403 as before. Without configured
keys there is no auth (the server then binds loopback only, or ``--allow-anonymous``): anonymous
calls are rate-limited per client address, except from loopback, which is this machine's own CLI
and dashboard.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from service.admin.session import is_loopback
from service.core.config import Settings
from service.core.errors import ClipsearchError, ErrorType, not_found
from service.core.keys import ApiKey, Scope, find_key
from service.gateway.ratelimit import RateLimiter

ANONYMOUS = "anonymous"
# What the audit trail records (REST operation ids; gRPC and the dashboard use the same names).
AUDITED = frozenset(
    {
        "start_reindex",
        "promote_reindex",
        "cancel_reindex",
        "rollback",
        "set_golden",
        "delete_item",
        "delete_video",
        "cancel_job",
        "create_collection",
        "delete_collection",
    }
)

# Calls that list across collections: admitted with the scope on any collection, they show only
# what the key sees.
ACROSS_COLLECTIONS = frozenset({"list_collections", "list_reindexes", "list_jobs"})


@dataclass(frozen=True)
class Principal:
    """The caller of an admitted call: its key (None without auth) and its address."""

    key: ApiKey | None
    client: str | None
    collection: str | None = None  # what the call acts on; None for a call over all of them

    @property
    def id(self) -> str:
        return self.key.id if self.key is not None else ANONYMOUS

    def sees(self, collection: str) -> bool:
        return self.key is None or self.key.sees(collection)


def may_ingest(principal: Principal, collection: str) -> bool:
    """Whether the caller may see ``collection``'s jobs: what reading one of them admits."""
    return principal.key is None or principal.key.allows("ingest", collection)


def jobs_filter(
    principal: Principal, named: str | None, default: str
) -> Callable[[str | None], bool]:
    """Which jobs a listing shows (REST ``GET /v1/jobs``, gRPC ``ListJobs``): ``named``'s, else
    those of every collection the caller may ingest into (a job of no recorded collection is
    ``default``'s). The unknown-collection error for a ``named`` the key cannot see, forbidden
    for one it sees without the ingest scope."""
    if named and not principal.sees(named):
        raise unknown_collection(named)  # the key's view: there is no such collection
    if named and not may_ingest(principal, named):
        raise ClipsearchError(
            ErrorType.forbidden, f"this key lacks the 'ingest' scope on {named!r}"
        )

    def where(owner: str | None) -> bool:
        owner = owner or default
        return owner == named if named else may_ingest(principal, owner)

    return where


def unknown_collection(name: str) -> ClipsearchError:
    """The error of a collection that does not exist, word for word as the store says it."""
    return not_found(f"collection {name!r} does not exist")


def authorize(
    settings: Settings,
    presented: str | None,
    scope: Scope,
    collection: str | None = None,
    *,
    limiter: RateLimiter | None = None,
    client: str | None = None,
    any_collection: bool = False,
) -> Principal:
    """Admit a call with ``scope`` on ``collection`` (default: the configured one; with
    ``any_collection``, a call that lists across collections and shows only those the key sees)
    and charge its rate limit; raises unauthorized, not_found, forbidden or overloaded."""
    target = None if any_collection else collection or settings.collection
    keys = settings.auth.api_keys
    key: ApiKey | None = None
    if keys:
        if not presented:
            raise ClipsearchError(ErrorType.unauthorized, "an API key is required")
        key = find_key(keys, presented)
        if key is None:
            raise ClipsearchError(ErrorType.unauthorized, "unknown API key")
        if target is None:
            if not key.has_scope(scope):
                raise ClipsearchError(ErrorType.forbidden, f"this key lacks the {scope!r} scope")
        elif not key.sees(target):
            raise unknown_collection(target)
        elif not key.allows(scope, target):
            raise ClipsearchError(
                ErrorType.forbidden, f"this key lacks the {scope!r} scope on {target!r}"
            )
    principal = Principal(key, client, target)
    if limiter is not None:
        kind = "search" if scope == "search" else "write"
        if key is not None:
            limiter.check(f"key:{key.digest}:{kind}", settings.auth.rate(scope), f"key {key.id}")
        elif client and not is_loopback(client):
            limiter.check(f"addr:{client}:{kind}", settings.auth.rate(scope), f"address {client}")
    return principal


def identify(settings: Settings, presented: str | None) -> str:
    """Who a caller is for the audit trail, admitted or not: the key's name or hash prefix,
    ``anonymous`` without auth, ``unknown-key`` for a key that is not configured (or none)."""
    if not settings.auth.api_keys:
        return ANONYMOUS
    key = find_key(settings.auth.api_keys, presented)
    return key.id if key is not None else "unknown-key"
