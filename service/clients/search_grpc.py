"""A Python client of the gateway's gRPC API (``clipsearch.v1.Search``).

Answers come back as the REST models (``SearchResponse``, ``Hit``, ``JobStatus``; a collection as
the JSON of ``GET /v1/collections/{name}``), so code written against one transport reads the
other's answers unchanged; every call on a collection takes ``collection`` (None: the gateway's
configured one); a failed call raises the very
:class:`ClipsearchError` the gateway raised (type, message, detail, retry-after).

    with SearchClient("127.0.0.1:50052", api_key="...") as client:
        for hit in client.search(text="a red circle", limit=3).hits:
            print(hit.id, hit.score, hit.uri)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import numpy as np

from service.core.domain import FilterValue
from service.core.errors import ClipsearchError
from service.core.schemas.api import Hit, JobStatus, SearchResponse
from service.rpc import search_codec as codec
from service.rpc.proto import search_pb2 as pb
from service.rpc.proto import search_pb2_grpc as pb_grpc
from service.rpc.status import from_rpc_error

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Embeddings:
    model: str
    texts: np.ndarray  # [texts, dim] joint space
    text_descriptions: np.ndarray  # [texts, dim] description space
    images: np.ndarray  # [images, dim] joint space


class SearchClient:
    def __init__(
        self,
        target: str,
        *,
        api_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        channel: grpc.Channel | None = None,
    ) -> None:
        self.target = target
        self._channel = channel or grpc.insecure_channel(target)
        self._stub = pb_grpc.SearchStub(self._channel)
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self._timeout_s = timeout_s

    def _call(self, method: Callable[..., T], request: Any, timeout_s: float | None) -> T:
        try:
            return method(
                request,
                metadata=self._metadata,
                timeout=self._timeout_s if timeout_s is None else timeout_s,
            )
        except grpc.RpcError as err:
            raise from_rpc_error(err, endpoint=self.target) from None

    def search(
        self,
        *,
        text: str | None = None,
        image: bytes | None = None,
        item_id: str | None = None,
        mode: str = "auto",
        limit: int | None = None,
        offset: int = 0,
        filter: Mapping[str, FilterValue] | None = None,  # noqa: A002 - the API's name
        score_threshold: float | None = None,
        group_by: str | None = None,
        explain: bool = False,
        collection: str | None = None,
        timeout_s: float | None = None,
    ) -> SearchResponse:
        """Exactly one of ``text``, ``image`` (file bytes) and ``item_id`` (more like it)."""
        request = codec.search_request_to_proto(
            text=text,
            image=image,
            item_id=item_id,
            mode=mode,
            limit=limit,
            offset=offset,
            filter=filter,
            score_threshold=score_threshold,
            group_by=group_by,
            explain=explain,
            collection=collection,
        )
        response = self._call(self._stub.Search, request, timeout_s)
        return codec.search_response_from_proto(response)

    def get_item(
        self, item_id: str, *, collection: str | None = None, timeout_s: float | None = None
    ) -> Hit:
        request = pb.GetItemRequest(id=item_id, collection=collection or "")
        return codec.hit_from_proto(self._call(self._stub.GetItem, request, timeout_s))

    def delete_item(
        self, item_id: str, *, collection: str | None = None, timeout_s: float | None = None
    ) -> None:
        request = pb.DeleteItemRequest(id=item_id, collection=collection or "")
        self._call(self._stub.DeleteItem, request, timeout_s)

    def embed(
        self,
        texts: Sequence[str] = (),
        images: Sequence[bytes] = (),
        *,
        collection: str | None = None,
        timeout_s: float | None = None,
    ) -> Embeddings:
        """Vectors made with the bundle of ``collection``."""
        request = pb.EmbedRequest(
            texts=list(texts), images=list(images), collection=collection or ""
        )
        response = self._call(self._stub.Embed, request, timeout_s)

        def matrix(rows: Sequence[pb.Vector]) -> np.ndarray:
            return np.asarray([list(r.values) for r in rows], dtype=np.float32)

        return Embeddings(
            model=response.model,
            texts=matrix([t.joint for t in response.texts]),
            text_descriptions=matrix([t.description for t in response.texts]),
            images=matrix(response.images),
        )

    def ingest(
        self,
        source: Mapping[str, Any] | str,
        *,
        collection: str | None = None,
        timeout_s: float | None = None,
    ) -> str:
        """Start a job over ``source`` (as REST's ``source``); its id."""
        request = codec.ingest_request_to_proto(source, collection)
        return self._call(self._stub.Ingest, request, timeout_s).job_id

    def get_job(self, job_id: str, *, timeout_s: float | None = None) -> JobStatus:
        job = self._call(self._stub.GetJob, pb.GetJobRequest(id=job_id), timeout_s)
        return codec.job_from_proto(job)

    def list_jobs(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        collection: str | None = None,
        timeout_s: float | None = None,
    ) -> tuple[list[JobStatus], str]:
        """A page of jobs, newest first (``collection``'s; None: of every collection the key may
        ingest into), and the token of the next page ("" after the last)."""
        request = pb.ListJobsRequest(
            page_size=page_size, page_token=page_token, collection=collection or ""
        )
        response = self._call(self._stub.ListJobs, request, timeout_s)
        return [codec.job_from_proto(j) for j in response.jobs], response.next_page_token

    def cancel_job(self, job_id: str, *, timeout_s: float | None = None) -> JobStatus:
        job = self._call(self._stub.CancelJob, pb.CancelJobRequest(id=job_id), timeout_s)
        return codec.job_from_proto(job)

    # -- collections: each as the JSON of GET /v1/collections/{name} -------------------------

    def create_collection(
        self, name: str, *, bundle: str | None = None, timeout_s: float | None = None
    ) -> dict[str, Any]:
        request = pb.CreateCollectionRequest(name=name, bundle=bundle or "")
        made = self._call(self._stub.CreateCollection, request, timeout_s)
        return codec.collection_from_proto(made)

    def list_collections(
        self, *, page_size: int = 0, page_token: str = "", timeout_s: float | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        """A page of the collections the key sees, and the token of the next page."""
        request = pb.ListCollectionsRequest(page_size=page_size, page_token=page_token)
        response = self._call(self._stub.ListCollections, request, timeout_s)
        listed = [codec.collection_from_proto(c) for c in response.collections]
        return listed, response.next_page_token

    def get_collection(self, name: str, *, timeout_s: float | None = None) -> dict[str, Any]:
        request = pb.GetCollectionRequest(name=name)
        return codec.collection_from_proto(self._call(self._stub.GetCollection, request, timeout_s))

    def delete_collection(self, name: str, *, timeout_s: float | None = None) -> list[str]:
        """Delete it; the versions of it that were dropped."""
        request = pb.DeleteCollectionRequest(name=name)
        deleted = self._call(self._stub.DeleteCollection, request, timeout_s)
        return list(deleted.deleted_versions)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> SearchClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["ClipsearchError", "Embeddings", "SearchClient"]
