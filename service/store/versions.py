"""Versioned collections read through aliases: the store side of zero-downtime reindexing.

A collection that users name ``media`` is a real collection ``media__<bundle>__<n>`` behind the
alias ``media``. Two more aliases carry the reindex state, in the store itself, so every process
writing to it (gateways, ``clipsearch writer``) sees the same thing:

* ``media.next`` — the version a reindex is building. While it exists, every upsert and delete
  on ``media`` is applied to it too (dual write), so nothing written during the rebuild is lost;
* ``media.previous`` — the version the last swap replaced, kept for ``rollback``. Writes and
  deletes reach it too, so a rollback (and a roll-forward after it) serves every write made
  whichever version served it.

A swap repoints ``media`` and ``media.previous`` and removes ``media.next`` in one atomic alias
update; searches see the old version or the new one, never a mix and never an error.

Versions may be built by different bundles (a model rollout), with different vector dims: the
bundle is in the version's name, queries embed with the bundle of the version they search, and
writes during a rollout carry one point per bundle (``write_bundles``): ``upsert`` routes each
to the version of its bundle, by the point's ``model`` payload field.

Qdrant resolves aliases in every points operation; the embedded store does the same. A server
adapter pays a round trip to list aliases, so this wrapper caches the list for ``alias_ttl_s``;
a reindex waits twice that after creating ``.next`` before it reads the current version, so by
then every writer dual-writes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from service.core.contract import METADATA_KEY
from service.core.domain import FilterValue, Point, Record, StoredHit, VectorName
from service.core.errors import ClipsearchError, ErrorType, not_found
from service.store.base import VectorStore

log = logging.getLogger(__name__)

NEXT = ".next"
PREVIOUS = ".previous"
_SEP = "__"


def version_name(collection: str, bundle: str, number: int) -> str:
    return f"{collection}{_SEP}{bundle}{_SEP}{number}"


@dataclass(frozen=True)
class Version:
    name: str  # the real collection
    collection: str  # the alias users search
    bundle: str | None  # None: a collection created before versioning
    number: int


def parse_version(name: str) -> Version | None:
    parts = name.rsplit(_SEP, 2)
    if len(parts) != 3 or not parts[2].isdigit() or not parts[0] or not parts[1]:
        return None
    return Version(name, parts[0], parts[1], int(parts[2]))


class VersionedStore:
    """A VectorStore that dual-writes to a collection's ``.next`` version, plus the version
    operations a reindex needs. Everything else passes through to the adapter."""

    def __init__(self, inner: VectorStore, *, alias_ttl_s: float = 0.0) -> None:
        self.inner = inner
        self.alias_ttl_s = alias_ttl_s
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, str]] | None = None
        # Told the number of points each write put into a collection's serving version (the
        # gateway counts them: clipsearch_points_upserted_total), whichever path wrote them.
        self.on_written: Callable[[int], None] | None = None

    # -- versions ----------------------------------------------------------------------------
    def aliases(self, *, fresh: bool = False) -> dict[str, str]:
        with self._lock:
            now = time.monotonic()
            if fresh or self._cached is None or now - self._cached[0] >= self.alias_ttl_s:
                self._cached = (now, self.inner.aliases())
            return dict(self._cached[1])

    def ensure(
        self,
        collection: str,
        dims: Mapping[VectorName, int],
        bundle: str,
        settings: Mapping[str, Any] | None = None,
    ) -> str:
        """Make ``collection`` usable: the alias and its first version, creating them if
        missing; a collection made before versioning is adopted as version 1 where the store
        can rename (embedded) and used as it is otherwise. Returns the real collection.

        ``settings``: the collection metadata that records what the version is built with
        (``service.core.contract``), written with a new version, and into the current one when
        it records none yet (made before settings were recorded)."""
        current = self.aliases(fresh=True).get(collection)
        if current is not None:
            # Its own bundle's dims, which may not be the default bundle's (after a rollout).
            if not self.inner.collection_exists(current):
                self.inner.ensure_collection(current, dims)
            if settings and not set(settings) & set(self.inner.collection_metadata(current)):
                self.inner.set_collection_metadata(current, settings)
                log.info("%s records no settings yet: recorded this process's", current)
            return current
        if self.inner.collection_exists(collection):
            rename = getattr(self.inner, "rename_collection", None)
            if rename is None:
                log.warning(
                    "collection %s predates versioning and cannot be renamed on this store; "
                    "it is served as is and cannot be reindexed",
                    collection,
                )
                self.inner.ensure_collection(collection, dims)
                return collection
            first = version_name(collection, _bundle_of(self.inner, collection) or bundle, 1)
            rename(collection, first)
            log.info("adopted collection %s as version %s", collection, first)
        else:
            first = version_name(collection, bundle, 1)
        self.inner.ensure_collection(first, dims)
        if settings:
            self.inner.set_collection_metadata(first, settings)
        self._set_aliases({collection: first})
        return first

    def versions(self, collection: str) -> list[Version]:
        names = self.inner.list_collections()
        out = [v for n in names if (v := parse_version(n)) and v.collection == collection]
        if collection in names:
            out.append(Version(collection, collection, None, 0))
        return sorted(out, key=lambda v: v.number)

    def begin(
        self,
        collection: str,
        dims: Mapping[VectorName, int],
        bundle: str,
        settings: Mapping[str, Any] | None = None,
    ) -> str:
        """Create the next version, recording ``settings`` in its metadata (what it is built
        with), and start dual-writing to it; returns its name."""
        aliases = self.aliases(fresh=True)
        if collection + NEXT in aliases:
            raise ClipsearchError(
                ErrorType.conflict,
                f"a reindex of {collection!r} is already building {aliases[collection + NEXT]}",
            )
        if collection not in aliases:
            if self.inner.collection_exists(collection):
                raise ClipsearchError(
                    ErrorType.conflict,
                    f"collection {collection!r} predates versioning and this store cannot "
                    "rename it; export and re-ingest it into a new collection",
                )
            raise not_found(f"collection {collection!r} does not exist")
        number = max((v.number for v in self.versions(collection)), default=0) + 1
        name = version_name(collection, bundle, number)
        self.inner.ensure_collection(name, dims)
        if settings:
            self.inner.set_collection_metadata(name, settings)
        self._set_aliases({collection + NEXT: name})
        log.info("reindex of %s: building %s", collection, name)
        return name

    def swap(self, collection: str, *, keep: int = 1) -> tuple[str, str]:
        """Make ``.next`` current and the current ``.previous``, atomically; then drop the
        replaced versions beyond the ``keep`` newest (the previous one is always kept).
        Returns (old, new)."""
        aliases = self.aliases(fresh=True)
        new, old = aliases.get(collection + NEXT), aliases.get(collection)
        if new is None or old is None:
            raise ClipsearchError(ErrorType.conflict, f"no reindex of {collection!r} to finish")
        self._set_aliases({collection: new, collection + PREVIOUS: old}, remove=[collection + NEXT])
        log.info("swapped %s: %s -> %s", collection, old, new)
        replaced = [v.name for v in self.versions(collection) if v.name not in (old, new)]
        for stale in replaced[: max(0, len(replaced) - max(1, keep) + 1)]:
            self.inner.drop_collection(stale)
            log.info("dropped %s (retention: %d previous)", stale, keep)
        return old, new

    def bundle_of(self, collection: str, *, fresh: bool = False) -> tuple[str, str | None]:
        """The version ``collection`` reads now and the bundle that built it (None: a
        collection from before versioning, made by the default bundle). A name that is no
        alias is returned as it is."""
        name = self.aliases(fresh=fresh).get(collection, collection)
        version = parse_version(name)
        return name, version.bundle if version else None

    def metadata_of(self, collection: str, *, role: str = "") -> tuple[str, dict[str, Any]]:
        """The version that ``collection`` reads now (``role``: ``.next`` or ``.previous`` for
        those) and its collection metadata; a name that is no alias is read as it is."""
        name = self.aliases(fresh=True).get(collection + role, collection + role)
        return name, self.inner.collection_metadata(name)

    def write_bundles(self, collection: str) -> list[str | None]:
        """The bundles a write to ``collection`` embeds with, one point per bundle: the current
        version's; during a rollout onto another bundle the next version's too; and after a
        swap the previous version's, which ``rollback`` may make current again."""
        aliases = self.aliases()
        current = parse_version(aliases.get(collection, collection))
        bundles: list[str | None] = [current.bundle if current else None]
        for suffix in (NEXT, PREVIOUS):
            other = aliases.get(collection + suffix)
            version = parse_version(other) if other else None
            if version is not None and version.bundle not in bundles:
                bundles.append(version.bundle)
        return bundles

    def abort(self, collection: str) -> None:
        """Stop dual-writing and drop the version being built."""
        building = self.aliases(fresh=True).get(collection + NEXT)
        if building is None:
            return
        self._set_aliases({}, remove=[collection + NEXT])
        self.inner.drop_collection(building)
        log.info("reindex of %s abandoned: dropped %s", collection, building)

    def rollback(self, collection: str) -> tuple[str, str]:
        """Swap current and previous back; a second rollback rolls forward again."""
        aliases = self.aliases(fresh=True)
        if collection + NEXT in aliases:
            raise ClipsearchError(
                ErrorType.conflict, f"a reindex of {collection!r} is running; cancel it first"
            )
        previous, current = aliases.get(collection + PREVIOUS), aliases.get(collection)
        if previous is None or current is None:
            raise ClipsearchError(
                ErrorType.conflict, f"collection {collection!r} has no previous version"
            )
        self._set_aliases({collection: previous, collection + PREVIOUS: current})
        log.info("rolled back %s: %s -> %s", collection, current, previous)
        return current, previous

    def remove(self, collection: str) -> list[str]:
        """Delete ``collection``: its aliases first (searches of it are a not-found from then
        on), then every version of it. Returns the versions dropped."""
        versions = self.versions(collection)
        if not versions:
            raise not_found(f"collection {collection!r} does not exist")
        aliases = self.aliases(fresh=True)
        self._set_aliases(
            {}, [a for a in (collection, collection + NEXT, collection + PREVIOUS) if a in aliases]
        )
        for version in versions:
            self.inner.drop_collection(version.name)
        log.info("deleted collection %s: %s", collection, ", ".join(v.name for v in versions))
        return [v.name for v in versions]

    def names(self) -> list[str]:
        """The collections users name: every plain alias, and collections from before
        versioning."""
        aliases = self.aliases(fresh=True)
        plain = {a for a in aliases if not a.endswith((NEXT, PREVIOUS))}
        legacy = {n for n in self.inner.list_collections() if parse_version(n) is None}
        return sorted(plain | legacy)

    def describe(self, collection: str) -> dict[str, Any]:
        """The alias, its versions and their roles, point counts and vectors."""
        aliases = self.aliases(fresh=True)
        roles = {
            aliases.get(collection + suffix): role
            for suffix, role in ((NEXT, "next"), (PREVIOUS, "previous"), ("", "current"))
        }
        versions = self.versions(collection)
        if not versions:
            raise not_found(f"collection {collection!r} does not exist")
        current = aliases.get(collection) or (collection if versions[0].number == 0 else None)
        rows = [
            {
                "name": v.name,
                "number": v.number,
                "bundle": v.bundle,
                "role": "current" if v.name == current else roles.get(v.name),
                "points": self.inner.count(v.name),
                "vectors": self.inner.vector_dims(v.name),
                "settings": self.inner.collection_metadata(v.name).get(METADATA_KEY),
                "index": self._index(v.name),
            }
            for v in versions
        ]
        now = next((r for r in rows if r["role"] == "current"), None)
        return {
            "alias": collection,
            "current": current,
            "building": aliases.get(collection + NEXT),
            "previous": aliases.get(collection + PREVIOUS),
            "points": now["points"] if now else 0,
            "vectors": now["vectors"] if now else {},
            "bundle": now["bundle"] if now else None,
            "versions": rows,
        }

    def _index(self, version: str) -> dict[str, Any] | None:
        """The embedded store's index state of ``version``; None for a store without one."""
        state = getattr(self.inner, "index_state", None)
        if state is None:
            return None
        found = state(version)
        return {k: found[k] for k in ("indexed_points", "building", "segments")}

    def _set_aliases(self, point: Mapping[str, str], remove: Sequence[str] = ()) -> None:
        self.inner.update_aliases(point, remove)
        with self._lock:
            self._cached = None

    # -- VectorStore -------------------------------------------------------------------------
    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        """Points of one bundle go to the current version, and to ``.next`` and ``.previous``
        when the same bundle built them; a version of another bundle (a rollout's) gets the
        points made with its bundle (``write_bundles``). So whichever of them serves next — a
        promote, a rollback, a roll-forward — holds every write."""
        aliases = self.aliases()
        current = aliases.get(collection)
        if current is None:
            self.inner.upsert(collection, _first_per_id(points))
            return
        now = parse_version(current)
        mine = _for_bundle(points, now.bundle if now else None, collection)
        self.inner.upsert(collection, mine)
        if self.on_written is not None:
            self.on_written(len(mine))
        for other in self._others(collection, aliases):
            version = parse_version(other)
            if version is None or now is None or version.bundle == now.bundle:
                self.inner.upsert(other, mine)
                continue
            theirs = [p for p in points if p.payload.get("model") == version.bundle]
            if theirs:
                self.inner.upsert(other, theirs)
            else:
                log.warning(
                    "a write to %s carried no point of bundle %s: %s misses it",
                    collection,
                    version.bundle,
                    other,
                )

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        self.inner.delete(collection, ids)
        for other in self._others(collection, self.aliases()):
            self.inner.delete(other, ids)

    @staticmethod
    def _others(collection: str, aliases: Mapping[str, str]) -> list[str]:
        """The versions besides the current one that every write reaches: the one being built
        and the one a rollback would serve."""
        current = aliases.get(collection)
        out: list[str] = []
        for suffix in (NEXT, PREVIOUS):
            name = aliases.get(collection + suffix)
            if name is not None and name != current and name not in out:
                out.append(name)
        return out

    def ensure_collection(self, name: str, dims: Mapping[VectorName, int]) -> None:
        self.inner.ensure_collection(name, dims)

    def collection_exists(self, name: str) -> bool:
        return self.inner.collection_exists(name)

    def drop_collection(self, name: str) -> None:
        self.inner.drop_collection(name)

    def search(
        self,
        collection: str,
        vector_name: VectorName,
        vector: Sequence[float],
        *,
        limit: int,
        offset: int = 0,
        filter: Mapping[str, FilterValue] | None = None,  # noqa: A002
        score_threshold: float | None = None,
    ) -> list[StoredHit]:
        return self.inner.search(
            collection,
            vector_name,
            vector,
            limit=limit,
            offset=offset,
            filter=filter,
            score_threshold=score_threshold,
        )

    def retrieve(
        self, collection: str, ids: Sequence[str], *, with_vectors: bool = False
    ) -> list[Record]:
        return self.inner.retrieve(collection, ids, with_vectors=with_vectors)

    def count(self, collection: str, filter: Mapping[str, FilterValue] | None = None) -> int:  # noqa: A002
        return self.inner.count(collection, filter)

    def list_collections(self) -> list[str]:
        return self.inner.list_collections()

    def vector_dims(self, name: str) -> dict[str, int]:
        return self.inner.vector_dims(name)

    def update_aliases(self, point: Mapping[str, str], remove: Sequence[str] = ()) -> None:
        self._set_aliases(point, remove)

    def collection_metadata(self, name: str) -> dict[str, Any]:
        return self.inner.collection_metadata(name)

    def set_collection_metadata(self, name: str, metadata: Mapping[str, Any]) -> None:
        self.inner.set_collection_metadata(name, metadata)

    def scroll(
        self,
        collection: str,
        *,
        limit: int,
        offset: str | None = None,
        with_vectors: bool = False,
    ) -> tuple[list[Record], str | None]:
        return self.inner.scroll(collection, limit=limit, offset=offset, with_vectors=with_vectors)

    def close(self) -> None:
        self.inner.close()


