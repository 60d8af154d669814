"""REST shapes (``service.core.schemas.api``) to ``clipsearch.v1`` messages and back.

One conversion layer for both transports: the gateway's gRPC servicer turns a request message
into the very JSON a REST body would carry and validates it with the REST model, so both refuse
the same input with the same message; the Python client turns answers back into the REST models,
so a caller gets the same ``Hit`` and ``JobStatus`` whichever transport it used.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from service.core.domain import FilterValue
from service.core.errors import invalid
from service.core.schemas.api import Hit, JobStatus, SearchResponse
from service.rpc.proto import search_pb2 as pb

# Hit fields that REST answers with null when absent: `optional` on the wire.
_OPTIONAL_HIT_FIELDS = (
    "media_id",
    "kind",
    "uri",
    "caption",
    "description",
    "video_id",
    "t_start",
    "t_end",
)
_OPTIONAL_JOB_FIELDS = (
    "collection",
    "rate_per_s",
    "eta_s",
    "error",
    "shards_total",
    "shards_done",
    "shards_read",
)
_JOB_COUNTS = ("total", "done", "failed", "skipped", "attempt", "redelivered")
QUERY_FIELDS = ("text", "image", "image_url", "item_id")
SOURCE_KINDS = ("directory", "manifest", "manifest_lines", "urls", "webdataset", "table")


# -- filters ---------------------------------------------------------------------------------


def filter_value_to_proto(key: str, value: FilterValue) -> pb.FilterValue:
    # bool before int: a bool is an int to Python, and the store tells them apart.
    if isinstance(value, bool):
        return pb.FilterValue(flag=value)
    if isinstance(value, int):
        return pb.FilterValue(integer=value)
    if isinstance(value, str):
        return pb.FilterValue(text=value)
    if isinstance(value, list):
        texts = [v for v in value if isinstance(v, str)]
        if len(texts) == len(value):
            return pb.FilterValue(texts=pb.Strings(values=texts))
        numbers = [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
        if len(numbers) == len(value):
            return pb.FilterValue(integers=pb.Integers(values=numbers))
    raise invalid(
        f"filter {key!r}: a value is a string, an integer, a boolean, or a list of strings or "
        "of integers",
        {"key": key},
    )


def filter_value_from_proto(key: str, value: pb.FilterValue) -> FilterValue:
    kind = value.WhichOneof("value")
    if kind is None:
        raise invalid(f"filter {key!r} has no value", {"key": key})
    if kind == "texts":
        return list(value.texts.values)
    if kind == "integers":
        return list(value.integers.values)
    result: FilterValue = getattr(value, kind)
    return result


# -- search ----------------------------------------------------------------------------------


def search_request_to_proto(
    *,
    text: str | None = None,
    image: bytes | None = None,
    item_id: str | None = None,
    image_url: str | None = None,
    mode: str = "auto",
    limit: int | None = None,
    offset: int = 0,
    filter: Mapping[str, FilterValue] | None = None,  # noqa: A002 - the API's name
    score_threshold: float | None = None,
    group_by: str | None = None,
    explain: bool = False,
    collection: str | None = None,
) -> pb.SearchRequest:
    """A request message from the REST body's fields (the server checks that exactly one query
    is given)."""
    request = pb.SearchRequest(
        mode=mode,
        offset=offset,
        group_by=group_by or "",
        explain=explain,
        collection=collection or "",
    )
    queries = {"text": text, "image": image, "item_id": item_id, "image_url": image_url}
    for name, query in queries.items():
        if query is not None:
            setattr(request, name, query)
    if limit is not None:
        request.limit = limit
    if score_threshold is not None:
        request.score_threshold = score_threshold
    for key, value in (filter or {}).items():
        request.filter[key].CopyFrom(filter_value_to_proto(key, value))
    return request


def search_body_from_proto(request: pb.SearchRequest) -> dict[str, Any]:
    """The REST body (JSON) the message stands for: validate it with ``SearchRequest`` (a field
    left unset gets REST's default; the image travels base64-encoded, as in REST)."""
    fields: dict[str, Any] = {"offset": request.offset, "explain": request.explain}
    for name in QUERY_FIELDS:
        if request.HasField(name):
            fields[name] = getattr(request, name)
    if "image" in fields:
        fields["image"] = base64.b64encode(fields["image"]).decode("ascii")
    if request.mode:
        fields["mode"] = request.mode
    if request.HasField("limit"):
        fields["limit"] = request.limit
    if request.HasField("score_threshold"):
        fields["score_threshold"] = request.score_threshold
    if request.group_by:
        fields["group_by"] = request.group_by
    if request.filter:
        fields["filter"] = {k: filter_value_from_proto(k, v) for k, v in request.filter.items()}
    if request.collection:
        fields["collection"] = request.collection
    return fields


def hit_to_proto(hit: Hit) -> pb.Hit:
    message = pb.Hit(
        id=hit.id,
        score=hit.score,
        description_generated=hit.description_generated,
        labels=[pb.HitLabel(name=label.name, score=label.score) for label in hit.labels],
        tags=hit.tags,
        metadata_json=json.dumps(hit.metadata, separators=(",", ":"), default=str),
    )
    for name in (*_OPTIONAL_HIT_FIELDS, "thumbnail"):
        value = getattr(hit, name)
        if value is not None:
            setattr(message, name, value)
    for channel in hit.explain or ():
        part = message.explain.add(
            channel=channel.channel,
            similarity=channel.similarity,
            standardised=channel.standardised,
            weight=channel.weight,
            relevance=channel.relevance,
        )
        if channel.rank is not None:
            part.rank = channel.rank
    return message


def hit_from_proto(message: pb.Hit) -> Hit:
    data: dict[str, Any] = {
        "id": message.id,
        "score": message.score,
        "description_generated": message.description_generated,
        "labels": [{"name": lb.name, "score": lb.score} for lb in message.labels],
        "tags": list(message.tags),
        "metadata": json.loads(message.metadata_json) if message.metadata_json else {},
    }
    for name in (*_OPTIONAL_HIT_FIELDS, "thumbnail"):
        data[name] = getattr(message, name) if message.HasField(name) else None
    if message.explain:  # asked for, a hit has at least one channel
        data["explain"] = [
            {
                "channel": c.channel,
                "similarity": c.similarity,
                "standardised": c.standardised,
                "rank": c.rank if c.HasField("rank") else None,
                "weight": c.weight,
                "relevance": c.relevance,
            }
            for c in message.explain
        ]
    return Hit.model_validate(data)


def search_response_to_proto(response: SearchResponse) -> pb.SearchResponse:
    return pb.SearchResponse(
        hits=[hit_to_proto(hit) for hit in response.hits],
        took_ms=response.took_ms,
        model=response.model,
        mode=response.mode,
        channels=response.channels,
        score_kind=response.score_kind,
    )


def search_response_from_proto(message: pb.SearchResponse) -> SearchResponse:
    return SearchResponse.model_validate(
        {
            "hits": [hit_from_proto(hit) for hit in message.hits],
            "took_ms": message.took_ms,
            "model": message.model,
            "mode": message.mode,
            "channels": list(message.channels),
            "score_kind": message.score_kind or "cosine",
        }
    )


# -- collections -----------------------------------------------------------------------------

_OPTIONAL_COLLECTION_FIELDS = (
    "current",
    "building",
    "previous",
    "bundle",
    "domain",
    "intended_use",
)


def collection_to_proto(info: Mapping[str, Any]) -> pb.Collection:
    """REST's collection (``CollectionModel`` as JSON: ``alias`` is the name) as a message."""
    message = pb.Collection(
        name=info["alias"],
        points=info["points"],
        vectors=dict(info["vectors"]),
        served=info["served"],
        default=info.get("default", False),
    )
    for name in _OPTIONAL_COLLECTION_FIELDS:
        if info.get(name) is not None:
            setattr(message, name, info[name])
    for version in info["versions"]:
        part = message.versions.add(
            name=version["name"],
            number=version["number"],
            points=version["points"],
            vectors=dict(version["vectors"]),
        )
        for name in ("bundle", "role"):
            if version.get(name) is not None:
                setattr(part, name, version[name])
        if version.get("settings") is not None:
            part.settings_json = json.dumps(version["settings"], separators=(",", ":"))
        if version.get("index") is not None:
            part.index.CopyFrom(pb.VersionIndex(**version["index"]))
    return message


def collection_from_proto(message: pb.Collection) -> dict[str, Any]:
    """The REST JSON of a collection (``GET /v1/collections/{name}``) the message stands for."""
    data: dict[str, Any] = {
        "alias": message.name,
        "points": message.points,
        "vectors": dict(message.vectors),
        "served": message.served,
        "default": message.default,
    }
    for name in _OPTIONAL_COLLECTION_FIELDS:
        data[name] = getattr(message, name) if message.HasField(name) else None
    data["versions"] = [
        {
            "name": v.name,
            "number": v.number,
            "bundle": v.bundle if v.HasField("bundle") else None,
            "role": v.role if v.HasField("role") else None,
            "points": v.points,
            "vectors": dict(v.vectors),
            "settings": json.loads(v.settings_json) if v.HasField("settings_json") else None,
            "index": (
                {
                    "indexed_points": v.index.indexed_points,
                    "building": v.index.building,
                    "segments": v.index.segments,
                }
                if v.HasField("index")
                else None
            ),
        }
        for v in message.versions
    ]
    return data


# -- ingestion and jobs ----------------------------------------------------------------------


def ingest_request_to_proto(
    source: Mapping[str, Any] | str, collection: str | None = None
) -> pb.IngestRequest:
    """From REST's ``source`` (a path, or one of ``{"directory"|"manifest"|"manifest_lines"|
    "urls"|"webdataset": ...}``, or ``{"table": ..., "columns"?: {...}}``)."""
    spec: Mapping[str, Any] = {"directory": source} if isinstance(source, str) else source
    columns = spec.get("columns") if "table" in spec else None
    kinds = {k: v for k, v in spec.items() if not (k == "columns" and "table" in spec)}
    unknown = sorted(set(kinds) - set(SOURCE_KINDS))
    if unknown or len(kinds) != 1:
        raise invalid(f"a source needs exactly one of {', '.join(SOURCE_KINDS)}; got {list(spec)}")
    request = pb.IngestRequest(collection=collection or "")
    kind, value = next(iter(kinds.items()))
    if kind == "webdataset":
        patterns = [value] if isinstance(value, str) else list(value)
        request.webdataset.CopyFrom(pb.Shards(patterns=patterns))
    elif kind == "table":
        request.table.CopyFrom(pb.Table(uri=value, columns=dict(columns or {})))
    elif kind == "manifest_lines":
        lines = [v if isinstance(v, str) else json.dumps(v) for v in value]
        request.manifest_lines.CopyFrom(pb.ManifestLines(lines=lines))
    elif kind == "urls":
        request.urls.CopyFrom(pb.Urls(urls=list(value)))
    else:
        setattr(request, kind, value)
    return request


def ingest_body_from_proto(request: pb.IngestRequest) -> dict[str, Any]:
    """The REST body of ``POST /v1/ingest``: validate it with ``IngestRequest``."""
    kind = request.WhichOneof("source")
    source: dict[str, Any] = {}
    if kind == "manifest_lines":
        source[kind] = list(request.manifest_lines.lines)
    elif kind == "urls":
        source[kind] = list(request.urls.urls)
    elif kind == "webdataset":
        source[kind] = list(request.webdataset.patterns)
    elif kind == "table":
        source[kind] = request.table.uri
        if request.table.columns:
            source["columns"] = dict(request.table.columns)
    elif kind is not None:
        source[kind] = getattr(request, kind)
    body: dict[str, Any] = {"source": source}
    if request.collection:
        body["collection"] = request.collection
    return body


def job_to_proto(job: JobStatus) -> pb.Job:
    message = pb.Job(
        id=job.id,
        kind=job.kind,
        state=job.state,
        waiting_for_writer=job.waiting_for_writer,
        errors=[pb.JobError(item=e.item, reason=e.reason) for e in job.errors],
        created_at=job.created_at,
        updated_at=job.updated_at,
        **{name: getattr(job, name) for name in _JOB_COUNTS},
    )
    for name in _OPTIONAL_JOB_FIELDS:
        value = getattr(job, name)
        if value is not None:
            setattr(message, name, value)
    message.total_known = job.total_known
    return message


def job_from_proto(message: pb.Job) -> JobStatus:
    data: dict[str, Any] = {
        "id": message.id,
        "kind": message.kind,
        "state": message.state,
        "waiting_for_writer": message.waiting_for_writer,
        "errors": [{"item": e.item, "reason": e.reason} for e in message.errors],
        "created_at": message.created_at,
        "updated_at": message.updated_at,
        **{name: getattr(message, name) for name in _JOB_COUNTS},
    }
    for name in _OPTIONAL_JOB_FIELDS:
        data[name] = getattr(message, name) if message.HasField(name) else None
    data["total_known"] = message.total_known if message.HasField("total_known") else True
    return JobStatus.model_validate(data)


def page_token(offset: int) -> str:
    """An opaque token for the page that starts at ``offset`` (AIP-158)."""
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode("ascii")


def page_offset(token: str) -> int:
    """Where the page of ``token`` starts; "" is the first page."""
    if not token:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))["offset"]
    except (ValueError, KeyError, TypeError, UnicodeError) as exc:
        raise invalid("page_token is not one this server gave", {"page_token": token}) from exc
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise invalid("page_token is not one this server gave", {"page_token": token})
    return offset
