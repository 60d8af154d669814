"""OpenAI-compatible ``POST /v1/embeddings``; the logic is in ``service.search.embeddings``."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from service.core.schemas.openai import EmbeddingRequest, EmbeddingResponse
from service.gateway.deps import ComponentsDep, SearchScope, SettingsDep
from service.gateway.routers.responses import errors
from service.search.embeddings import create_embeddings as embed_request

# Embedding is what a search does first, so it needs what a search needs: the `search` scope.
router = APIRouter(
    prefix="/v1/embeddings",
    tags=["openai"],
    dependencies=[SearchScope],
    # 404: a `model` this gateway does not serve (the body names the served ones).
    responses=errors(400, 404, 413, 415, 429),
)


@router.post("", operation_id="create_embeddings", response_model=EmbeddingResponse)
async def create_embeddings(
    body: EmbeddingRequest, components: ComponentsDep, settings: SettingsDep
) -> EmbeddingResponse:
    """Embed texts and images like OpenAI's ``/v1/embeddings``: the official clients work as-is."""
    # The embedding blocks (it waits for the encoder's batch): a worker thread does it. An async
    # route with one explicit hop, not a `def` one: FastAPI would also check a `def` route's
    # answer against the response model in the thread pool, a second hop per request.
    return await run_in_threadpool(
        embed_request, components.embedder, body, max_image_bytes=settings.limits.max_upload_bytes
    )
