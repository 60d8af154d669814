"""QdrantServerStore: the VectorStore on a Qdrant server (or cluster), through qdrant-client.

Also runs on qdrant-client's local mode (``QdrantClient(":memory:")``), a brute-force engine in
Python that the congruence tests use as the reference for the embedded store.

Points and queries are shaped by the collection's layout (its dims, and which vectors are
multivectors), read once per collection name and cached. A name may be an alias that a reindex
repoints at a version of another layout: a write or query that the cached layout refuses is
tried once more with the layout read again.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from service.core.domain import FilterValue, Point, Record, StoredHit, VectorName
from service.core.errors import ClipsearchError, ErrorType, invalid
from service.store._checks import (
    check_collection_name,
    check_dims,
    check_page,
    domain_vectors,
    multi_names,
    parse_ids,
    query_vector,
    storage_vectors,
)
from service.store._server_client import server_filter, translate

if TYPE_CHECKING:
    from service.core.config import Settings

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class _Layout:
    dims: dict[str, int]
    multi: frozenset[str]  # the multivectors (MaxSim)


class QdrantServerStore:
    """VectorStore over a ``QdrantClient``; thread-safe as the client is."""

    def __init__(self, client: QdrantClient) -> None:
        self._client = client
        self._layouts: dict[str, _Layout] = {}
        self._layouts_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> QdrantServerStore:
        """Build the client from ``settings.qdrant``; it connects lazily, on the first call."""
        conf = settings.qdrant
        if not conf.url:
            raise invalid("QdrantServerStore needs settings.qdrant.url")
        client = QdrantClient(
            url=conf.url,
            api_key=conf.api_key.get_secret_value() if conf.api_key else None,
            timeout=max(1, math.ceil(conf.timeout_s)),
            # The version check would be a network call at construction; keep start-up lazy.
            check_compatibility=False,
        )
        return cls(client)

    def ensure_collection(self, name: str, dims: Mapping[VectorName, int]) -> None:
        check_collection_name(name)
        wanted = check_dims(dims)
        with translate("create collection", name):
            if self._client.collection_exists(name):
                self._check_same_dims(name, wanted)
                return
            multi = multi_names(wanted)
            max_sim = models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM)
            try:
                self._client.create_collection(
                    name,
                    vectors_config={
                        vec: models.VectorParams(
                            size=size,
                            distance=models.Distance.COSINE,
                            multivector_config=max_sim if vec in multi else None,
                        )
                        for vec, size in wanted.items()
                    },
                )
            except UnexpectedResponse as exc:
                if exc.status_code != 409:  # 409: another replica created it meanwhile
                    raise
                self._check_same_dims(name, wanted)
                return
        with self._layouts_lock:
            self._layouts[name] = _Layout(wanted, multi)
        logger.info(
            "created collection %s with dims %s (multivectors %s)", name, wanted, sorted(multi)
        )

    def collection_exists(self, name: str) -> bool:
        check_collection_name(name)
        with translate("check collection", name):
            return bool(self._client.collection_exists(name))

    def drop_collection(self, name: str) -> None:
        check_collection_name(name)
        with translate("drop collection", name):
            self._client.delete_collection(name)
        with self._layouts_lock:
            self._layouts.pop(name, None)
        logger.info("dropped collection %s", name)

    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        check_collection_name(collection)
        if not points:
            return
        ids = parse_ids([p.id for p in points])

        def write(layout: _Layout) -> None:
            structs = [
                models.PointStruct(
                    id=pid,
                    vector=storage_vectors(
                        collection, layout.dims, layout.multi, p.vectors, f"point {p.id}"
                    ),
                    payload=dict(p.payload),
                )
                for pid, p in zip(ids, points, strict=True)
            ]
            with translate("upsert", collection):
                self._client.upsert(collection, points=structs, wait=True)

        self._with_layout(collection, write)

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
        check_collection_name(collection)
        check_page(limit, offset)
        query_filter = server_filter(filter)

        def query(layout: _Layout) -> list[Any]:
            values: Any = [float(x) for x in query_vector(layout.dims, vector_name, vector)]
            if vector_name in layout.multi:
                values = [values]  # a one-row query: MaxSim is the best row's cosine
            with translate("search", collection):
                return self._client.query_points(
                    collection,
                    query=values,
                    using=vector_name,
                    query_filter=query_filter,
                    limit=limit,
                    offset=offset or None,
                    score_threshold=score_threshold,
                    with_payload=True,
                    with_vectors=False,
                ).points

        found = self._with_layout(collection, query)
        return [StoredHit(str(p.id), float(p.score), dict(p.payload or {})) for p in found]

    def candidates(
        self,
        collection: str,
        queries: Mapping[VectorName, Sequence[float]],
        *,
        depth: int,
        filter: Mapping[str, FilterValue] | None = None,  # noqa: A002
    ) -> list[Record]:
        """The union of each channel's top ``depth`` points, with vectors and payloads, in one
        request: Qdrant's Query API with one ``prefetch`` per channel. The fusion step of the
        request only unites them (RRF over prefetches of ``depth``, ``limit`` their sum, so none
        is cut); ``service.search.fusion`` ranks them, judging each point on the channels it
        has, which Qdrant's sums over prefetches cannot (see there)."""
        check_collection_name(collection)
        check_page(depth, 0)
        if not queries:
            return []
        query_filter = server_filter(filter)

        def query(layout: _Layout) -> list[Any]:
            prefetch = []
            for name, vector in queries.items():
                values: Any = [float(x) for x in query_vector(layout.dims, name, vector)]
                prefetch.append(
                    models.Prefetch(
                        query=[values] if name in layout.multi else values,
                        using=name,
                        filter=query_filter,
                        limit=depth,
                    )
                )
            with translate("search", collection):
                return self._client.query_points(
                    collection,
                    prefetch=prefetch,
                    query=models.FusionQuery(fusion=models.Fusion.RRF),
                    limit=depth * len(prefetch),
                    with_payload=True,
                    with_vectors=list(queries),
                ).points

        found = self._with_layout(collection, query)
        return [Record(str(p.id), dict(p.payload or {}), domain_vectors(p.vector)) for p in found]

    def retrieve(
        self, collection: str, ids: Sequence[str], *, with_vectors: bool = False
    ) -> list[Record]:
        check_collection_name(collection)
        wanted = list(dict.fromkeys(parse_ids(ids)))
        with translate("retrieve", collection):
            if not wanted:
                return []
            found = self._client.retrieve(
                collection, wanted, with_payload=True, with_vectors=with_vectors
            )
        by_id = {str(r.id): r for r in found}
        records = []
        for pid in wanted:
            rec = by_id.get(pid)
            if rec is not None:
                vectors = domain_vectors(rec.vector) if with_vectors else {}
                records.append(Record(pid, dict(rec.payload or {}), vectors))
        return records

    def count(self, collection: str, filter: Mapping[str, FilterValue] | None = None) -> int:  # noqa: A002
        check_collection_name(collection)
        with translate("count", collection):
            return int(
                self._client.count(collection, count_filter=server_filter(filter), exact=True).count
            )

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        check_collection_name(collection)
        wanted = parse_ids(ids)
        with translate("delete", collection):
            if not wanted:
                return
            self._client.delete(
                collection, points_selector=models.PointIdsList(points=list(wanted)), wait=True
            )

    def close(self) -> None:
        self._client.close()

    def list_collections(self) -> list[str]:
        with translate("list collections", "*"):
            return sorted(c.name for c in self._client.get_collections().collections)

    def vector_dims(self, name: str) -> dict[str, int]:
        check_collection_name(name)
        with translate("describe collection", name):
            vectors = self._client.get_collection(name).config.params.vectors
        existing: dict[str, Any] = dict(vectors) if isinstance(vectors, Mapping) else {}
        return {vec: int(params.size) for vec, params in existing.items()}

    def collection_metadata(self, name: str) -> dict[str, Any]:
        """Qdrant's own collection metadata (servers from v1.16 on)."""
        check_collection_name(name)
        with translate("describe collection", name):
            metadata = self._client.get_collection(name).config.metadata
        return dict(metadata or {})

    def set_collection_metadata(self, name: str, metadata: Mapping[str, Any]) -> None:
        check_collection_name(name)
        with translate("update collection metadata", name):
            # Qdrant merges the keys into what the collection holds already.
            self._client.update_collection(name, metadata=dict(metadata))

    def aliases(self) -> dict[str, str]:
        with translate("list aliases", "*"):
            found = self._client.get_aliases().aliases
        return {a.alias_name: a.collection_name for a in found}

    def update_aliases(self, point: Mapping[str, str], remove: Sequence[str] = ()) -> None:
        for name in (*point, *point.values(), *remove):
            check_collection_name(name)
        existing = self.aliases()
        # One request: Qdrant applies its operations atomically. Deleting an alias that does
        # not exist is an error there, and creating one that exists is too: delete first.
        ops: list[Any] = [
            models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=name))
            for name in dict.fromkeys([*remove, *point])
            if name in existing
        ]
        ops += [
            models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name=target, alias_name=alias)
            )
            for alias, target in point.items()
        ]
        if ops:
            with translate("update aliases", ",".join(point) or ",".join(remove)):
                self._client.update_collection_aliases(ops)

    def scroll(
        self,
        collection: str,
        *,
        limit: int,
        offset: str | None = None,
        with_vectors: bool = False,
    ) -> tuple[list[Record], str | None]:
        check_collection_name(collection)
        check_page(limit, 0)
        with translate("scroll", collection):
            found, next_offset = self._client.scroll(
                collection,
                limit=limit,
                offset=parse_ids([offset])[0] if offset is not None else None,
                with_payload=True,
                with_vectors=with_vectors,
            )
        records = []
        for rec in found:
            records.append(Record(str(rec.id), dict(rec.payload or {}), domain_vectors(rec.vector)))
        return records, None if next_offset is None else str(next_offset)

    def _check_same_dims(self, name: str, wanted: dict[str, int]) -> None:
        vectors = self._client.get_collection(name).config.params.vectors
        existing: dict[str, Any] = dict(vectors) if isinstance(vectors, Mapping) else {}
        have = {vec: params.size for vec, params in existing.items()}
        cosine = all(p.distance == models.Distance.COSINE for p in existing.values())
        if have != wanted or not cosine:
            raise ClipsearchError(
                ErrorType.conflict,
                f"collection {name!r} exists with other vector dims or distance",
                {"existing": have, "requested": wanted},
            )
        layout = _layout_of(existing)
        with self._layouts_lock:
            self._layouts[name] = layout
        if multi_names(wanted) - layout.multi:
            logger.warning(
                "collection %s stores %s as single vectors (made before multivector captions): "
                "captions of more than one chunk are refused until it is reindexed",
                name,
                sorted(multi_names(wanted) - layout.multi),
            )

    def _layout(self, name: str, *, fresh: bool = False) -> _Layout:
        with self._layouts_lock:
            cached = self._layouts.get(name)
        if cached is not None and not fresh:
            return cached
        with translate("describe collection", name):
            vectors = self._client.get_collection(name).config.params.vectors
        layout = _layout_of(dict(vectors) if isinstance(vectors, Mapping) else {})
        with self._layouts_lock:
            self._layouts[name] = layout
        return layout

    def _with_layout(self, name: str, call: Callable[[_Layout], T]) -> T:
        """``call`` with the cached layout; when that is refused, once more with a fresh one
        if it changed (an alias repointed at a version with other dims or multivectors)."""
        layout = self._layout(name)
        try:
            return call(layout)
        except ClipsearchError as exc:
            if exc.type not in (ErrorType.invalid_input, ErrorType.conflict):
                raise
            fresh = self._layout(name, fresh=True)
            if fresh == layout:
                raise
            return call(fresh)


def _layout_of(vectors: Mapping[str, Any]) -> _Layout:
    return _Layout(
        {vec: int(params.size) for vec, params in vectors.items()},
        frozenset(vec for vec, params in vectors.items() if params.multivector_config is not None),
    )