def _first_per_id(points: Sequence[Point]) -> list[Point]:
    seen: set[str] = set()
    out = []
    for p in points:
        if p.id not in seen:
            seen.add(p.id)
            out.append(p)
    return out


def _for_bundle(points: Sequence[Point], bundle: str | None, collection: str) -> list[Point]:
    """The points made by ``bundle`` (by their ``model`` field); for a version of unknown
    bundle, each id's first point. Points all made by other bundles are refused: they would
    be vectors of another model, perhaps of other dims (a write that raced a promote)."""
    if bundle is None:
        return _first_per_id(points)
    exact = [p for p in points if p.payload.get("model") == bundle]
    if exact or not points:
        return exact
    models = sorted({str(m) for p in points if (m := p.payload.get("model"))})
    if not models:
        return _first_per_id(points)
    raise ClipsearchError(
        ErrorType.conflict,
        f"{collection!r} is now searched with bundle {bundle}, and these points were embedded "
        f"with {', '.join(models)} (a write that raced a rollout's promote or rollback): "
        "send it again",
        {"bundle": bundle, "models": models},
        retry_after_s=1.0,
    )


def _bundle_of(store: VectorStore, collection: str) -> str | None:
    """The bundle that built a collection, from one point's ``model`` payload field."""
    records, _ = store.scroll(collection, limit=1)
    model = records[0].payload.get("model") if records else None
    return model if isinstance(model, str) and model else None
