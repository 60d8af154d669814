"""The ``clipsearch.v1.Search`` servicer: the REST API's operations over gRPC.

Each call goes the way its REST route goes: the same scope check (``authorize``, with the key from
``authorization: Bearer`` or ``x-api-key`` metadata), the request validated by the REST model
(``service.rpc.search_codec`` turns the message into the REST body), the same components, the
same response model, and errors through the one ErrorType → status table
(``service.rpc.status.abort``), counted in ``clipsearch_errors_total{transport="grpc"}``.

Collections: a call acts on the collection its request names (``collection``; a collection
call's ``name``), "" being the configured one; the key's scope is checked on that collection
(NOT_FOUND, as for one that does not exist, when the key has none there), then the call goes to
that collection's components (``Components.search_for`` / ``collection_of``). ListCollections
lists across collections and shows only those the key sees.

Deadlines: a call whose deadline has passed does no work, a mutating call (delete, ingest,
cancel) checks again right before it changes anything, and an answer ready after the deadline
is not sent: the call ends with DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NoReturn, TypeVar

import grpc
from google.protobuf import empty_pb2
from pydantic import ValidationError

from service.core.audit import audit
from service.core.errors import ClipsearchError, ErrorType, invalid, not_found, too_large
from service.core.keys import Scope
from service.core.schemas.api import (
    COLLECTION_MAX_CHARS,
    Hit,
    IngestRequest,
    JobStatus,
    SearchRequest,
)
from service.core.schemas.openai import MAX_INPUTS
from service.gateway.auth import (
    AUDITED,
    Principal,
    authorize,
    identify,
    jobs_filter,
)
from service.gateway.metrics import GatewayMetrics
from service.gateway.routers.collections import (
    CollectionDeleted,
    CreateCollection,
    get_collection,
    list_collections,
)
from service.gateway.routers.search import search as rest_search
from service.gateway.state import Components, Runtime
from service.items.delete import delete_records
from service.rpc import search_codec as codec
from service.rpc.proto import search_pb2 as pb
from service.rpc.proto import search_pb2_grpc as pb_grpc
from service.rpc.status import abort

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Search"].full_name
# As REST's GET /v1/jobs: 20 a page by default, 100 at most (AIP-158: more is read as the most).
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
Req = TypeVar("Req")
Resp = TypeVar("Resp")
Work = Callable[[Components, Req, grpc.ServicerContext], Resp]


def presented_key(context: grpc.ServicerContext) -> str | None:
    """The API key in the call's metadata, as REST reads it from its headers."""
    metadata = {key.lower(): value for key, value in context.invocation_metadata() or ()}
    auth = metadata.get("authorization", "")
    if isinstance(auth, str) and auth.lower().startswith("bearer "):
        return auth[7:].strip()
    key = metadata.get("x-api-key")
    return key if isinstance(key, str) else None


def peer_address(context: grpc.ServicerContext) -> str | None:
    """The caller's IP address from ``context.peer()`` (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``)."""
    kind, _, rest = (context.peer() or "").partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or None
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]") or None
    return None


def check_deadline(context: grpc.ServicerContext) -> None:
    left = context.time_remaining()
    if left is not None and left <= 0:
        raise ClipsearchError(ErrorType.timeout, "the call's deadline passed")


def validation_error(exc: ValidationError) -> ClipsearchError:
    """A REST model's refusal, worded as the REST error handler words it."""
    problems = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
    first = problems[0] if problems else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"]) or "request"
    return ClipsearchError(ErrorType.invalid_input, f"{where}: {first['msg']}", problems)


