"""Model rollouts: build a collection's next version (with the same or another bundle) beside
the live one, compare the two on real queries, then switch queries and vectors together.

The gateway runs rollouts on a thread of its own (``POST /v1/admin/reindex``), in both job
modes; the heavy part is embedding on the target bundle's ``bulk`` lane, wherever it runs.

1. ``start`` resolves the bundle (a served ``name@version`` or name; else a zoo name, a bundle
   folder or ``tiny``, loaded and verified by the resolver ``clipsearch.bootstrap`` gives and
   added to the in-process encoder beside the served ones — or, with remote encoder workers,
   loaded by each worker through its ``LoadBundle`` RPC, which resolves and verifies it the
   same way), then ``VersionedStore.begin``
   creates ``<name>__<bundle>__<n+1>`` with that bundle's vector dims, and the ``<name>.next``
   alias: from then on (after twice the alias cache time) every write to ``<name>`` is embedded
   once per bundle and each point lands in its bundle's version (dual write); deletes reach both.
   With Celery indexers every job carries those bundles and the spec the new version records
   (``indexer.distributed.bundles``): the indexers load it and embed each item once per bundle,
   the writer routes each point to its bundle's version. A job sent before the rollout began
   embeds with the current bundle only; the catch-up before the swap remakes what it wrote.
2. Rebuild: the current version is read page by page, and every point is made again from its
   stored source — the ``uri`` of an image or video (a local path under the allowed roots, or a
   URL through the fetch guard) or the caption and description of a text document — through the
   same ``index_entries`` the ingestion jobs use, with the target bundle. Point ids do not change;
   ``tags`` and ``created_at`` carry over.
3. Reconcile: whatever the rebuild could not remake (an image posted inline, whose bytes were
   never stored; a source gone since) is copied with its vectors when the same bundle builds the
   new version; with another bundle it is made again where it can be, else counted ``missing``
   and named in ``notes``.
4. Compare: the rollout waits in ``ready`` with a ``comparison`` of both versions over recent
   real text queries (``service.search.querylog``) and the operator's golden set: top-10
   overlap, golden recall@1/@10, score percentiles and p50 latency of each.
5. ``promote`` (or ``"promote": "auto"``): one atomic alias update makes the new version
   current and the old one ``<name>.previous``; queries follow the alias, so the query model
   switches with it (``SearchService`` embeds with the bundle of the version it reads).
   ``rollback`` switches both back; replaced versions beyond ``admin.retention`` are dropped.
6. Bundles a rollout loaded are freed (dropped from the encoder, or unloaded from the workers)
   after a promote, a rollback, a cancel or a failure, as soon as nothing needs them: no alias
   of any collection (current, ``.previous``, ``.next``) reads a version they built and no
   rollout in progress uses them. Configured bundles are never dropped. One needed again (a
   rollback on a restarted gateway, a new rollout onto it) is loaded again from its spec.

A failure or a cancel drops the new version and leaves the current one as it was; a rollout
building when the gateway died is marked ``failed`` (interrupted) on restart and its version
dropped; one that was ``ready`` stays ready if its bundle can be loaded again. With a broker,
the records live in Redis for every gateway replica (``indexer.jobs.rollout_records``): one replica
runs a rollout while it holds its lease, and when it dies (or closes) another takes the lease
and builds the version again, instead of failing it.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import logging
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, cast

import numpy as np

from indexer.distributed.bundles import SPEC_KEY, spec_of
from indexer.jobs.records import now_iso
from indexer.jobs.rollout_records import UNATTENDED, Lease, LocalRecords, ReindexRecords
from indexer.pipeline.entries import index_entries, local_path
from indexer.pipeline.patience import patient
from indexer.sources.read import SourceEntry
from indexer.sources.roots import allowed_roots, under_roots
from service.clients.base import EmbeddingClient
from service.core.bundle.manifest import Bundle
from service.core.config import Settings, VideoSettings
from service.core.contract import CollectionSettings
from service.core.domain import FilterValue, Kind, Point, Record, StoredHit, collection_dims
from service.core.errors import ClipsearchError, ErrorType, invalid, not_found
from service.items.chunking import MAX_CHUNKS
from service.items.delete import video_segments
from service.items.fetch import Fetcher
from service.search.planner import Query, SearchOptions, SearchService
from service.search.querylog import QueryLog
from service.store.base import VectorStore
from service.store.files import write_json
from service.store.versions import NEXT, PREVIOUS, VersionedStore, parse_version

log = logging.getLogger(__name__)

PAGE = 64
MAX_NOTES_KEPT = 1000
MAX_GOLDEN_QUERIES = 1000
MAX_EXPECTED_IDS = 100
COMPARE_TOP = 10
QUERIES_SHOWN = 20  # per-query rows kept in a comparison
_KEPT_FIELDS = ("tags", "created_at")
PROMOTE_MODES = ("manual", "auto")
# A collection's name: version names are ``<name>__<bundle>__<n>`` and aliases ``<name>.next``,
# so neither ``__`` nor ``.``; lower case, as Qdrant and Kubernetes-style names go.
COLLECTION_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
ACTIVE = ("queued", "building", "ready", "promoting")
RUNNING = ("queued", "building")
ACTING_WAIT_S = 2.0  # a promote or cancel waits this long for a replica that holds the rollout

# A bundle spec (served name@version or name, zoo name, folder, "tiny") -> the loaded, verified
# bundle: not_found when it names nothing, invalid_input when its files fail their checksums.
BundleResolver = Callable[[str], Bundle]


class InProcessReindexer:
    """Builds one version at a time on a thread; records under ``<data_dir>/reindex``, golden
    sets under ``<data_dir>/golden``."""

    def __init__(
        self,
        *,
        settings: Settings,
        embedder: EmbeddingClient,
        store: VersionedStore,
        resolve_bundle: BundleResolver | None = None,
        query_log: QueryLog | None = None,
        records: ReindexRecords | None = None,
    ) -> None:
        """``records``: where the records live and who runs each rollout
        (``indexer.jobs.rollout_records``); default: files under the data dir, this process
        alone."""
        self._settings = settings
        self._embedder = embedder
        self._store = store
        self._resolve = resolve_bundle
        self._query_log = query_log
        self._files: ReindexRecords = records or LocalRecords(settings.data_dir / "reindex")
        self._leases: dict[str, Lease] = {}  # the rollouts this process runs or changes now
        self._golden_dir = settings.data_dir / "golden"
        self._lock = threading.Lock()
        self._starting = threading.Lock()
        self._records: dict[str, dict[str, Any]] = {}
        self._cancelled: set[str] = set()
        self._reloaded: set[str] = set()  # bundles this process loaded again (_ensure_served)
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._load_existing()
        self._files.watch(self._take_over)  # shared records: a dead replica's rollouts

    # -- Reindexer protocol ------------------------------------------------------------------
    def start(
        self,
        collection: str,
        bundle: str | None = None,
        promote: str = "manual",
        *,
        video: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``video``: segmenting settings for the new version (a settings change: the version
        records them); default: this gateway's."""
        if promote not in PROMOTE_MODES:
            raise invalid(f"promote must be one of {list(PROMOTE_MODES)}, not {promote!r}")
        aliases = self._store.aliases(fresh=True)
        if collection not in aliases:
            if self._store.inner.collection_exists(collection):
                raise ClipsearchError(
                    ErrorType.conflict,
                    f"collection {collection!r} predates versioning and this store cannot "
                    "rename it; export and re-ingest it into a new collection",
                )
            raise not_found(f"collection {collection!r} does not exist")
        self._sync()
        self._check_free(collection, aliases)
        source = aliases[collection]
        source_bundle = self._source_bundle(source)
        with self._starting:  # one start at a time: a bundle load must not race another start
            self._check_free(collection, self._store.aliases(fresh=True))
            target_bundle, loaded = self._target_bundle(bundle, source_bundle)
            try:
                info = self._embedder.info(bundle=target_bundle)
                # The new version records what it is built with: this gateway's settings.
                own = CollectionSettings.of(
                    _build_settings(self._settings, video),
                    bundle=info.bundle,
                    max_chunks=MAX_CHUNKS,
                )
                dims = collection_dims(info.spaces)
                # The spec too: Celery indexers load the bundle from it for their tasks, and a
                # restarted gateway loads it again (``indexer.distributed.bundles``).
                metadata = {**own.metadata(), **({SPEC_KEY: bundle} if bundle else {})}
                target = self._store.begin(collection, dims, info.bundle, metadata)
            except BaseException:
                if loaded:
                    self._drop_bundle(target_bundle)
                raise
            now = now_iso()
            record: dict[str, Any] = {
                "id": uuid.uuid4().hex,
                "kind": "reindex",
                "collection": collection,
                "bundle": info.bundle,
                "source_bundle": source_bundle,
                "bundle_spec": bundle,
                "video": dict(video) if video else None,
                "settings": own.model_dump(mode="json"),
                "loaded": loaded,
                "promote": promote,
                "source": source,
                "target": target,
                "state": "queued",
                "phase": None,
                "total": 0,
                "done": 0,
                "rebuilt": 0,
                "copied": 0,
                "missing": 0,
                "notes": [],
                "rate_per_s": None,
                "eta_s": None,
                "comparison": None,
                "created_at": now,
                "updated_at": now,
            }
            lease = self._files.hold(record["id"])  # a new id: always free
            assert lease is not None
            with self._lock:
                self._leases[record["id"]] = lease
                self._records[record["id"]] = record
                self._persist(record)
            self._thread = threading.Thread(
                target=self._run_held, args=(record["id"],), name="reindex", daemon=True
            )
            self._thread.start()
        log.info(
            "rollout %s of %s: %s (%s) -> %s (%s)",
            record["id"],
            collection,
            source,
            source_bundle,
            target,
            info.bundle,
        )
        return self.status(record["id"])

    def create_collection(self, name: str, bundle: str | None = None) -> dict[str, Any]:
        """A new, empty collection searched and written with ``bundle`` (a served
        ``name@version`` or name, a zoo name, a bundle folder, ``tiny``; default: the
        configured bundle), loaded now if the encoder can and does not serve it yet; its first
        version records the spec, so a restarted gateway (or an indexer) loads it again.
        (invalid_input) for a bad name, (conflict) when it exists, (not_found) for no bundle."""
        check_collection_name(name)
        with self._starting:  # a bundle load must not race a rollout's start or free
            if name in self._store.names() or self._store.versions(name):
                raise ClipsearchError(
                    ErrorType.conflict, f"collection {name!r} exists", {"collection": name}
                )
            ref, loaded = self._target_bundle(bundle, self._embedder.info().bundle)
            try:
                info = self._embedder.info(bundle=ref)
                own = CollectionSettings.of(
                    self._settings, bundle=info.bundle, max_chunks=MAX_CHUNKS
                )
                metadata = {**own.metadata(), **({SPEC_KEY: bundle} if bundle else {})}
                self._store.ensure(name, collection_dims(info.spaces), info.bundle, metadata)
            except BaseException:
                if loaded:
                    self._drop_bundle(ref)
                raise
            if loaded:
                with self._lock:
                    self._reloaded.add(ref)  # freed again once no collection needs it
        log.info("collection %s created with bundle %s", name, info.bundle)
        return self._store.describe(name)

    def delete_collection(self, name: str) -> dict[str, Any]:
        """Delete a collection: every version, its aliases and thumbnails; a bundle loaded
        for it alone is freed. (conflict) for the configured collection or one with a rollout
        in progress; (not_found) for none."""
        if name == self._settings.collection:
            raise ClipsearchError(
                ErrorType.conflict,
                f"collection {name!r} is this gateway's configured collection "
                "(CLIPSEARCH_COLLECTION) and cannot be deleted",
                {"collection": name},
            )
        self._sync()
        with self._starting:
            with self._lock:
                active = [
                    r
                    for r in self._records.values()
                    if r["collection"] == name and r["state"] in ACTIVE
                ]
            if active:
                raise ClipsearchError(
                    ErrorType.conflict,
                    f"rollout {active[0]['id']} of {name!r} is {active[0]['state']}; "
                    "cancel it first",
                    {"id": active[0]["id"], "state": active[0]["state"]},
                )
            dropped = self._store.remove(name)
        thumbnails = self._settings.data_dir / "thumbnails" / name
        shutil.rmtree(thumbnails, ignore_errors=True)
        self._release_unused()
        return {"collection": name, "deleted_versions": dropped}

    def serve_collection(self, name: str) -> bool:
        """Whether the bundle of ``name``'s current version is served, loading it again from
        its recorded spec if this encoder can (a collection another replica created)."""
        current = self._store.aliases().get(name)
        return current is None or self._ensure_served(self._source_bundle(current))

    def status(self, reindex_id: str) -> dict[str, Any]:
        self._sync()
        with self._lock:
            record = self._records.get(reindex_id)
            if record is None:
                raise not_found(f"no reindex {reindex_id!r}")
            return cast(dict[str, Any], json.loads(json.dumps(record)))

    def list(self) -> list[dict[str, Any]]:
        self._sync()
        with self._lock:
            records = sorted(self._records.values(), key=lambda r: r["created_at"], reverse=True)
            return cast(list[dict[str, Any]], json.loads(json.dumps(records)))

    def cancel(self, reindex_id: str) -> dict[str, Any]:
        record = self.status(reindex_id)
        state = record["state"]
        if state in RUNNING:
            self._cancelled.add(reindex_id)
            self._files.request_cancel(reindex_id)  # read by whichever replica runs it
            thread = self._thread
            if thread is not None and reindex_id in self._leases:
                thread.join(timeout=60)
            else:
                self._wait_settled(reindex_id, 60.0)
            return self.status(reindex_id)
        if state == "ready":
            with self._acting(reindex_id, "cancel"):
                with self._lock:
                    if self._records[reindex_id]["state"] != "ready":
                        raise _not_in(reindex_id, self._records[reindex_id]["state"], "cancel")
                    self._records[reindex_id]["state"] = "promoting"  # nobody promotes it now
                try:
                    self._store.abort(record["collection"])
                except BaseException:
                    self._update(reindex_id, state="ready")
                    raise
                self._update(reindex_id, state="cancelled", finished_at=now_iso())
            self._release_unused()
            log.info("rollout %s cancelled; %s dropped", reindex_id, record["target"])
            return self.status(reindex_id)
        raise _not_in(reindex_id, state, "cancel")

    def promote(self, reindex_id: str) -> dict[str, Any]:
        with self._acting(reindex_id, "promote"):
            with self._lock:
                record = self._records.get(reindex_id)
                if record is None:
                    raise not_found(f"no reindex {reindex_id!r}")
                if record["state"] != "ready":
                    raise _not_in(reindex_id, record["state"], "promote")
                record.update(state="promoting", updated_at=now_iso())
                self._persist(record)
            return self._promote(reindex_id)

    def rollback(self, collection: str) -> dict[str, Any]:
        aliases = self._store.aliases(fresh=True)
        previous = aliases.get(collection + PREVIOUS)
        if collection not in aliases:
            raise not_found(f"collection {collection!r} does not exist")
        if previous is not None and collection + NEXT not in aliases:
            bundle = self._source_bundle(previous)
            if not self._ensure_served(bundle):
                raise ClipsearchError(
                    ErrorType.conflict,
                    f"cannot roll {collection!r} back to {previous}: its bundle {bundle} is not "
                    "served here and cannot be loaded again; serve it "
                    "(CLIPSEARCH_ENCODER__EXTRA_BUNDLES) and retry",
                    {"bundle": bundle},
                )
        current, previous = self._store.rollback(collection)
        self._release_unused()
        return {
            "collection": collection,
            "from": current,
            "to": previous,
            "bundle": self._source_bundle(previous),
        }

    def set_golden(self, collection: str, queries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The operator's golden set of ``collection``: ``[{"text", "expected": [ids]}]`` (ids:
        point ids, the ids items were added with, or their source URIs); it replaces the one
        before."""
        if collection not in self._store.names():
            raise not_found(f"collection {collection!r} does not exist")
        cleaned = _golden(queries)
        self._golden_dir.mkdir(parents=True, exist_ok=True)
        write_json(self._golden_dir / f"{collection}.json", {"queries": cleaned})
        return {"collection": collection, "queries": len(cleaned)}

    def golden(self, collection: str) -> builtins.list[dict[str, Any]]:
        path = self._golden_dir / f"{collection}.json"
        if not path.is_file():
            return []
        queries: builtins.list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))[
            "queries"
        ]
        return queries

    def ready(self) -> bool:
        return True

    def close(self) -> None:
        self._closing.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=30)
        self._files.close()

    # -- shared records (``indexer.jobs.rollout_records``) -----------------------------------
    def _sync(self) -> None:
        """Take in the records other gateways wrote; those this process runs stay its own."""
        if not self._files.shared:
            return
        records = self._files.load_all()
        with self._lock:
            for record in records:
                if record["id"] not in self._leases:
                    self._records[record["id"]] = record

    @contextlib.contextmanager
    def _acting(self, reindex_id: str, action: str) -> Iterator[None]:
        """The rollout's lease while a request changes a ready one (promote, cancel): two
        replicas never act on one rollout at once."""
        state = self.status(reindex_id)["state"]  # not_found first
        if state != "ready":
            raise _not_in(reindex_id, state, action)
        lease = self._files.hold(reindex_id)
        thread = self._thread
        if lease is None and reindex_id in self._leases and thread is not None:
            thread.join(timeout=5)  # its build here has just ended: it frees the lease as it goes
            lease = self._files.hold(reindex_id)
        deadline = time.monotonic() + ACTING_WAIT_S  # or a build that ended on another replica
        while lease is None and time.monotonic() < deadline and not self._closing.wait(0.05):
            lease = self._files.hold(reindex_id)
        if lease is None:
            raise ClipsearchError(
                ErrorType.conflict,
                f"rollout {reindex_id} is being changed by another request or gateway; retry",
                {"id": reindex_id},
            )
        try:
            self._sync()
            with self._lock:
                self._leases[reindex_id] = lease
            yield
        finally:
            with self._lock:
                self._leases.pop(reindex_id, None)
            lease.release()

    def _run_held(self, reindex_id: str) -> None:
        """``_run`` under the rollout's lease (taken by its starter), freed at its end."""
        try:
            self._run(reindex_id)
        except _HandOver:
            if not self._closing.is_set() and self._orphaned(reindex_id):
                return
            log.warning("rollout %s left to another gateway (lease lost or closing)", reindex_id)
        finally:
            with self._lock:
                lease = self._leases.pop(reindex_id, None)
            if lease is not None:
                lease.release()

    def _orphaned(self, reindex_id: str) -> bool:
        """After a lost lease: if Redis lost the record too (restarted without persistence),
        no replica can take the rollout over, so it is failed here as a restart fails one
        (its version dropped, the record written again); whether it was."""
        try:
            if self._files.read(reindex_id) is not None:
                return False
            with self._lock:
                self._leases.pop(reindex_id, None)  # its record is this process's again
                record = dict(self._records[reindex_id])
            self._store.abort(record["collection"])
            self._update(
                reindex_id,
                state="failed",
                phase=None,
                error="interrupted: Redis lost the rollout's record and lease",
                finished_at=now_iso(),
            )
        except ClipsearchError as exc:
            log.error("rollout %s: lease lost and its record unreadable: %s", reindex_id, exc)
            return False
        log.error(
            "rollout %s failed: Redis lost its record; %s dropped", reindex_id, record["target"]
        )
        return True

    def _wait_settled(self, reindex_id: str, timeout_s: float) -> None:
        """Until the replica that runs ``reindex_id`` has stopped it (it reads the cancel
        between pages), or ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.status(reindex_id)["state"] in RUNNING and time.monotonic() < deadline:
            if self._closing.wait(0.2):
                return

    def _take_over(self, reindex_id: str, lease: Lease) -> None:
        """A rollout whose runner died (its lease ran out): built again here (point ids are
        deterministic: the pass rewrites the same points), or a promote it left half done
        settled from the aliases. Called by the records' watcher with the lease taken."""
        record = self._files.read(reindex_id)
        thread = self._thread
        busy = thread is not None and thread.is_alive()
        if (
            record is None
            or record["state"] not in UNATTENDED
            or (busy and record["state"] in RUNNING)
        ):
            lease.release()  # nothing to do, or one build at a time here: another replica
            return
        with self._lock:
            self._records[reindex_id] = record
            self._leases[reindex_id] = lease
        collection, target = record["collection"], record["target"]
        aliases = self._store.aliases(fresh=True)
        if record["state"] in RUNNING and self._ensure_served(record["bundle"]):
            self._cancelled.discard(reindex_id)
            self._thread = threading.Thread(
                target=self._run_held, args=(reindex_id,), name="reindex", daemon=True
            )
            self._thread.start()
            return
        try:
            if aliases.get(collection) == target:
                self._update(reindex_id, state="completed", finished_at=now_iso())
            elif aliases.get(collection + NEXT) == target and record["state"] == "promoting":
                self._update(reindex_id, state="ready")
            else:
                if aliases.get(collection + NEXT) == target:
                    self._store.abort(collection)
                self._update(
                    reindex_id,
                    state="failed",
                    phase=None,
                    error="interrupted: its gateway stopped mid-promote"
                    if record["state"] == "promoting"
                    else f"interrupted: its gateway stopped, and its bundle {record['bundle']} "
                    "cannot be served here",
                    finished_at=now_iso(),
                )
        finally:
            with self._lock:
                self._leases.pop(reindex_id, None)
            lease.release()

    # -- bundles -----------------------------------------------------------------------------
    def _served(self) -> builtins.list[str]:
        info = self._embedder.info()
        return [b.ref for b in info.bundles] or [info.bundle]

    def _source_bundle(self, version: str) -> str:
        """The bundle that built ``version``; the default bundle's for a pre-versioning one."""
        parsed = parse_version(version)
        if parsed is not None and parsed.bundle:
            return parsed.bundle
        return self._embedder.info().bundle

    def _target_bundle(self, spec: str | None, source_bundle: str) -> tuple[str, bool]:
        """The bundle ``spec`` names, served or loaded now; and whether this loaded it."""
        if spec is None:
            return source_bundle, False
        if not isinstance(spec, str) or not spec.strip():
            raise invalid("bundle must be a non-empty name")
        served = self._served()
        if spec in served:
            return spec, False
        by_name = [ref for ref in served if ref.rpartition("@")[0] == spec]
        if by_name:
            return by_name[0], False  # served() lists the default first
        add = getattr(self._embedder, "add_bundle", None)
        load = getattr(self._embedder, "load_bundle", None)
        if add is None and load is not None:  # remote workers: each resolves and verifies it
            loaded_bundle, loaded = load(spec)  # not_found / invalid_input, nothing changed
            ref = loaded_bundle.ref
            log.info(
                "rollout: the encoder workers %s bundle %s", "loaded" if loaded else "serve", ref
            )
            return ref, loaded
        if add is None:
            raise invalid(
                f"bundle {spec!r} is not served by the encoder workers, which serve "
                f"{', '.join(served)}; they cannot load a bundle at run time, so a rollout can "
                "only use a bundle they already serve: start them with --bundle for it too "
                "(or CLIPSEARCH_ENCODER__EXTRA_BUNDLES) and retry",
                {"bundle": spec, "served": served},
            )
        if self._resolve is None:
            raise invalid(f"bundle {spec!r} is not served and this gateway cannot load bundles")
        bundle = self._resolve(spec)  # not_found / invalid_input, nothing changed yet
        ref = bundle.manifest.ref
        if ref in self._served():
            return ref, False
        add(bundle)
        log.info("rollout: loaded bundle %s from %s", ref, bundle.root)
        return ref, True

    def _ensure_served(self, ref: str | None) -> bool:
        """Whether ``ref`` is served, loading it again (from the spec a rollout recorded) if
        this encoder can."""
        if ref is None or ref in self._served():
            return True
        add = getattr(self._embedder, "add_bundle", None)
        load = getattr(self._embedder, "load_bundle", None)
        specs = [
            r["bundle_spec"]
            for r in sorted(self._records.values(), key=lambda r: r["created_at"], reverse=True)
            if r.get("bundle") == ref and r.get("bundle_spec")
        ]
        if not specs and (recorded := spec_of(self._store, ref)) is not None:
            specs = [recorded]  # the version's own record of it (its records may be gone)
        if not specs or (load is None and (add is None or self._resolve is None)):
            return False
        try:
            if add is None:  # remote workers load it from the spec themselves
                assert load is not None
                loaded, _ = load(specs[0])
                now = loaded.ref
            else:
                assert self._resolve is not None
                bundle = self._resolve(specs[0])
                now = bundle.manifest.ref
                if now == ref:
                    add(bundle)
            if now != ref:
                log.error("bundle %r is now %s, not %s", specs[0], now, ref)
                if add is None:
                    self._drop_bundle(now)
                return False
        except ClipsearchError as exc:
            if exc.type == ErrorType.conflict:  # loaded meanwhile
                return True
            log.error("cannot load bundle %s again from %r: %s", ref, specs[0], exc.message)
            return False
        with self._lock:
            self._reloaded.add(ref)
        log.info("loaded bundle %s again from %r", ref, specs[0])
        return True

    def _needed_bundles(self) -> set[str]:
        """The bundles that must stay served: those of every version an alias names (each
        collection's current, ``.previous`` and ``.next``: searched, written, or a rollback
        away) and of every rollout still in progress."""
        needed = {
            version.bundle
            for name in self._store.aliases(fresh=True).values()
            if (version := parse_version(name)) is not None and version.bundle
        }
        with self._lock:
            needed |= {r["bundle"] for r in self._records.values() if r["state"] in ACTIVE}
        return needed

    def _release_unused(self) -> None:
        """Free every bundle a rollout loaded (or this process loaded again) that nothing needs
        any more (:meth:`_needed_bundles`); a configured bundle is never dropped (the encoder
        refuses: ``runtime_only``). Never raises: the action that called it has succeeded."""
        try:
            with self._starting:  # a rollout starting now may be about to use one of them
                with self._lock:
                    owned = {r["bundle"] for r in self._records.values() if r.get("loaded")}
                    owned |= self._reloaded
                candidates = owned & set(self._served())
                for ref in sorted(candidates - self._needed_bundles()) if candidates else []:
                    if self._drop_bundle(ref):
                        log.info("bundle %s freed: no collection version needs it any more", ref)
                    with self._lock:
                        self._reloaded.discard(ref)
        except Exception:
            log.exception("freeing the bundles no collection needs failed")

    def _drop_bundle(self, ref: str) -> bool:
        """Stop serving ``ref`` if the encoder loaded it at run time; whether it did."""
        drop = getattr(self._embedder, "drop_bundle", None)
        if drop is None:
            return False
        try:
            drop(ref, grace_s=5.0, runtime_only=True)
        except ClipsearchError as exc:
            log.warning("bundle %s not dropped: %s", ref, exc.message)
            return False
        return True

    def _check_free(self, collection: str, aliases: Mapping[str, str]) -> None:
        with_next = aliases.get(collection + NEXT)
        for record in self._records.values():
            if record["collection"] == collection and record["state"] in ACTIVE:
                raise ClipsearchError(
                    ErrorType.conflict,
                    f"rollout {record['id']} of {collection!r} is {record['state']}; promote or "
                    "cancel it first",
                    {"id": record["id"], "state": record["state"]},
                )
        if with_next is not None:
            raise ClipsearchError(
                ErrorType.conflict, f"a reindex of {collection!r} is already building {with_next}"
            )
        thread = self._thread
        if thread is not None and thread.is_alive():
            running = [r for r in self._records.values() if r["state"] in RUNNING]
            which = f" ({running[0]['collection']!r}, {running[0]['id']})" if running else ""
            raise ClipsearchError(
                ErrorType.conflict,
                f"another rollout is building{which}; one builds at a time",
            )

    # -- the run -----------------------------------------------------------------------------
    def _run(self, reindex_id: str) -> None:
        record = self.status(reindex_id)
        collection, source, target = record["collection"], record["source"], record["target"]
        try:
            # Writers cache the alias list for up to alias_ttl_s: after twice that, all of them
            # dual-write, so reading the current version from here on misses nothing.
            time.sleep(2 * self._store.alias_ttl_s)
            self._update(reindex_id, state="building", phase="rebuild")
            build = _Build(self, record)
            build.rebuild()
            self._update(reindex_id, phase="reconcile")
            build.reconcile()
            if self._stopping(reindex_id):
                raise _Stopped
            self._update(reindex_id, phase="compare")
            comparison = self._compare(record)
            if self._stopping(reindex_id):
                raise _Stopped
            with self._lock:
                auto = self._records[reindex_id]["promote"] == "auto"
            self._update(
                reindex_id,
                state="promoting" if auto else "ready",
                phase=None,
                comparison=comparison,
                points=self._store.count(target),
                eta_s=0.0,
                built_at=now_iso(),
            )
            log.info("rollout %s ready: %s built with %s", reindex_id, target, record["bundle"])
            if auto:
                self._promote(reindex_id)
        except _Stopped:
            self._store.abort(collection)
            cancelled = reindex_id in self._cancelled
            self._update(
                reindex_id,
                state="cancelled" if cancelled else "failed",
                phase=None,
                error=None if cancelled else "interrupted: the gateway stopped during the build",
                finished_at=now_iso(),
            )
            self._release_unused()
            log.info("rollout %s stopped; %s still serves %s", reindex_id, source, collection)
        except Exception as exc:
            log.exception("rollout %s failed", reindex_id)
            try:
                self._store.abort(collection)
            finally:
                self._update(
                    reindex_id, state="failed", phase=None, error=str(exc), finished_at=now_iso()
                )
            self._release_unused()

    def _promote(self, reindex_id: str) -> dict[str, Any]:
        """Swap (the record is ``promoting``): queries and vectors switch in one alias update."""
        record = self.status(reindex_id)
        collection = record["collection"]
        try:
            if not self._ensure_served(record["bundle"]):
                raise ClipsearchError(
                    ErrorType.unavailable,
                    f"bundle {record['bundle']} is no longer served; cannot promote",
                )
            # Catch up on what reached only the current version since the build (a write
            # embedded just before the rollout began, and stored after its pass).
            _Build(self, record, catch_up=True).reconcile()
            old, new = self._store.swap(collection, keep=self._settings.admin.retention)
        except BaseException:
            self._update(reindex_id, state="ready")
            raise
        self._update(
            reindex_id,
            state="completed",
            finished_at=now_iso(),
            promoted_at=now_iso(),
            points=self._store.count(new),
        )
        log.info("rollout %s promoted: %s is now %s (was %s)", reindex_id, collection, new, old)
        self._release_unused()
        return self.status(reindex_id)

    def _compare(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Both versions over recent real text queries and the golden set (module docstring)."""
        collection = record["collection"]
        search = SearchService(self._embedder, self._store, collection)
        admin = self._settings.admin
        texts = (
            self._query_log.recent_texts(collection, admin.compare_queries)
            if self._query_log is not None
            else []
        )
        golden = self.golden(collection)
        sides: dict[str, _Side] = {
            "old": _Side(search, record["source"]),
            "new": _Side(search, record["target"]),
        }
        rows: builtins.list[dict[str, Any]] = []
        for text in texts:
            if self._stopping(record["id"]):
                raise _Stopped
            old, new = (side.ask(text) for side in sides.values())
            overlap = _overlap(old, new)
            rows.append(
                {"text": text, "overlap_at_10": overlap, "old": _ids(old), "new": _ids(new)}
            )
        for query in golden:
            for side in sides.values():
                side.judge(query["text"], query["expected"])
        overlaps = [float(r["overlap_at_10"]) for r in rows]
        return {
            "source_bundle": record["source_bundle"],
            "bundle": record["bundle"],
            "sampled_queries": len(texts),
            "image_queries_seen": (
                self._query_log.counts(collection)["image"] if self._query_log else 0
            ),
            "golden_queries": len(golden),
            "overlap_at_10": float(np.mean(overlaps)) if overlaps else None,
            "old": sides["old"].report(),
            "new": sides["new"].report(),
            "queries": rows[:QUERIES_SHOWN],
            "computed_at": now_iso(),
        }

    def _stopping(self, reindex_id: str) -> bool:
        lease = self._leases.get(reindex_id)
        if lease is not None and self._files.shared:
            if lease.lost.is_set() or self._closing.is_set():
                raise _HandOver  # another replica takes it over: leave store and record as is
            if self._files.cancel_requested(reindex_id):  # asked on another replica
                self._cancelled.add(reindex_id)
        return reindex_id in self._cancelled or self._closing.is_set()

    def _update(self, reindex_id: str, **fields: Any) -> None:
        with self._lock:
            record = self._records[reindex_id]
            record.update(fields, updated_at=now_iso())
            self._persist(record)

    def _note(self, reindex_id: str, notes: Sequence[dict[str, str]]) -> None:
        with self._lock:
            kept = self._records[reindex_id]["notes"]
            kept.extend(notes[: max(0, MAX_NOTES_KEPT - len(kept))])

    def _persist(self, record: dict[str, Any]) -> None:
        lease = self._leases.get(record["id"])
        if lease is not None and lease.lost.is_set():
            return  # another replica runs it now: its record is theirs
        self._files.write(record)

    def _load_existing(self) -> None:
        aliases = self._store.aliases(fresh=True)
        try:
            existing = self._files.load_all()
        except ClipsearchError as exc:  # shared records and Redis not up yet: search needs none
            if not self._files.shared or exc.type != ErrorType.unavailable:
                raise
            log.warning("rollout records not read at start (%s): read on each request", exc)
            existing = []
        for record in existing:
            record.setdefault("bundle_spec", None)
            record.setdefault("source_bundle", record.get("bundle"))
            record.setdefault("comparison", None)
            self._records[record["id"]] = record
        for record in self._records.values():
            if self._files.shared and record["state"] in (*UNATTENDED, "ready"):
                continue  # a live replica runs it, or the records' watcher hands it to one
            collection, target = record["collection"], record["target"]
            building = aliases.get(collection + NEXT) == target
            state = record["state"]
            if state == "promoting" and aliases.get(collection) == target:
                record.update(state="completed", finished_at=now_iso())
            elif state in ("promoting", "ready") and building:
                if self._ensure_served(record["bundle"]):
                    record["state"] = "ready"  # still dual-writing: promote or cancel it
                else:
                    self._store.abort(collection)
                    record.update(
                        state="failed",
                        error=f"its bundle {record['bundle']} could not be loaded again on "
                        "restart; the version it built was dropped",
                        finished_at=now_iso(),
                    )
            elif state in (*ACTIVE, "running", "interrupted"):  # the last two: older records
                if building:
                    self._store.abort(collection)  # the half-built version
                record.update(
                    state="failed",
                    error="interrupted: the gateway stopped during the build",
                    finished_at=now_iso(),
                )
            else:
                continue
            record["updated_at"] = now_iso()
            self._persist(record)
        # The versions searched now were built by bundles this encoder must serve.
        for name in self._store.names():
            current = aliases.get(name)
            if current is not None and not self._ensure_served(self._source_bundle(current)):
                log.error(
                    "collection %s is searched with bundle %s, which is not served: its "
                    "searches fail until it is (CLIPSEARCH_ENCODER__EXTRA_BUNDLES) or it is "
                    "rolled back",
                    name,
                    self._source_bundle(current),
                )
            # A rollout in progress (ready, or run by another replica) dual-writes: its
            # bundle must be served here too, loaded again from its spec (record or metadata).
            building = aliases.get(name + NEXT)
            if building is not None and not self._ensure_served(self._source_bundle(building)):
                log.error(
                    "collection %s: the version being built, %s, is of bundle %s, which cannot "
                    "be loaded here: writes to %s fail until it is served or the rollout is "
                    "cancelled",
                    name,
                    building,
                    self._source_bundle(building),
                    name,
                )
            # Writes reach the previous version too, embedded by its bundle: one that cannot
            # be served again would fail every write, so it is given up (no rollback to it).
            previous = aliases.get(name + PREVIOUS)
            if previous is not None and not self._ensure_served(self._source_bundle(previous)):
                self._store.update_aliases({}, [name + PREVIOUS])
                log.error(
                    "collection %s: its previous version %s was built by bundle %s, which "
                    "cannot be served again; it can no longer be rolled back to",
                    name,
                    previous,
                    self._source_bundle(previous),
                )
        # Remote workers outlive a gateway: what its rollouts loaded and nothing needs now goes.
        self._release_unused()


def check_collection_name(name: object) -> str:
    """A valid collection name, or (invalid_input) saying what one is."""
    if not isinstance(name, str) or not COLLECTION_NAME.fullmatch(name) or "__" in name:
        raise invalid(
            "a collection name is 1-63 characters: lower-case letters, digits, '-' and '_', "
            "starting with a letter or digit, with no '__'",
            {"name": name},
        )
    return name


def _build_settings(settings: Settings, video: Mapping[str, Any] | None) -> Settings:
    """The gateway's settings with a rollout's video segmenting, validated as at start-up."""
    if not video:
        return settings
    changed = VideoSettings.model_validate({**settings.video.model_dump(), **video})
    return settings.model_copy(update={"video": changed})


def _not_in(reindex_id: str, state: str, action: str) -> ClipsearchError:
    wanted = "ready" if action == "promote" else "queued, building or ready"
    return ClipsearchError(
        ErrorType.conflict,
        f"rollout {reindex_id} is {state}; only a rollout that is {wanted} can {action}",
        {"id": reindex_id, "state": state},
    )


def _golden(queries: Any) -> list[dict[str, Any]]:
    """A golden set as given, checked: a non-empty list of ``{"text", "expected": [ids]}``."""
    if not isinstance(queries, list) or not queries:
        raise invalid("queries must be a non-empty list of {'text', 'expected': [ids]}")
    if len(queries) > MAX_GOLDEN_QUERIES:
        raise invalid(f"{len(queries)} golden queries; the limit is {MAX_GOLDEN_QUERIES}")
    out = []
    for i, query in enumerate(queries):
        if not isinstance(query, Mapping) or set(query) != {"text", "expected"}:
            raise invalid(f"golden query {i}: give exactly 'text' and 'expected'", {"index": i})
        text, expected = query["text"], query["expected"]
        if not isinstance(text, str) or not text.strip():
            raise invalid(f"golden query {i}: 'text' must be a non-empty string", {"index": i})
        if (
            not isinstance(expected, list)
            or not expected
            or len(expected) > MAX_EXPECTED_IDS
            or not all(isinstance(e, str) and e for e in expected)
        ):
            raise invalid(
                f"golden query {i}: 'expected' must be 1 to {MAX_EXPECTED_IDS} item ids",
                {"index": i},
            )
        out.append({"text": text.strip(), "expected": list(dict.fromkeys(expected))})
    return out


def _ids(hits: Sequence[StoredHit]) -> list[str]:
    return [h.id for h in hits]


def _overlap(old: Sequence[StoredHit], new: Sequence[StoredHit]) -> float:
    """Shared ids of the two top-10s, over the longer list's length (1.0: the same ids)."""
    longest = max(len(old), len(new))
    return len(set(_ids(old)) & set(_ids(new))) / longest if longest else 1.0


class _Side:
    """One version in a comparison: its answers, scores, latencies and golden recall."""

    def __init__(self, search: SearchService, version: str) -> None:
        self.search = search
        self.version = version
        self.scores: list[float] = []
        self.latency_ms: list[float] = []
        self.recall: dict[int, list[float]] = {1: [], COMPARE_TOP: []}
        self.score_kind: str | None = None

    def ask(self, text: str) -> list[StoredHit]:
        started = time.perf_counter()
        result = self.search.search(
            Query(text=text), SearchOptions(limit=COMPARE_TOP), version=self.version
        )
        self.latency_ms.append((time.perf_counter() - started) * 1000.0)
        self.scores += [h.score for h in result.hits]
        self.score_kind = result.score_kind
        return result.hits

    def judge(self, text: str, expected: Sequence[str]) -> None:
        hits = self.ask(text)
        for k in self.recall:
            found = {
                str(key)
                for h in hits[:k]
                for key in (h.id, h.payload.get("media_id"), h.payload.get("uri"))
                if key
            }
            self.recall[k].append(len(found & set(expected)) / min(k, len(expected)))

    def report(self) -> dict[str, Any]:
        def pct(values: Sequence[float], q: float) -> float | None:
            return float(np.percentile(values, q)) if values else None

        def mean(values: Sequence[float]) -> float | None:
            return float(np.mean(values)) if values else None

        return {
            "version": self.version,
            "score_kind": self.score_kind,
            "recall_at_1": mean(self.recall[1]),
            "recall_at_10": mean(self.recall[COMPARE_TOP]),
            "score_p10": pct(self.scores, 10),
            "score_p50": pct(self.scores, 50),
            "score_p90": pct(self.scores, 90),
            "latency_p50_ms": pct(self.latency_ms, 50),
            "searches": len(self.latency_ms),
        }


class _Stopped(Exception):
    pass


class _HandOver(BaseException):  # not an error: it passes every handler in ``_run``
    """This process no longer runs the rollout (shared records): its lease was lost, or the
    gateway is closing and leaves the build to another replica."""


class _Build:
    """One rollout's passes over the current version."""

    def __init__(
        self, owner: InProcessReindexer, record: Mapping[str, Any], *, catch_up: bool = False
    ) -> None:
        self.owner = owner
        self.id: str = record["id"]
        self.source: str = record["source"]
        self.target: str = record["target"]
        self.name: str = record["collection"]
        self.bundle: str = record["bundle"]
        # The same bundle made the current version's vectors: what cannot be remade is copied.
        self.same_bundle = record["bundle"] == record["source_bundle"]
        self.store = owner._store
        self.settings = _build_settings(owner._settings, record.get("video"))
        self.roots = allowed_roots(self.settings)  # resolved once: _readable runs per point
        self.rebuilt_videos: set[str] = set()
        self.total = self.store.count(self.source)
        self.done = 0
        self.rebuilt = record.get("rebuilt", 0) if catch_up else 0
        self.copied: int = record.get("copied", 0) if catch_up else 0
        self.missing: int = record.get("missing", 0) if catch_up else 0
        self.started = time.monotonic()
        if not catch_up:
            owner._update(self.id, total=self.total)

    def pages(self, collection: str, *, with_vectors: bool = False) -> Any:
        offset: str | None = None
        while True:
            if self.owner._stopping(self.id):
                raise _Stopped
            records, offset = self.store.scroll(
                collection, limit=PAGE, offset=offset, with_vectors=with_vectors
            )
            if records:
                yield records
            if offset is None:
                return

    def rebuild(self) -> None:
        seen_videos: set[str] = set()
        with Fetcher(self.settings) as fetcher:
            for records in self.pages(self.source):
                entries: list[SourceEntry] = []
                for rec in records:
                    entry = self._entry(rec.payload)
                    if entry is None:
                        continue
                    if entry.kind == "video":
                        if entry.id in seen_videos:
                            continue
                        seen_videos.add(entry.id)
                    entries.append(entry)
                self.rebuilt += self._index(entries, fetcher)
                self.done += len(records)
                self._progress()

    def _index(self, entries: Sequence[SourceEntry], fetcher: Fetcher) -> int:
        """Make ``entries`` again into the new version with its bundle; how many were made."""
        if not entries:
            return 0
        outcomes = index_entries(
            entries,
            embedder=patient(self.owner._embedder, self.settings.encoder.bulk_patience_s),
            store=cast(
                VectorStore,
                _Into(self.store, self.target, self.source, self.bundle, self.settings.video),
            ),
            collection=self.name,
            settings=self.settings,
            fetcher=fetcher,
        )
        notes = []
        made = 0
        for entry, outcome in zip(entries, outcomes, strict=True):
            if outcome.error:
                notes.append({"item": entry.id, "reason": f"not rebuilt: {outcome.error}"})
                continue
            made += 1
            if entry.kind == "video":
                self.rebuilt_videos.add(entry.id)
            notes += [{"item": entry.id, "reason": p} for p in outcome.partial]
        self.owner._note(self.id, notes)
        return made

    def reconcile(self) -> None:
        """What the rebuild did not make: copied when the same bundle made its vectors, else
        made again where its source can be read, else counted missing."""
        copied, missing = self.copied, self.missing
        with Fetcher(self.settings) as fetcher:
            for records in self.pages(self.source):
                present = {r.id for r in self.store.retrieve(self.target, [r.id for r in records])}
                absent = [
                    r
                    for r in records
                    if r.id not in present and not self._video_made(r.payload.get("video_id"))
                ]
                if not absent:
                    continue
                if self.same_bundle:
                    full = self.store.retrieve(
                        self.source, [r.id for r in absent], with_vectors=True
                    )
                    self.store.inner.upsert(
                        self.target, [Point(r.id, dict(r.vectors), dict(r.payload)) for r in full]
                    )
                    copied += len(full)
                    why = "copied from the previous version"
                    self.owner._note(self.id, [{"item": _label(r), "reason": why} for r in full])
                    continue
                entries = {e.id: e for r in absent if (e := self._entry(r.payload)) is not None}
                self.rebuilt += self._index(list(entries.values()), fetcher)
                made = {r.id for r in self.store.retrieve(self.target, [r.id for r in absent])}
                lost = [r for r in absent if r.id not in made]
                missing += len(lost)
                why = f"missing: cannot be made with {self.bundle} (its source is not stored)"
                self.owner._note(self.id, [{"item": _label(r), "reason": why} for r in lost])
        self.owner._update(self.id, copied=copied, missing=missing, rebuilt=self.rebuilt)

    def _video_made(self, video_id: object) -> bool:
        """Whether the new version holds ``video_id`` made again (by this pass, or by the build
        before a catch-up): then its old segments that the new version lacks were cut another
        way (a reindex onto other video segmenting), not lost, and are not copied back."""
        if not video_id:
            return False
        if video_id not in self.rebuilt_videos:
            if not self.store.count(self.target, {"video_id": str(video_id)}):
                return False
            self.rebuilt_videos.add(str(video_id))
        return True

    def _entry(self, payload: Mapping[str, Any]) -> SourceEntry | None:
        """The source a point was made from, or None when it cannot be read again."""
        kind = payload.get("kind")
        uri = payload.get("uri")
        common: dict[str, Any] = {
            "caption": payload.get("caption"),
            "description": None
            if payload.get("description_generated")
            else payload.get("description"),
            "metadata": payload.get("metadata") or {},
        }
        if uri is not None and not self._readable(str(uri)):
            return None
        if kind == Kind.video_segment.value:
            if uri is None or not payload.get("video_id"):
                return None
            return SourceEntry(uri=str(uri), id=str(payload["video_id"]), kind="video", **common)
        media_id = payload.get("media_id")
        if not media_id or (kind == Kind.image.value and uri is None):
            return None  # an image posted inline: its bytes were never stored
        return SourceEntry(uri=None if uri is None else str(uri), id=str(media_id), **common)

    def _readable(self, uri: str) -> bool:
        """URLs go through the fetch guard; local paths only under today's allowed roots."""
        if uri.startswith(("http://", "https://")):
            return True
        try:
            path = local_path(uri).resolve()
        except (OSError, RuntimeError, ValueError):
            return False
        return path.is_file() and under_roots(path, self.roots)

    def _progress(self) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.done / elapsed
        left = max(self.total - self.done, 0)
        self.owner._update(
            self.id,
            done=self.done,
            rebuilt=self.rebuilt,
            rate_per_s=rate,
            eta_s=left / max(rate, 1e-9),
        )


class _Into:
    """The store as ``index_entries`` sees it during a rebuild: every write lands in the new
    version, embedded by its bundle, keeping the fields a rebuild cannot know, and is taken
    back if its item was deleted from the current version meanwhile (a delete that came before
    the write). A video is cut again from its source, so its segments are checked by the time
    they span: a segment the user deleted left a span no stored segment covers, and the
    rebuild must not bring it back."""

    def __init__(
        self, store: VersionedStore, target: str, source: str, bundle: str, video: VideoSettings
    ) -> None:
        self._store = store
        self._target = target
        self._source = source
        self._bundle = bundle
        self._video = video

    def write_bundles(self, collection: str) -> list[str | None]:
        del collection
        return [self._bundle]

    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        # ``collection``: the alias; ids come from it, writes go to the new version.
        old = {r.id: r.payload for r in self._store.retrieve(self._source, [p.id for p in points])}
        merged = [Point(p.id, p.vectors, {**p.payload, **_kept(old.get(p.id))}) for p in points]
        self._store.inner.upsert(self._target, merged)
        # Asked after the write: a delete before it found nothing to delete in the new version.
        plain = [p.id for p in merged if not p.payload.get("video_id")]
        there = {r.id for r in self._store.retrieve(self._source, plain)}
        gone = [p.id for p in merged if not p.payload.get("video_id") and p.id not in there]
        videos: dict[str, list[Point]] = {}
        for p in merged:
            if video_id := p.payload.get("video_id"):
                videos.setdefault(str(video_id), []).append(p)
        for video_id, segments in videos.items():
            gone += self._deleted_segments(collection, video_id, segments)
        if gone:
            self._store.inner.delete(self._target, gone)

    def _deleted_segments(
        self, collection: str, video_id: str, segments: Sequence[Point]
    ) -> list[str]:
        """The rebuilt ``segments`` whose span is not (at least half) covered by the segments
        of the video still in the current version: deleted since, one by one or all."""
        try:
            stored = video_segments(
                self._store, collection, video_id, self._video, version=self._source
            )
        except ClipsearchError as exc:
            if exc.type != ErrorType.not_found:
                raise
            return [p.id for p in segments]  # the whole video was deleted
        spans = sorted(
            (float(r.payload.get("t_start") or 0.0), float(r.payload.get("t_end") or 0.0))
            for r in stored
        )
        return [p.id for p in segments if not _covered(p.payload, spans)]

    def retrieve(
        self, collection: str, ids: Sequence[str], *, with_vectors: bool = False
    ) -> list[Record]:
        del collection
        return self._store.retrieve(self._target, ids, with_vectors=with_vectors)

    def count(self, collection: str, filter: Mapping[str, FilterValue] | None = None) -> int:  # noqa: A002
        del collection
        return self._store.count(self._target, filter)


def _covered(payload: Mapping[str, Any], spans: Sequence[tuple[float, float]]) -> bool:
    """Whether at least half of a segment's span lies inside the (sorted, disjoint) ``spans``."""
    start, end = float(payload.get("t_start") or 0.0), float(payload.get("t_end") or 0.0)
    inside = sum(max(0.0, min(end, b) - max(start, a)) for a, b in spans)
    return inside >= 0.5 * (end - start)


def _kept(payload: Mapping[str, Any] | None) -> dict[str, Any]:
    if not payload:
        return {}
    return {key: payload[key] for key in _KEPT_FIELDS if payload.get(key)}


def _label(record: Record) -> str:
    return str(record.payload.get("media_id") or record.id)
