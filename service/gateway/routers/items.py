"""Items: add or replace one item synchronously; read and delete it by id.

An id may hold slashes (a directory ingest's items are named by their ``file://`` URI), so the
id is the rest of the path: ``/v1/items/file:///photos/cat.jpg`` and its percent-encoded form
``/v1/items/file%3A%2F%2F%2Fphotos%2Fcat.jpg`` name the same item."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Response, UploadFile

from service.core.domain import Record
from service.core.errors import ClipsearchError, invalid
from service.core.schemas.api import COLLECTION_HELP, COLLECTION_MAX_CHARS, Hit, ItemResponse
from service.gateway.deps import ComponentsDep, IngestScope, SearchScope, SettingsDep
from service.gateway.routers.responses import errors
from service.gateway.uploads import read_upload
from service.items.delete import delete_records
from service.items.points import Item, build_versioned_points, clean_text, validate_item

router = APIRouter(prefix="/v1/items", tags=["items"])
CollectionForm = Annotated[
    str | None, Form(max_length=COLLECTION_MAX_CHARS, description=COLLECTION_HELP)
]
CollectionQuery = Annotated[
    str | None, Query(max_length=COLLECTION_MAX_CHARS, description=COLLECTION_HELP)
]
MAX_ID_CHARS = 256
MAX_TAGS = 64


def _metadata(raw: str | None) -> dict[str, Any]:
    if raw is None or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise invalid(f"metadata is not valid JSON: {exc.msg}") from exc
    if not isinstance(value, dict):
        raise invalid("metadata must be a JSON object")
    return value


def _tags(raw: str | None) -> list[str]:
    tags = [t.strip() for t in (raw or "").split(",") if t.strip()]
    if len(tags) > MAX_TAGS:
        raise invalid(f"at most {MAX_TAGS} tags")
    return tags


@router.post(
    "",
    operation_id="upsert_item",
    response_model=ItemResponse,
    dependencies=[IngestScope],
    responses=errors(400, 404, 409, 413, 415, 429),
)
def upsert_item(
    components: ComponentsDep,
    settings: SettingsDep,
    file: Annotated[UploadFile | None, File(description="an image")] = None,
    caption: Annotated[str | None, Form()] = None,
    description: Annotated[str | None, Form()] = None,
    metadata: Annotated[str | None, Form(description="a JSON object")] = None,
    tags: Annotated[str | None, Form(description="comma-separated")] = None,
    id: Annotated[str | None, Form(max_length=MAX_ID_CHARS)] = None,  # noqa: A002
    collection: CollectionForm = None,
) -> ItemResponse:
    target = components.collection_of(collection)  # 404 before the upload is read
    image = read_upload(file, settings.limits.max_upload_bytes) if file is not None else None
    item = Item(
        image=image,
        caption=clean_text(caption),
        description=clean_text(description),
        source_id=clean_text(id),
        metadata=_metadata(metadata),
        tags=_tags(tags),
    )
    validate_item(item, settings.limits)
    # One point per bundle the collection is written with (two during a model rollout).
    bundles = components.store.write_bundles(target)
    (result,) = build_versioned_points(
        components.embedder, target, [item], lane="interactive", bundles=bundles
    )
    if isinstance(result, ClipsearchError):
        raise result
    components.store.upsert(target, result)
    return ItemResponse(id=result[0].id, media_id=item.key)


def _find(components: ComponentsDep, item_id: str, collection: str | None) -> Record:
    """Look an item up by its point id or by the id (media id) it was posted with."""
    return components.search_for(collection).find(item_id)


@router.get(
    "/{item_id:path}",
    operation_id="get_item",
    response_model=Hit,
    dependencies=[SearchScope],
    responses=errors(404),
)
def get_item(item_id: str, components: ComponentsDep, collection: CollectionQuery = None) -> Hit:
    record = _find(components, item_id, collection)
    return Hit.from_payload(record.id, 1.0, record.payload)


@router.delete(
    "/{item_id:path}",
    operation_id="delete_item",
    status_code=204,
    dependencies=[IngestScope],
    responses=errors(404),
)
def delete_item(
    item_id: str,
    components: ComponentsDep,
    settings: SettingsDep,
    collection: CollectionQuery = None,
) -> Response:
    """Delete one item, and its thumbnail if it is a video segment (``DELETE /v1/videos/{id}``
    deletes a whole video)."""
    record = _find(components, item_id, collection)
    target = components.collection_of(collection)
    delete_records(components.store, target, settings.data_dir, [record])
    return Response(status_code=204)
