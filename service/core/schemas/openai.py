"""Request and response shapes of the OpenAI-compatible embeddings API (``POST /v1/embeddings``).

They follow OpenAI's ``CreateEmbeddingRequest`` / ``CreateEmbeddingResponse`` so that the official
clients work unchanged, plus one extension, ``modality``. Errors are not OpenAI's shape but the
project's one shape (``{"error": {"type", "message", "detail"}}``): it carries the ``message`` and
``type`` the OpenAI clients read, and they raise on the status code alone.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

EncodingFormat = Literal["float", "base64"]
Modality = Literal["text", "image"]
# OpenAI's own cap on inputs per request; clients batch to it, so it is the natural limit here.
MAX_INPUTS = 2048


class EmbeddingRequest(BaseModel):
    # OpenAI answers 400 to unknown parameters too; forbidding them catches typos like "modalty".
    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        min_length=1,
        max_length=256,
        description="the served bundle as `name` or `name@version`; "
        "`<name>/description` for the description (sentence) space, text only",
    )
    # Token arrays are accepted by the schema only so that the answer can be a 400 that says they
    # are unsupported, rather than a schema error that does not.
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="a string or a list of strings; an `image/*` data URI is an image; "
        "token arrays are refused (400)"
    )
    encoding_format: EncodingFormat = Field(
        "float", description="`base64` = little-endian float32 bytes, base64-encoded"
    )
    dimensions: int | None = Field(
        None, ge=1, description="must equal the model's dimension: vectors are never truncated"
    )
    user: str | None = Field(None, max_length=256, description="accepted and ignored")
    modality: Modality | None = Field(
        None,
        description="`image`: every input is an image (data URI or bare base64); `text`: every "
        "input is text, even one that looks like a data URI; unset: data URIs are images",
    )


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
