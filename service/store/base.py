"""The VectorStore protocol: the only way the rest of clipsearch touches Qdrant.

Two implementations speak it: ``QdrantEdgeStore`` (embedded, in-process engine, the default) and
``QdrantServerStore`` (qdrant-client against a Qdrant server). Congruence tests run one suite
against both and compare results. Calls are synchronous and thread-safe; async callers run them
in a worker thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from service.core.domain import FilterValue, Point, Record, StoredHit, VectorName


@runtime_checkable
class VectorStore(Protocol):
    def ensure_collection(self, name: str, dims: Mapping[VectorName, int]) -> None:
        """Create the collection with cosine named vectors if missing; raise on a dim mismatch.

        Names in ``MULTI_VECTORS`` (``caption``) are created as multivectors compared by MaxSim.
        A collection made before that keeps its single ``caption`` vector (a warning says so).
        """

    def collection_exists(self, name: str) -> bool: ...

    def drop_collection(self, name: str) -> None: ...

    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        """Insert or replace points by id (a point's missing vectors are simply absent).

        A multivector takes its rows (``list[list[float]]``, at least one), or one vector as a
        single row; a collection that stores ``caption`` as one vector takes a one-row caption
        and refuses more rows with ``conflict``."""

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
        """Nearest points by cosine on one named vector; points lacking it are never returned.
        ``vector`` is always one vector: against a multivector it scores each point by its
        best-matching row (MaxSim with one query row).

        ``filter`` is payload equality; a list value matches any of its elements (for array
        fields such as ``tags`` it matches when any element is among them).
        """

    def retrieve(
        self, collection: str, ids: Sequence[str], *, with_vectors: bool = False
    ) -> list[Record]:
        """Records for the ids that exist, in the order asked; unknown ids are skipped. With
        vectors, a name in ``MULTI_VECTORS`` always comes back as rows."""

    def count(self, collection: str, filter: Mapping[str, FilterValue] | None = None) -> int: ...  # noqa: A002

    def delete(self, collection: str, ids: Sequence[str]) -> None: ...

    def close(self) -> None: ...

    # -- collection versions (``service.store.versions`` builds on these) --------------------
    def list_collections(self) -> list[str]:
        """Names of the real collections (not aliases), sorted."""

    def vector_dims(self, name: str) -> dict[str, int]:
        """The named vectors of a collection (or of the collection an alias points at)."""

    def collection_metadata(self, name: str) -> dict[str, Any]:
        """The collection's metadata (a JSON object; empty when none was set)."""

    def set_collection_metadata(self, name: str, metadata: Mapping[str, Any]) -> None:
        """Merge ``metadata``'s keys into the collection's metadata."""

    def aliases(self) -> dict[str, str]:
        """Every alias and the collection it points at."""

    def update_aliases(self, point: Mapping[str, str], remove: Sequence[str] = ()) -> None:
        """Atomically remove the ``remove`` aliases and point each alias of ``point`` at its
        collection: a reader sees the old mapping or the new one, never a mix. Every name taken
        by a collection operation may be an alias; it is resolved first."""

    def scroll(
        self,
        collection: str,
        *,
        limit: int,
        offset: str | None = None,
        with_vectors: bool = False,
    ) -> tuple[list[Record], str | None]:
        """One page of points in id order, and the offset of the next page (None at the end)."""
