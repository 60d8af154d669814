"""OpenAI-compatible ``POST /v1/embeddings``; the logic is in ``service.search.embeddings``."""

from __future__ import annotations

from fastapi import APIRouter

from service.core.schemas.openai import EmbeddingRequest, EmbeddingResponse
from service.gateway.deps import ComponentsDep, SearchScope, SettingsDep
from service.gateway.routers.responses import errors
from service.search.embeddings import create_embeddings as embed_request

# Embedding is what a search does first, so it needs what a search needs: the `search` scope.
router = APIRouter(
    prefix="/v1/embeddings",
    tags=["openai"],
    dependencies=[SearchScope],
    responses=errors(400, 413, 415, 429),
)


@router.post("", operation_id="create_embeddings", response_model=EmbeddingResponse)
def create_embeddings(
    body: EmbeddingRequest, components: ComponentsDep, settings: SettingsDep
) -> EmbeddingResponse:
    """Embed texts and images like OpenAI's ``/v1/embeddings``: the official clients work as-is."""
    return embed_request(
        components.embedder, body, max_image_bytes=settings.limits.max_upload_bytes
    )
