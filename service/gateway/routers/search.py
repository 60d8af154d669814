"""Search: JSON queries (text or base64 image) and multipart image queries."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from service.core.errors import invalid
from service.core.schemas.api import GroupBy, Hit, Mode, SearchRequest, SearchResponse
from service.gateway.deps import ComponentsDep, MetricsDep, SearchScope, SettingsDep
from service.gateway.uploads import read_upload
from service.search.planner import Query, SearchOptions, SearchResult

router = APIRouter(prefix="/v1/search", tags=["search"], dependencies=[SearchScope])


def _respond(result: SearchResult, metrics: MetricsDep) -> SearchResponse:
    metrics.search_latency.labels(result.mode).observe(result.took_ms / 1000.0)
    return SearchResponse(
        hits=[Hit.from_payload(h.id, h.score, h.payload) for h in result.hits],
        took_ms=round(result.took_ms, 3),
        model=result.model,
        mode=result.mode,
        channels=list(result.channels),
    )


@router.post("", operation_id="search", response_model=SearchResponse)
def search(
    body: SearchRequest, components: ComponentsDep, settings: SettingsDep, metrics: MetricsDep
) -> SearchResponse:
    try:
        image = body.image_bytes()
    except ValueError as exc:
        raise invalid(str(exc)) from exc
    if image is not None and len(image) > settings.limits.max_upload_bytes:
        raise invalid(
            f"image is {len(image)} bytes; the limit is {settings.limits.max_upload_bytes}"
        )
    query = Query(text=body.text, image=image)
    options = SearchOptions(
        mode=body.mode,
        limit=body.limit,
        offset=body.offset,
        filter=body.filter,
        score_threshold=body.score_threshold,
        group_by=body.group_by,
    )
    return _respond(components.search.search(query, options), metrics)


@router.post("/image", operation_id="search_image", response_model=SearchResponse)
def search_image(
    file: Annotated[UploadFile, File(description="the query image")],
    components: ComponentsDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    mode: Annotated[Mode, Form()] = "auto",
    limit: Annotated[int, Form(ge=1, le=100)] = 10,
    offset: Annotated[int, Form(ge=0, le=10_000)] = 0,
    group_by: Annotated[GroupBy | None, Form()] = None,
) -> SearchResponse:
    image = read_upload(file, settings.limits.max_upload_bytes)
    options = SearchOptions(mode=mode, limit=limit, offset=offset, group_by=group_by)
    return _respond(components.search.search(Query(image=image), options), metrics)
