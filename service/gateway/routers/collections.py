"""Collections as a resource: create one with its bundle, list, read, delete
(``/v1/collections``). Every item, search, ingest, job and rollout call names its collection (a
``collection`` field in JSON and form bodies, a ``collection`` query parameter on GET/DELETE),
defaulting to the configured one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from service.admin.data import collection_info
from service.core.schemas.admin import CollectionInfo
from service.gateway.auth import unknown_collection
from service.gateway.deps import (
    AdminScope,
    ComponentsDep,
    PrincipalDep,
    SearchAnyCollection,
    SearchScope,
)
from service.gateway.routers.responses import errors
from service.gateway.state import Components

router = APIRouter(prefix="/v1", tags=["collections"])

CollectionPath = Annotated[
    str, Path(min_length=1, max_length=63, description="the collection's name")
]


class CollectionModel(CollectionInfo):
    """A collection and what the model of its current version is for (the bundle's card)."""

    domain: str | None = Field(
        None, description="the bundle's stated domain, where this gateway serves that bundle"
    )
    intended_use: str | None = Field(None, description="what the bundle is meant for, and not")


class CollectionModelList(BaseModel):
    collections: list[CollectionModel]


class CreateCollection(BaseModel):
    name: str = Field(
        min_length=1,
        max_length=63,
        description="lower-case letters, digits, '-' and '_'; no '__'",
        examples=["alpha"],
    )
    bundle: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="the bundle its vectors are made with: a served name@version or name, a "
        "zoo name, a bundle folder, or `tiny`; default: this gateway's configured bundle",
        examples=["photo"],
    )


class CollectionDeleted(BaseModel):
    collection: str
    deleted_versions: list[str] = Field(description="every version of it that was dropped")


def _info(components: Components, name: str) -> CollectionModel:
    return CollectionModel.model_validate(collection_info(components, name))


# A key sees the collections it has a scope on; any other is, to it, one that does not exist.
@router.get(
    "/collections",
    operation_id="list_collections",
    response_model=CollectionModelList,
    dependencies=[SearchAnyCollection],
    responses=errors(),
)
def list_collections(components: ComponentsDep, principal: PrincipalDep) -> CollectionModelList:
    names = [name for name in components.store.names() if principal.sees(name)]
    return CollectionModelList(collections=[_info(components, name) for name in names])


@router.get(
    "/collections/{collection}",
    operation_id="get_collection",
    response_model=CollectionModel,
    dependencies=[SearchScope],
    responses=errors(404),
)
def get_collection(collection: CollectionPath, components: ComponentsDep) -> CollectionModel:
    if collection not in components.store.names():
        raise unknown_collection(collection)
    return _info(components, collection)


@router.post(
    "/collections",
    operation_id="create_collection",
    status_code=201,
    response_model=CollectionModel,
    dependencies=[AdminScope],
    responses=errors(400, 404, 409),
)
async def create_collection(
    body: Annotated[CreateCollection, Body()], components: ComponentsDep
) -> CollectionModel:
    """An empty collection searched and written with ``bundle`` (loaded into the encoder now
    when it does not serve it yet). 409 when it exists; 404 for a bundle that is not there."""
    await run_in_threadpool(components.reindexer.create_collection, body.name, body.bundle)
    return await run_in_threadpool(_info, components, body.name)


@router.delete(
    "/collections/{collection}",
    operation_id="delete_collection",
    response_model=CollectionDeleted,
    dependencies=[AdminScope],
    responses=errors(404, 409),
)
async def delete_collection(
    collection: CollectionPath, components: ComponentsDep
) -> CollectionDeleted:
    """Every version, alias and thumbnail of it; a bundle loaded for it alone is freed. 409
    for the configured collection or while a rollout of it is active."""
    deleted = await run_in_threadpool(components.reindexer.delete_collection, collection)
    components.forget(collection)
    return CollectionDeleted.model_validate(deleted)
