"""API keys: the grammar of ``CLIPSEARCH_AUTH__API_KEYS`` and its file, and the hashed record of
each key that is all a process keeps.

An entry is ``key:scope+scope[:name]``; a scope is ``search``, ``ingest`` or ``admin``, alone (every
collection, as keys were before collections) or ``scope@collection`` (that collection only):
``k3y:search@alpha+ingest@alpha+admin:alpha-bot``. The optional name is what logs and the audit
trail call the key; without one it is ``sha256:`` and the first 12 hex digits of the key's hash.

The plain key is hashed (SHA-256) as the entry is parsed and then dropped: settings, logs and
error messages only ever see the hash, and a presented key is hashed and compared with every
configured hash by :func:`hmac.compare_digest`. Error messages name the setting and the entry's
position, never its text (an entry with a typo in it is still a secret).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict

Scope = Literal["search", "ingest", "admin"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
COLLECTION_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ID_HEX_CHARS = 12
ENV = "CLIPSEARCH_AUTH__API_KEYS"
FILE_ENV = "CLIPSEARCH_AUTH__API_KEYS_FILE"


def digest(key: str) -> str:
    """The hex SHA-256 of a key: what is stored and compared instead of the key."""
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKey(BaseModel):
    """One configured key, without the key: its hash, its name, its grants (``search`` = search
    on every collection, ``search@alpha`` = on ``alpha`` only)."""

    model_config = ConfigDict(frozen=True)

    id: str
    digest: str
    grants: frozenset[str]

    def allows(self, scope: Scope, collection: str) -> bool:
        return scope in self.grants or f"{scope}@{collection}" in self.grants

    def sees(self, collection: str) -> bool:
        """Whether the key has any scope on ``collection``: if not, the collection does not exist
        as far as this key can tell."""
        return any(self.allows(scope, collection) for scope in SCOPES)

    def has_scope(self, scope: Scope) -> bool:
        """Whether the key may use ``scope`` on at least one collection."""
        return any(g == scope or g.startswith(f"{scope}@") for g in self.grants)

    def everywhere(self, scope: Scope) -> bool:
        """Whether the key holds ``scope`` for every collection (an unscoped grant)."""
        return scope in self.grants


def find_key(keys: Sequence[ApiKey], presented: str | None) -> ApiKey | None:
    """The configured key that ``presented`` is, comparing its hash with every configured hash in
    constant time (no early exit: how long this takes says nothing about which key matched)."""
    if not presented:
        return None
    wanted = digest(presented).encode()
    found = None
    for key in keys:
        if hmac.compare_digest(key.digest.encode(), wanted):
            found = key
    return found


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def parse_entry(entry: str, where: str) -> tuple[str, ApiKey]:
    """``key:scopes[:name]`` as the plain key (for a caller that must present it, the container
    probe) and its record. ``where`` names the entry in errors: they never quote it."""
    key, sep, rest = entry.strip().partition(":")
    scopes, _, name = rest.partition(":")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"{where} must look like key:scope1+scope2 (the entry is not shown)")
    grants: set[str] = set()
    for i, raw in enumerate((s.strip() for s in scopes.split("+")), start=1):
        scope, at, collection = raw.partition("@")
        if scope not in SCOPES:
            raise ValueError(
                f"{where}: its {_ordinal(i)} scope is not one of {', '.join(SCOPES)} "
                "(each optionally @collection)"
            )
        if at and not COLLECTION_NAME.match(collection):
            raise ValueError(
                f"{where}: its {_ordinal(i)} scope names no valid collection after '@' "
                "(lower-case letters, digits, '-' and '_')"
            )
        grants.add(raw)
    hashed = digest(key)
    name = name.strip()
    if name and not KEY_NAME.match(name):
        raise ValueError(f"{where}: its name must be letters, digits, '.', '-' or '_'")
    return key, ApiKey(id=name or f"sha256:{hashed[:ID_HEX_CHARS]}", digest=hashed, grants=grants)


def _entries(text: str, *, lines: bool) -> Iterator[tuple[int, str]]:
    """Numbered entries: one a line in a file (``#`` starts a comment line), comma-separated in
    the environment variable."""
    parts = text.splitlines() if lines else text.split(",")
    for n, part in enumerate(parts, start=1):
        stripped = part.strip()
        if stripped and not stripped.startswith("#"):
            yield n, stripped


def read_entries(text: str, *, source: str = ENV, lines: bool = False) -> list[tuple[str, ApiKey]]:
    """Every entry of a setting's value (``lines``: a file's content, one entry a line)."""
    unit = "line" if lines else "entry"
    return [parse_entry(e, f"{source} {unit} {n}") for n, e in _entries(text, lines=lines)]


def parse_keys(text: str, *, source: str = ENV, lines: bool = False) -> list[ApiKey]:
    return [key for _, key in read_entries(text, source=source, lines=lines)]


def read_key_file(path: Path) -> list[ApiKey]:
    """The keys in a file (a mounted Kubernetes Secret): one entry a line, ``#`` comments."""
    source = f"{FILE_ENV} {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ValueError(f"{source}: cannot read it ({reason})") from None
    return parse_keys(text, source=source, lines=True)


def merge(*groups: Iterable[ApiKey]) -> tuple[ApiKey, ...]:
    """One tuple of keys: the same entry twice counts once; the same key with other grants or
    another name, or one name for two keys, is an error (which one would hold?)."""
    by_digest: dict[str, ApiKey] = {}
    names: dict[str, str] = {}
    for group in groups:
        for key in group:
            held = by_digest.get(key.digest)
            if held is not None and held != key:
                raise ValueError(f"API key {key.id} is configured twice with different scopes")
            if names.get(key.id, key.digest) != key.digest:
                raise ValueError(f"two API keys are both named {key.id!r}")
            by_digest[key.digest] = key
            names[key.id] = key.digest
    return tuple(by_digest.values())
