"""Collections: each alias users search, with its versions (``GET /v1/collections``)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from service.admin.cards import by_ref
from service.core.schemas.admin import CollectionInfo
from service.gateway.auth import unknown_collection
from service.gateway.deps import ComponentsDep, PrincipalDep, SearchAnyCollection
from service.gateway.routers.responses import errors
from service.gateway.state import Components

# A key sees the collections it has a scope on; any other is, to it, one that does not exist.
router = APIRouter(
    prefix="/v1", tags=["collections"], dependencies=[SearchAnyCollection], responses=errors(404)
)


class CollectionModel(CollectionInfo):
    """A collection and what the model of its current version is for (the bundle's card)."""

    domain: str | None = Field(
        None, description="the bundle's stated domain, where this gateway serves that bundle"
    )
    intended_use: str | None = Field(None, description="what the bundle is meant for, and not")


class CollectionModelList(BaseModel):
    collections: list[CollectionModel]


def _info(components: Components, name: str) -> CollectionModel:
    described = components.store.describe(name)
    info = CollectionModel.model_validate({**described, "served": name == components.collection})
    card = by_ref(components.embedder).get(info.bundle or "")
    if card is not None:
        info.domain, info.intended_use = card.domain, card.intended_use
    return info


@router.get("/collections", operation_id="list_collections", response_model=CollectionModelList)
def list_collections(components: ComponentsDep, principal: PrincipalDep) -> CollectionModelList:
    names = [name for name in components.store.names() if principal.sees(name)]
    return CollectionModelList(collections=[_info(components, name) for name in names])


@router.get("/collections/{name}", operation_id="get_collection", response_model=CollectionModel)
def get_collection(
    name: str, components: ComponentsDep, principal: PrincipalDep
) -> CollectionModel:
    if not principal.sees(name):
        raise unknown_collection(name)
    return _info(components, name)