class SearchServicer(pb_grpc.SearchServicer):
    def __init__(self, runtime: Runtime, metrics: GatewayMetrics) -> None:
        self._runtime = runtime
        self._metrics = metrics

    # -- the RPCs -------------------------------------------------------------------------------

    def Search(self, request: pb.SearchRequest, context: grpc.ServicerContext) -> pb.SearchResponse:
        return self._call(context, "search", self._search, request)

    def GetItem(self, request: pb.GetItemRequest, context: grpc.ServicerContext) -> pb.Hit:
        return self._call(context, "search", self._get_item, request)

    def DeleteItem(
        self, request: pb.DeleteItemRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        return self._call(context, "ingest", self._delete_item, request, audit_as="delete_item")

    def Embed(self, request: pb.EmbedRequest, context: grpc.ServicerContext) -> pb.EmbedResponse:
        return self._call(context, "search", self._embed, request)

    def Ingest(self, request: pb.IngestRequest, context: grpc.ServicerContext) -> pb.IngestResponse:
        return self._call(context, "ingest", self._ingest, request)

    # A job is admitted on its own collection, as REST's /v1/jobs/{id}.
    def GetJob(self, request: pb.GetJobRequest, context: grpc.ServicerContext) -> pb.Job:
        return self._call(context, "ingest", self._get_job, request, job=request.id)

    def ListJobs(
        self, request: pb.ListJobsRequest, context: grpc.ServicerContext
    ) -> pb.ListJobsResponse:
        return self._call(context, "ingest", self._list_jobs, request, across=True)

    def CancelJob(self, request: pb.CancelJobRequest, context: grpc.ServicerContext) -> pb.Job:
        return self._call(
            context, "ingest", self._cancel_job, request, audit_as="cancel_job", job=request.id
        )

    # The collection a collection call acts on is the one it names: its `name`.
    def CreateCollection(
        self, request: pb.CreateCollectionRequest, context: grpc.ServicerContext
    ) -> pb.Collection:
        return self._call(
            context,
            "admin",
            self._create_collection,
            request,
            audit_as="create_collection",
            named=request.name,
        )

    def ListCollections(
        self, request: pb.ListCollectionsRequest, context: grpc.ServicerContext
    ) -> pb.ListCollectionsResponse:
        return self._call(context, "search", self._list_collections, request, across=True)

    def GetCollection(
        self, request: pb.GetCollectionRequest, context: grpc.ServicerContext
    ) -> pb.Collection:
        return self._call(context, "search", self._get_collection, request, named=request.name)

    def DeleteCollection(
        self, request: pb.DeleteCollectionRequest, context: grpc.ServicerContext
    ) -> pb.DeleteCollectionResponse:
        return self._call(
            context,
            "admin",
            self._delete_collection,
            request,
            audit_as="delete_collection",
            named=request.name,
        )

    # -- the one way every call goes --------------------------------------------------------------

    def _call(
        self,
        context: grpc.ServicerContext,
        scope: Scope,
        work: Work[Req, Resp],
        request: Req,
        *,
        audit_as: str | None = None,
        named: str | None = None,
        across: bool = False,
        job: str | None = None,
    ) -> Resp:
        """Admit the call with ``scope`` on the collection it acts on (``named``, else its
        request's ``collection``, else the configured one; the collection of ``job``, for a call
        on a job; ``across``: a call that lists across collections), then do ``work``."""
        principal: Principal | None = None
        unknown: ClipsearchError | None = None
        try:
            check_deadline(context)
            if named is None:
                named = getattr(request, "collection", "")
            if job:
                named, unknown = _job_owner(self._runtime.components, job)
                # An unknown job is admitted as a call across collections: the work says so.
                across = named is None
            try:
                principal = authorize(
                    self._runtime.settings,
                    presented_key(context),
                    scope,
                    named or None,
                    limiter=self._runtime.limiter,
                    client=peer_address(context),
                    any_collection=across,
                )
            except ClipsearchError as exc:
                if unknown is not None and exc.type is ErrorType.not_found:
                    raise unknown from None  # a job of a collection the key cannot see: none
                raise
            response = work(self._runtime.components, request, context)
            check_deadline(context)  # too late: the caller has stopped waiting for it
            self._audit(context, audit_as, principal, request, "ok")
            return response
        except ClipsearchError as exc:
            self._audit(context, audit_as, principal, request, exc.type.value)
            self._fail(context, exc)
        except ValidationError as exc:
            self._fail(context, validation_error(exc))
        except Exception:
            log.exception("unhandled error in a gRPC call")
            self._audit(context, audit_as, principal, request, ErrorType.internal.value)
            self._fail(context, ClipsearchError(ErrorType.internal, "internal error"))

    def _audit(
        self,
        context: grpc.ServicerContext,
        action: str | None,
        principal: Principal | None,
        request: object,
        result: str,
    ) -> None:
        """The audit line of an admin action (``service.gateway.auth.AUDITED``), as REST's."""
        if action not in AUDITED:
            return
        # As REST's: the record's id, or the collection a collection call names.
        named = getattr(request, "name", None)
        target = (
            {"collection": named} if named is not None else {"id": getattr(request, "id", None)}
        )
        if principal is not None:
            who, target = principal.id, {"collection": principal.collection, **target}
        else:  # refused before it was admitted
            who = identify(self._runtime.settings, presented_key(context))
        client = peer_address(context)
        audit(who=who, action=str(action), target=target, result=result, via="grpc", client=client)

    def _caller(self, context: grpc.ServicerContext, scope: Scope) -> Principal:
        """The caller of a call across collections, as ``_call`` admitted it (its rate was
        charged there, not again here)."""
        key = presented_key(context)
        return authorize(self._runtime.settings, key, scope, any_collection=True)

    def _fail(self, context: grpc.ServicerContext, exc: ClipsearchError) -> NoReturn:
        self._metrics.errors.labels(exc.type.value, "grpc").inc()
        abort(context, exc)

    # -- the work, as the REST routes do it -----------------------------------------------------

    def _search(
        self, comp: Components, request: pb.SearchRequest, context: grpc.ServicerContext
    ) -> pb.SearchResponse:
        # The REST body the message stands for, through the REST route itself: the same
        # validation, query (an item id goes to the planner as "more like this"), options and
        # answer, so the two transports cannot drift apart.
        body = SearchRequest.model_validate(codec.search_body_from_proto(request))
        answer = rest_search(body, comp, self._runtime.settings, self._metrics)
        return codec.search_response_to_proto(answer)

    def _get_item(
        self, comp: Components, request: pb.GetItemRequest, context: grpc.ServicerContext
    ) -> pb.Hit:
        record = comp.search_for(request.collection).find(_item_id(request.id))
        return codec.hit_to_proto(Hit.from_payload(record.id, 1.0, record.payload))

    def _delete_item(
        self, comp: Components, request: pb.DeleteItemRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        target = comp.collection_of(request.collection)
        record = comp.search_for(target).find(_item_id(request.id))
        check_deadline(context)
        # As REST's DELETE /v1/items/{id}: the point and its thumbnail with it.
        delete_records(comp.store, target, self._runtime.settings.data_dir, [record])
        return empty_pb2.Empty()

    def _embed(
        self, comp: Components, request: pb.EmbedRequest, context: grpc.ServicerContext
    ) -> pb.EmbedResponse:
        texts, images = list(request.texts), list(request.images)
        if not texts and not images:
            raise invalid("give at least one text or image")
        if len(texts) + len(images) > MAX_INPUTS:
            raise invalid(
                f"{len(texts) + len(images)} inputs; the limit is {MAX_INPUTS} per request",
                {"inputs": len(texts) + len(images), "max_inputs": MAX_INPUTS},
            )
        limit = self._runtime.settings.limits.max_upload_bytes
        for i, image in enumerate(images):
            if not image:
                raise invalid(f"image {i} is empty", {"index": i})
            if len(image) > limit:
                raise too_large(f"image {i} is over the {limit}-byte limit", {"index": i})
        bundle = _bundle_of(comp, request.collection)
        response = pb.EmbedResponse(model=comp.embedder.info(bundle=bundle).bundle)
        if texts:
            embedded = comp.embedder.embed_texts(texts, lane="interactive", bundle=bundle)
            for joint, sentence in zip(embedded.joint, embedded.sentence, strict=True):
                response.texts.add(
                    joint=pb.Vector(values=joint.tolist()),
                    description=pb.Vector(values=sentence.tolist()),
                )
        if images:
            check_deadline(context)
            found = comp.embedder.embed_images(images, lane="interactive", bundle=bundle)
            for i, result in enumerate(found):
                if isinstance(result, ClipsearchError):
                    # As REST's /v1/embeddings: one bad input fails the request, naming its index.
                    detail = result.detail if isinstance(result.detail, dict) else {}
                    raise ClipsearchError(
                        result.type, f"image {i}: {result.message}", {**detail, "index": i}
                    )
                response.images.add(values=result.tolist())
        return response

    def _ingest(
        self, comp: Components, request: pb.IngestRequest, context: grpc.ServicerContext
    ) -> pb.IngestResponse:
        body = IngestRequest.model_validate(codec.ingest_body_from_proto(request))
        target = comp.collection_of(body.collection)
        if target != comp.collection:
            # As REST's: a collection made on another replica, or before a restart, is loaded
            # from the bundle spec its version records.
            comp.reindexer.serve_collection(target)
        check_deadline(context)  # a job started for a caller who has gone would run unseen
        source = body.source.model_dump(exclude_none=True)
        job_id = comp.jobs.submit("ingest", {"source": source, "collection": target})
        return pb.IngestResponse(job_id=job_id)

    def _get_job(
        self, comp: Components, request: pb.GetJobRequest, context: grpc.ServicerContext
    ) -> pb.Job:
        return codec.job_to_proto(JobStatus.model_validate(comp.jobs.status(_job_id(request.id))))

    def _cancel_job(
        self, comp: Components, request: pb.CancelJobRequest, context: grpc.ServicerContext
    ) -> pb.Job:
        job_id = _job_id(request.id)
        check_deadline(context)
        return codec.job_to_proto(JobStatus.model_validate(comp.jobs.cancel(job_id)))

    def _list_jobs(
        self, comp: Components, request: pb.ListJobsRequest, context: grpc.ServicerContext
    ) -> pb.ListJobsResponse:
        # As REST's GET /v1/jobs: the named collection's jobs, else those of every collection
        # the key may ingest into.
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        offset = codec.page_offset(request.page_token)
        caller = self._caller(context, "ingest")
        where = jobs_filter(caller, request.collection, comp.collection)
        page, total = comp.jobs.list_jobs(limit=size, offset=offset, where=where)
        following = offset + len(page)
        return pb.ListJobsResponse(
            jobs=[codec.job_to_proto(JobStatus.model_validate(job)) for job in page],
            next_page_token=codec.page_token(following) if following < total else "",
            total_size=total,
        )

    # -- collections, as the REST routes of /v1/collections -------------------------------------

    def _create_collection(
        self, comp: Components, request: pb.CreateCollectionRequest, context: grpc.ServicerContext
    ) -> pb.Collection:
        body = CreateCollection.model_validate(
            {"name": request.name, "bundle": request.bundle or None}
        )
        check_deadline(context)
        comp.reindexer.create_collection(body.name, body.bundle)
        return codec.collection_to_proto(get_collection(body.name, comp).model_dump(mode="json"))

    def _list_collections(
        self, comp: Components, request: pb.ListCollectionsRequest, context: grpc.ServicerContext
    ) -> pb.ListCollectionsResponse:
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        offset = codec.page_offset(request.page_token)
        caller = self._caller(context, "search")
        seen = list_collections(comp, caller).collections
        page = seen[offset : offset + size]
        following = offset + len(page)
        return pb.ListCollectionsResponse(
            collections=[codec.collection_to_proto(c.model_dump(mode="json")) for c in page],
            next_page_token=codec.page_token(following) if following < len(seen) else "",
            total_size=len(seen),
        )

    def _get_collection(
        self, comp: Components, request: pb.GetCollectionRequest, context: grpc.ServicerContext
    ) -> pb.Collection:
        name = _collection_name(request.name)
        return codec.collection_to_proto(get_collection(name, comp).model_dump(mode="json"))

    def _delete_collection(
        self, comp: Components, request: pb.DeleteCollectionRequest, context: grpc.ServicerContext
    ) -> pb.DeleteCollectionResponse:
        name = _collection_name(request.name)
        check_deadline(context)
        deleted = CollectionDeleted.model_validate(comp.reindexer.delete_collection(name))
        comp.forget(name)
        return pb.DeleteCollectionResponse(
            collection=deleted.collection, deleted_versions=deleted.deleted_versions
        )


def _item_id(value: str) -> str:
    if not value:
        raise invalid("give the item's id")
    return value


def _job_id(value: str) -> str:
    if not value:
        raise invalid("give the job's id")
    return value


def _collection_name(value: str) -> str:
    if not value:
        raise invalid("give the collection's name")
    if len(value) > COLLECTION_MAX_CHARS:
        raise invalid(f"a collection's name has at most {COLLECTION_MAX_CHARS} characters")
    return value


def _bundle_of(comp: Components, named: str) -> str | None:
    """The bundle a collection's vectors are made with (None: the configured collection's, the
    encoder's default), loaded into the encoder where it can be."""
    collection = comp.collection_of(named)
    if collection == comp.collection:
        return None
    comp.search_for(collection)  # serves the collection's bundle where it can
    return comp.store.bundle_of(collection)[1]


def _job_owner(comp: Components, job_id: str) -> tuple[str | None, ClipsearchError | None]:
    """The collection a job writes to ("" for the configured one) and what a key that cannot see
    it is told; (None, the error) for a job that does not exist."""
    try:
        job = comp.jobs.status(job_id)
    except ClipsearchError as exc:
        return None, exc
    owner = job.get("collection")
    return (str(owner) if owner else ""), not_found(f"no job {job_id!r}")
