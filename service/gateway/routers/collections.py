"""Collections: each alias users search, with its versions (``GET /v1/collections``)."""

from __future__ import annotations

from fastapi import APIRouter

from service.core.schemas.admin import CollectionInfo, CollectionList
from service.gateway.deps import ComponentsDep, SearchScope
from service.gateway.state import Components

router = APIRouter(prefix="/v1", tags=["collections"], dependencies=[SearchScope])


def _info(components: Components, name: str) -> CollectionInfo:
    described = components.store.describe(name)
    return CollectionInfo.model_validate({**described, "served": name == components.collection})


@router.get("/collections", operation_id="list_collections", response_model=CollectionList)
def list_collections(components: ComponentsDep) -> CollectionList:
    names = components.store.names()
    return CollectionList(collections=[_info(components, name) for name in names])


@router.get("/collections/{name}", operation_id="get_collection", response_model=CollectionInfo)
def get_collection(name: str, components: ComponentsDep) -> CollectionInfo:
    return _info(components, name)
