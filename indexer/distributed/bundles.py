"""Which bundles a Celery indexing task embeds with, and how an indexer comes to serve them.

A write to a collection is embedded once per bundle of the versions it must reach
(``VersionedStore.write_bundles``): the current version's; during a model rollout the ``.next``
version's too (dual write); after a swap the ``.previous`` one's, which a rollback may make
current again. The gateway decides them when it sends a job (``task_bundles``) and every task of
the job carries them as ``bundles``: ``[{"ref": name@version, "spec": how to load it}]``. The
``spec`` is what the rollout was started with (a zoo name, a bundle folder, ``tiny``), recorded
in the metadata of the version it built (:data:`SPEC_KEY`); a configured bundle has none.

An indexer serves what a task names (:class:`TaskBundles`): a bundle its embedder serves
already is used as it is; one it does not is loaded from its spec (the in-process encoder, with
the resolver the composition root gives) or, with remote encoder workers, waited for (the
gateway had them load it: ``LoadBundle``), the task retrying meanwhile. A bundle this indexer
loaded that no task has named for ``idle_s`` is dropped again. The writer routes each point to
the version its bundle built (the ``model`` payload field, ``VersionedStore.upsert``).

A job sent before a rollout began carries only the current bundle: its points reach only the
current version, and the rollout remakes them when it catches up before the swap
(``indexer.reindex``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from service.clients.base import EmbeddingClient
from service.core.bundle.manifest import Bundle
from service.core.errors import ClipsearchError, ErrorType, invalid
from service.store.versions import NEXT, PREVIOUS, VersionedStore, parse_version

log = logging.getLogger(__name__)

# The collection-metadata key under which a version built by a rollout records the spec of its
# bundle (beside the settings it records under ``service.core.contract.METADATA_KEY``).
SPEC_KEY = "clipsearch_bundle_spec"
# A bundle an indexer loaded for its tasks is dropped once no task named it for this long.
IDLE_S = 600.0
MAX_BUNDLES = 8  # more in one task is no rollout: refused

BundleResolver = Callable[[str], Bundle]


def task_bundles(store: VersionedStore, collection: str) -> list[dict[str, str | None]]:
    """The bundles a write to ``collection`` is embedded with now, each with the spec that
    loads it (None: a configured bundle, or one recorded by no rollout); empty for a
    collection that is no alias (not versioned: the indexer's default bundle)."""
    aliases = store.aliases(fresh=True)
    out: list[dict[str, str | None]] = []
    for suffix in ("", NEXT, PREVIOUS):
        name = aliases.get(collection + suffix)
        version = parse_version(name) if name else None
        if name is None or version is None or version.bundle is None:
            continue
        if any(b["ref"] == version.bundle for b in out):
            continue
        try:
            spec = store.inner.collection_metadata(name).get(SPEC_KEY)
        except ClipsearchError as exc:
            if exc.type is not ErrorType.not_found:
                raise
            continue  # dropped meanwhile (a cancel): nothing to write there
        out.append({"ref": version.bundle, "spec": spec if isinstance(spec, str) else None})
    return out


def spec_of(store: VersionedStore, ref: str) -> str | None:
    """The spec a rollout recorded for bundle ``ref`` in any version it built, newest first."""
    for name in sorted(store.inner.list_collections(), reverse=True):
        version = parse_version(name)
        if version is None or version.bundle != ref:
            continue
        try:
            spec = store.inner.collection_metadata(name).get(SPEC_KEY)
        except ClipsearchError:
            continue
        if isinstance(spec, str) and spec:
            return spec
    return None


def parse_task_bundles(value: object) -> list[tuple[str, str | None]]:
    """A task's ``bundles`` field, checked (a task is only JSON): ``[(ref, spec)]``."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_BUNDLES:
        raise invalid(f"a task's bundles must be a list of at most {MAX_BUNDLES}")
    out: list[tuple[str, str | None]] = []
    for item in value:
        ref = item.get("ref") if isinstance(item, Mapping) else None
        spec = item.get("spec") if isinstance(item, Mapping) else None
        if (
            not isinstance(ref, str)
            or "@" not in ref
            or (spec is not None and not isinstance(spec, str))
        ):
            raise invalid("a task's bundle must be {'ref': name@version, 'spec': str or null}")
        if ref not in (r for r, _ in out):
            out.append((ref, spec or None))
    return out


class TaskBundles:
    """The bundles an indexer process serves for its tasks (one per worker process)."""

    def __init__(
        self,
        embedder: Callable[[], EmbeddingClient],
        resolve: BundleResolver | None = None,
        *,
        idle_s: float = IDLE_S,
    ) -> None:
        self._embedder = embedder
        self._resolve = resolve
        self._idle_s = idle_s
        self._lock = threading.Lock()
        self._loaded: dict[str, float] = {}  # ref -> last time a task named it
        self._clock = time.monotonic

    def served(self) -> list[str]:
        embedder = self._embedder()
        listed = [b.ref for b in embedder.info().bundles]
        return listed or [embedder.info().bundle]

    def ensure(
        self, bundles: Sequence[tuple[str, str | None]], *, wait: bool = True
    ) -> list[str | None]:
        """Serve every bundle ``bundles`` names; the refs to embed with, in order (``[None]``:
        the default bundle, for a task that names none). (unavailable) while remote workers do
        not serve one yet, (conflict) when a bundle cannot be served here, (not_found /
        invalid_input) when its spec names none or a broken one.

        ``wait=False`` (a task that has waited long enough): a bundle besides the first (the
        current version's) that no remote worker serves is left out, with a warning. Its
        rollout ended meanwhile (the gateway unloaded it), or the rollout's catch-up remakes the
        items before the swap."""
        if not bundles:
            return [None]
        out: list[str | None] = []
        with self._lock:
            now = self._clock()
            for i, (ref, spec) in enumerate(bundles):
                if ref in self._loaded:
                    self._loaded[ref] = now
                if ref not in self.served():
                    try:
                        self._serve(ref, spec)
                    except ClipsearchError as exc:
                        if wait or i == 0 or exc.type is not ErrorType.unavailable:
                            raise
                        log.warning("indexer: embedding without bundle %s: %s", ref, exc.message)
                        continue
                out.append(ref)
            self._free_idle({ref for ref, _ in bundles})
        return out

    def _serve(self, ref: str, spec: str | None) -> None:
        embedder = self._embedder()
        add = getattr(embedder, "add_bundle", None)
        if add is None:
            # Remote workers: the gateway has them load it; a worker may not serve it yet.
            try:
                embedder.info(bundle=ref)
                return
            except ClipsearchError as exc:
                if exc.type is not ErrorType.not_found:
                    raise
            raise ClipsearchError(
                ErrorType.unavailable,
                f"no encoder worker serves bundle {ref} yet (the gateway loads it on them for "
                "a rollout)",
                {"bundle": ref},
                retry_after_s=1.0,
            )
        if spec is None or self._resolve is None:
            raise ClipsearchError(
                ErrorType.conflict,
                f"this indexer does not serve bundle {ref} and cannot load it"
                + (" (no spec recorded for it)" if spec is None else "")
                + f"; it serves {', '.join(self.served())}: start it with that bundle too "
                "(CLIPSEARCH_ENCODER__EXTRA_BUNDLES)",
                {"bundle": ref},
            )
        bundle = self._resolve(spec)
        if bundle.manifest.ref != ref:
            raise ClipsearchError(
                ErrorType.conflict,
                f"bundle spec {spec!r} names {bundle.manifest.ref} here, not {ref}: the indexer "
                "and the gateway resolve it to different bundles",
                {"bundle": ref, "spec": spec, "found": bundle.manifest.ref},
            )
        add(bundle)
        self._loaded[ref] = self._clock()
        log.info("indexer: loaded bundle %s from %r for a task", ref, spec)

    def _free_idle(self, keep: set[str]) -> None:
        drop = getattr(self._embedder(), "drop_bundle", None)
        now = self._clock()
        for ref, used in list(self._loaded.items()):
            if ref in keep or now - used < self._idle_s:
                continue
            del self._loaded[ref]
            if drop is None:
                continue
            try:
                drop(ref, grace_s=5.0, runtime_only=True)
                log.info("indexer: bundle %s freed: no task named it for %.0f s", ref, now - used)
            except ClipsearchError as exc:
                log.warning("indexer: bundle %s not freed: %s", ref, exc.message)
