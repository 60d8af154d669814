"""Search: JSON queries (text, base64 image, image URL or a stored item's id: "more like this")
and multipart image queries."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, File, Form, UploadFile

from service.core.errors import invalid
from service.core.schemas.api import (
    COLLECTION_HELP,
    COLLECTION_MAX_CHARS,
    ChannelExplain,
    GroupBy,
    Hit,
    Mode,
    SearchRequest,
    SearchResponse,
)
from service.gateway.deps import ComponentsDep, MetricsDep, SearchScope, SettingsDep
from service.gateway.routers.responses import errors
from service.gateway.uploads import read_upload
from service.items.fetch import fetch_query_image
from service.search.planner import Query, SearchOptions, SearchResult

router = APIRouter(prefix="/v1/search", tags=["search"], dependencies=[SearchScope])

# An 8x8 red PNG: a query image small enough to paste.
_RED_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAFElEQVR4nGO8IyfHgA0wYRUdtBIA"
    "4FYBKCgCg6AAAAAASUVORK5CYII="
)
# Each works as pasted into "Try it out" (tests post every one); "more like this" names an item
# that the ingest operation's example adds.
SEARCH_EXAMPLES: dict[str, Any] = {
    "text": {"summary": "A text query", "value": {"text": "a red bicycle", "limit": 5}},
    "filtered": {
        "summary": "Only images and text documents",
        "value": {"text": "a dog in the snow", "filter": {"kind": ["image", "text"]}},
    },
    "image": {
        "summary": "A base64 image query",
        "value": {"image": _RED_PNG, "mode": "image", "limit": 5},
    },
    "more_like_this": {
        "summary": "More like a stored item (doc-1: the ingest example's)",
        "value": {"item_id": "doc-1", "limit": 5},
    },
    "likely_matches": {
        "summary": "Likely matches only, with each hit's channels",
        "description": "A text query in auto fuses its channels: `score` is the probability of "
        "relevance (`score_kind` probability, in [0, 1]), so 0.3 keeps items whose channels say "
        "that of held-out pairs scoring like them, 30 % were relevant; `explain` gives each "
        "hit's per-channel cosine, standardised score and `relevance`",
        "value": {"text": "a red bicycle", "score_threshold": 0.3, "explain": True, "limit": 5},
    },
    "videos": {
        "summary": "The best segment of each video",
        "value": {"text": "a person riding a bike", "group_by": "video", "limit": 5},
    },
}


def _respond(result: SearchResult, metrics: MetricsDep) -> SearchResponse:
    metrics.search_latency.labels(result.mode).observe(result.took_ms / 1000.0)
    hits = [Hit.from_payload(h.id, h.score, h.payload) for h in result.hits]
    if result.explain is not None:
        for hit in hits:
            hit.explain = [
                ChannelExplain.model_validate(c, from_attributes=True)
                for c in result.explain[hit.id]
            ]
    return SearchResponse(
        hits=hits,
        took_ms=round(result.took_ms, 3),
        model=result.model,
        mode=result.mode,
        channels=list(result.channels),
        score_kind=result.score_kind,
    )


@router.post(
    "",
    operation_id="search",
    response_model=SearchResponse,
    responses=errors(400, 404, 413, 415, 429, 504),
)
def search(
    body: Annotated[SearchRequest, Body(openapi_examples=SEARCH_EXAMPLES)],
    components: ComponentsDep,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> SearchResponse:
    try:
        image = body.image_bytes()
    except ValueError as exc:
        raise invalid(str(exc)) from exc
    if body.image_url is not None:
        image = fetch_query_image(body.image_url, settings=settings)
    if image is not None and len(image) > settings.limits.max_upload_bytes:
        raise invalid(
            f"image is {len(image)} bytes; the limit is {settings.limits.max_upload_bytes}"
        )
    query = Query(text=body.text, image=image, item_id=body.item_id)
    options = SearchOptions(
        mode=body.mode,
        limit=body.limit,
        offset=body.offset,
        filter=body.filter_values(),
        score_threshold=body.score_threshold,
        group_by=body.group_by,
        explain=body.explain,
    )
    return _respond(components.search_for(body.collection).search(query, options), metrics)


@router.post(
    "/image",
    operation_id="search_image",
    response_model=SearchResponse,
    responses=errors(400, 404, 413, 415, 429),
)
def search_image(
    file: Annotated[UploadFile, File(description="the query image")],
    components: ComponentsDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    collection: Annotated[
        str | None, Form(max_length=COLLECTION_MAX_CHARS, description=COLLECTION_HELP)
    ] = None,
    mode: Annotated[Mode, Form()] = "auto",
    limit: Annotated[int, Form(ge=1, le=100)] = 10,
    offset: Annotated[int, Form(ge=0, le=10_000)] = 0,
    group_by: Annotated[GroupBy | None, Form()] = None,
    score_threshold: Annotated[
        float | None,
        Form(
            ge=-100.0,
            le=100.0,
            description="keep hits whose `score` is at least this, as in `POST /v1/search`: "
            "a cosine in [-1, 1] (one channel) or a probability of relevance in [0, 1] (fused)",
        ),
    ] = None,
    explain: Annotated[
        bool, Form(description="give each hit's per-channel scores, as in `POST /v1/search`")
    ] = False,
) -> SearchResponse:
    image = read_upload(file, settings.limits.max_upload_bytes)
    options = SearchOptions(
        mode=mode,
        limit=limit,
        offset=offset,
        group_by=group_by,
        score_threshold=score_threshold,
        explain=explain,
    )
    service = components.search_for(collection)
    return _respond(service.search(Query(image=image), options), metrics)
