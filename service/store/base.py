"""The VectorStore protocol: the only way the rest of clipsearch touches Qdrant.

Two implementations speak it: ``QdrantEdgeStore`` (embedded, in-process engine, the default) and
``QdrantServerStore`` (qdrant-client against a Qdrant server). Congruence tests run one suite
against both and compare results. Calls are synchronous and thread-safe; async callers run them
in a worker thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from service.core.domain import FilterValue, Point, Record, StoredHit, VectorName


@runtime_checkable
class VectorStore(Protocol):
    def ensure_collection(self, name: str, dims: Mapping[VectorName, int]) -> None:
        """Create the collection with cosine named vectors if missing; raise on a dim mismatch."""

    def collection_exists(self, name: str) -> bool: ...

    def drop_collection(self, name: str) -> None: ...

    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        """Insert or replace points by id (a point's missing vectors are simply absent)."""

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

        ``filter`` is payload equality; a list value matches any of its elements (for array
        fields such as ``tags`` it matches when any element is among them).
        """

    def retrieve(
        self, collection: str, ids: Sequence[str], *, with_vectors: bool = False
    ) -> list[Record]:
        """Records for the ids that exist, in the order asked; unknown ids are skipped."""

    def count(self, collection: str, filter: Mapping[str, FilterValue] | None = None) -> int: ...  # noqa: A002

    def delete(self, collection: str, ids: Sequence[str]) -> None: ...

    def close(self) -> None: ...
