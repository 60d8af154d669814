"""The interface the gateway's admin routes (and the admin dashboard) use to run model rollouts
(``indexer.reindex`` builds it; the gateway never imports ``indexer``)."""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Reindexer(Protocol):
    def start(
        self,
        collection: str,
        bundle: str | None = None,
        promote: str = "manual",
        *,
        video: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Begin building the next version of ``collection`` with ``bundle`` (a served
        ``name@version`` or name, a zoo name, a bundle folder, ``tiny``; None: the current
        version's) and ``video`` segmenting (None: this process's), which the version
        records; its record. (not_found) for an unknown collection or bundle;
        (invalid_input) for a bundle whose files fail their checksums, or one remote workers do
        not serve; (conflict) while another rollout of it is active or another one builds."""

    def status(self, reindex_id: str) -> dict[str, Any]:
        """``{"id","collection","state","bundle","source_bundle","source","target","total",
        "done","rebuilt","copied","missing","notes","rate_per_s","eta_s","comparison",...}``;
        ``state`` in queued|building|ready|promoting|completed|failed|cancelled; (not_found)
        for an unknown id."""

    def list(self) -> list[dict[str, Any]]:
        """Every rollout this gateway ran, newest first."""

    def cancel(self, reindex_id: str) -> dict[str, Any]:
        """Stop a queued, building or ready rollout and drop the version it built; searches
        never noticed. (conflict) in any other state."""

    def promote(self, reindex_id: str) -> dict[str, Any]:
        """Switch a ``ready`` rollout's collection to the new version and its bundle in one
        atomic alias update; its record (``completed``). (conflict) unless ready."""

    def rollback(self, collection: str) -> dict[str, Any]:
        """Point the collection (and so its query model) back at its previous version:
        ``{"collection","from","to","bundle"}``. (conflict) with nothing to return to."""

    def set_golden(self, collection: str, queries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Store the golden set ``[{"text","expected":[ids]}]`` a rollout's comparison scores
        both versions on: ``{"collection","queries"}``. (invalid_input) for another shape."""

    def golden(self, collection: str) -> builtins.list[dict[str, Any]]:
        """The golden set stored for ``collection`` (empty without one)."""

    def create_collection(self, name: str, bundle: str | None = None) -> dict[str, Any]:
        """Create an empty collection searched and written with ``bundle`` (as in
        :meth:`start`; None: the configured bundle), loading it if the encoder can; the
        collection as ``VersionedStore.describe`` gives it. (invalid_input) for a bad name or
        bundle, (conflict) when it exists, (not_found) for no such bundle."""

    def delete_collection(self, name: str) -> dict[str, Any]:
        """Delete a collection, every version of it and its thumbnails:
        ``{"collection","deleted_versions"}``. (conflict) for the configured collection or
        while a rollout of it is active; (not_found) for none."""

    def serve_collection(self, name: str) -> bool:
        """Whether the encoder serves the bundle ``name`` is searched with, loading it from
        the spec its version records where it can."""

    def ready(self) -> bool: ...

    def close(self) -> None: ...
