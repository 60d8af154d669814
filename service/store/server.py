"""QdrantServerStore: the VectorStore on a Qdrant server (or cluster), through qdrant-client.

Also runs on qdrant-client's local mode (``QdrantClient(":memory:")``), a brute-force engine in
Python that the congruence tests use as the reference for the embedded store.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import httpx
from qdrant_client import QdrantClient, models
from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from service.core.domain import FilterValue, Point, Record, StoredHit, VectorName
from service.core.errors import ClipsearchError, ErrorType, invalid, not_found
from service.store._checks import (
    check_collection_name,
    check_dims,
    check_filter,
    check_page,
    parse_ids,
)

if TYPE_CHECKING:
    from service.core.config import Settings

logger = logging.getLogger(__name__)

_STATUS_TYPES = {
    400: ErrorType.invalid_input,
    404: ErrorType.not_found,
    409: ErrorType.conflict,
    422: ErrorType.invalid_input,
    429: ErrorType.overloaded,
    401: ErrorType.unavailable,  # our API key is wrong: the store is unusable, not the request
    403: ErrorType.unavailable,
    502: ErrorType.unavailable,
    503: ErrorType.unavailable,
    504: ErrorType.unavailable,
}


class QdrantServerStore:
    """VectorStore over a ``QdrantClient``; thread-safe as the client is."""

    def __init__(self, client: QdrantClient) -> None:
        self._client = client

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
        with _translate("create collection", name):
            if self._client.collection_exists(name):
                self._check_same_dims(name, wanted)
                return
            try:
                self._client.create_collection(
                    name,
                    vectors_config={
                        vec: models.VectorParams(size=size, distance=models.Distance.COSINE)
                        for vec, size in wanted.items()
                    },
                )
            except UnexpectedResponse as exc:
                if exc.status_code != 409:  # 409: another replica created it meanwhile
                    raise
                self._check_same_dims(name, wanted)
                return
        logger.info("created collection %s with dims %s", name, wanted)

    def collection_exists(self, name: str) -> bool:
        check_collection_name(name)
        with _translate("check collection", name):
            return bool(self._client.collection_exists(name))

    def drop_collection(self, name: str) -> None:
        check_collection_name(name)
        with _translate("drop collection", name):
            self._client.delete_collection(name)
        logger.info("dropped collection %s", name)

    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        check_collection_name(collection)
        if not points:
            return
        ids = parse_ids([p.id for p in points])
        structs = [
            models.PointStruct(id=pid, vector=dict(p.vectors), payload=dict(p.payload))
            for pid, p in zip(ids, points, strict=True)
        ]
        with _translate("upsert", collection):
            self._client.upsert(collection, points=structs, wait=True)

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
        with _translate("search", collection):
            found = self._client.query_points(
                collection,
                query=[float(x) for x in vector],
                using=vector_name,
                query_filter=_server_filter(filter),
                limit=limit,
                offset=offset or None,
                score_threshold=score_threshold,
                with_payload=True,
                with_vectors=False,
            ).points
        return [StoredHit(str(p.id), float(p.score), dict(p.payload or {})) for p in found]

    def retrieve(
        self, collection: str, ids: Sequence[str], *, with_vectors: bool = False
    ) -> list[Record]:
        check_collection_name(collection)
        wanted = list(dict.fromkeys(parse_ids(ids)))
        with _translate("retrieve", collection):
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
                vectors: dict[str, Any] = (
                    rec.vector if with_vectors and isinstance(rec.vector, dict) else {}
                )
                records.append(
                    Record(pid, dict(rec.payload or {}), {k: list(v) for k, v in vectors.items()})
                )
        return records

    def count(self, collection: str, filter: Mapping[str, FilterValue] | None = None) -> int:  # noqa: A002
        check_collection_name(collection)
        with _translate("count", collection):
            return int(
                self._client.count(
                    collection, count_filter=_server_filter(filter), exact=True
                ).count
            )

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        check_collection_name(collection)
        wanted = parse_ids(ids)
        with _translate("delete", collection):
            if not wanted:
                return
            self._client.delete(
                collection, points_selector=models.PointIdsList(points=list(wanted)), wait=True
            )

    def close(self) -> None:
        self._client.close()

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


def _server_filter(flt: Mapping[str, FilterValue] | None) -> models.Filter | None:
    conditions: list[models.Condition] = []
    for key, value in check_filter(flt):
        match: models.Match
        if isinstance(value, list):
            match = models.MatchAny(any=value)
        else:
            match = models.MatchValue(value=value)
        conditions.append(models.FieldCondition(key=key, match=match))
    return models.Filter(must=conditions) if conditions else None


@contextmanager
def _translate(action: str, collection: str) -> Iterator[None]:
    """qdrant-client exceptions → ClipsearchError (connection trouble → unavailable)."""
    try:
        yield
    except ClipsearchError:
        raise
    except ResourceExhaustedResponse as exc:
        raise ClipsearchError(
            ErrorType.overloaded,
            f"Qdrant is rate limiting {action}",
            str(exc),
            retry_after_s=float(exc.retry_after_s),
        ) from exc
    except UnexpectedResponse as exc:
        kind = _STATUS_TYPES.get(exc.status_code or 0, ErrorType.internal)
        detail = exc.content.decode("utf-8", "replace")[:500]
        if kind is ErrorType.not_found:
            raise not_found(f"collection {collection!r} does not exist", detail) from exc
        raise ClipsearchError(
            kind, f"Qdrant refused {action} on {collection!r} ({exc.status_code})", detail
        ) from exc
    except ResponseHandlingException as exc:
        source = exc.source
        if isinstance(source, httpx.TransportError):
            raise ClipsearchError(
                ErrorType.unavailable, f"Qdrant is unreachable ({action})", repr(source)
            ) from exc
        raise ClipsearchError(
            ErrorType.internal, f"bad answer from Qdrant to {action}", repr(source)
        ) from exc
    except ValueError as exc:
        # Local mode (qdrant-client without a server) reports everything as ValueError.
        text = str(exc)
        if text.startswith("Collection") and text.endswith("not found"):
            raise not_found(f"collection {collection!r} does not exist", text) from exc
        raise invalid(f"{action} on {collection!r} rejected: {text}", text) from exc
    except (httpx.TransportError, ConnectionError, TimeoutError) as exc:
        raise ClipsearchError(
            ErrorType.unavailable, f"Qdrant is unreachable ({action})", repr(exc)
        ) from exc
    except Exception as exc:
        raise ClipsearchError(
            ErrorType.internal, f"Qdrant failed to {action} on {collection!r}", repr(exc)
        ) from exc
