"""The interface the gateway's admin routes use to run reindexes (``indexer.reindex`` builds it;
the gateway never imports ``indexer``)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Reindexer(Protocol):
    def start(self, collection: str, bundle: str | None = None) -> dict[str, Any]:
        """Begin building the next version of ``collection``; its record (``id``, ``state``,
        ``source``, ``target``). (conflict) while another reindex of it runs; (invalid_input)
        for a bundle this gateway cannot embed with."""

    def status(self, reindex_id: str) -> dict[str, Any]:
        """``{"id","collection","state","source","target","total","done","rebuilt","copied",
        "notes","rate_per_s","eta_s",...}``; (not_found) for an unknown id."""

    def list(self) -> list[dict[str, Any]]:
        """Every reindex this gateway ran, newest first."""

    def cancel(self, reindex_id: str) -> dict[str, Any]:
        """Stop a running reindex and drop the version it was building; searches never noticed."""

    def rollback(self, collection: str) -> dict[str, Any]:
        """Point the collection back at its previous version: ``{"collection","from","to"}``."""

    def ready(self) -> bool: ...

    def close(self) -> None: ...
