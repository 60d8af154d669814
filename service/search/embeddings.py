"""The OpenAI-compatible embeddings API over an :class:`EmbeddingClient`: pure logic, no transport.

Served models, for each bundle the encoder serves (``EncoderInfo.bundles``, each
``name@version``; a bare ``name`` is the default bundle's where two share a name):

- ``name`` and ``name@version``: the CLIP joint space. Text goes through the text tower and
  images through the image tower, so text and image vectors are comparable (text→image search).
- ``name/description`` and ``name@version/description``: the description (sentence) space, text
  only. It is what the ``description`` vectors are stored in, so a client can do vision-free
  retrieval over descriptions with vectors it computed itself. It gets a distinct name, not a
  parameter, because OpenAI clients (and the tools built on them) pick a space by model name.

Inputs: text, or images as ``data:image/...;base64,`` URIs; ``modality="image"`` also admits bare
base64. Text and images may be mixed in one request; the answer keeps the input order. OpenAI's
shape has no per-item errors, so one bad input fails the whole request, naming its index.

Usage counts the text tower's tokens when the encoder reports them (``TextEmbeddings.tokens``) and
0 when it does not: a guess from another tokenizer would be a number that looks real but is not.
Images count no tokens.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from service.clients.base import EmbeddingClient
from service.core.errors import ClipsearchError, invalid, not_found, too_large, unsupported
from service.core.schemas.openai import (
    MAX_INPUTS,
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    EncodingFormat,
)

DESCRIPTION_SUFFIX = "/description"
Space = Literal["joint", "description"]

# RFC 2397: data:[<mediatype>][;param]*[;base64],<data>, here with the media type required and
# no spaces before the comma, so prose that merely starts with "data:" is not taken for a URI.
_DATA_URI = re.compile(
    r"data:(?P<mime>[\w.+-]+/[\w.+-]+)(?P<params>(?:;[\w.+-]+(?:=[^;,\s]*)?)*),",
    re.ASCII | re.IGNORECASE,  # URI schemes are case-insensitive
)
# The engine names failing texts "text <i>" by their position among the texts it was given.
_TEXT_INDEX = re.compile(r"^text \d+")


@dataclass(frozen=True)
class ServedModel:
    name: str  # canonical: name@version, with the /description suffix for that space
    space: Space
    dim: int
    bundle: str | None = None  # the bundle (name@version) that embeds it


def served_models(embedder: EmbeddingClient) -> dict[str, ServedModel]:
    """Every model name this embedder answers to, mapped to what it serves: every bundle
    served, the default first (so a bare name shared by two versions means the default's)."""
    info = embedder.info()
    bundles = [(b.ref, b.spaces) for b in info.bundles] or [(info.bundle, info.spaces)]
    models: dict[str, ServedModel] = {}
    for ref, spaces in bundles:
        short = ref.split("@", 1)[0]
        joint = ServedModel(ref, "joint", int(spaces["caption"]), ref)
        description = ServedModel(
            ref + DESCRIPTION_SUFFIX, "description", int(spaces["description"]), ref
        )
        for name, model in (
            (ref, joint),
            (short, joint),
            (ref + DESCRIPTION_SUFFIX, description),
            (short + DESCRIPTION_SUFFIX, description),
        ):
            models.setdefault(name, model)
    return models


def resolve_model(embedder: EmbeddingClient, requested: str) -> ServedModel:
    models = served_models(embedder)
    if requested not in models:
        raise not_found(
            f"model {requested!r} is not served; use one of {sorted(models)}",
            {"model": requested, "available": sorted(models)},
        )
    return models[requested]


@dataclass(frozen=True)
class Inputs:
    """The request's inputs split by modality; ``*_at`` hold each one's index in the request."""

    texts: list[str]
    text_at: list[int]
    images: list[bytes]
    image_at: list[int]


def _decode_base64(payload: str, index: int, max_bytes: int) -> bytes:
    payload = "".join(payload.split())  # base64 wrapped at 76 columns is still base64
    # Refuse from the length alone, before decoding: 4 characters carry 3 bytes.
    if len(payload) // 4 * 3 > max_bytes + 2:
        raise too_large(
            f"input {index}: the image is over the {max_bytes}-byte limit",
            {"index": index, "max_bytes": max_bytes},
        )
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise invalid(f"input {index}: not valid base64 ({exc})", {"index": index}) from exc
    if not data:
        raise invalid(f"input {index}: the image is empty", {"index": index})
    return data


def _image_from_data_uri(uri: str, match: re.Match[str], index: int, max_bytes: int) -> bytes:
    mime = match["mime"].lower()
    if not mime.startswith("image/"):
        raise unsupported(
            f"input {index}: a data URI of type {mime!r} is not an image",
            {"index": index, "mime": mime},
        )
    if ";base64" not in match["params"].lower():
        raise invalid(f"input {index}: an image data URI must be base64-encoded", {"index": index})
    return _decode_base64(uri[match.end() :], index, max_bytes)


def classify_inputs(request: EmbeddingRequest, *, max_image_bytes: int) -> Inputs:
    """Validate the inputs and decode the images; cheap checks only, no inference."""
    items = [request.input] if isinstance(request.input, str) else request.input
    if not items:
        raise invalid("'input' is an empty list; give at least one input")
    if len(items) > MAX_INPUTS:
        raise invalid(
            f"'input' has {len(items)} items; the limit is {MAX_INPUTS} per request",
            {"inputs": len(items), "max_inputs": MAX_INPUTS},
        )
    inputs = Inputs([], [], [], [])
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise invalid(
                "token arrays are not supported as 'input': send text (the server tokenizes "
                "it with the model's own tokenizer) or images as data URIs",
                {"index": i},
            )
        match = _DATA_URI.match(item) if request.modality != "text" else None
        if match is not None:
            inputs.images.append(_image_from_data_uri(item, match, i, max_image_bytes))
            inputs.image_at.append(i)
        elif request.modality == "image":
            inputs.images.append(_decode_base64(item, i, max_image_bytes))
            inputs.image_at.append(i)
        else:
            inputs.texts.append(item)
            inputs.text_at.append(i)
    return inputs


def _text_error(exc: ClipsearchError, positions: Sequence[int]) -> ClipsearchError:
    """Re-address an encoder error from its index among the texts to the request's index."""
    detail = exc.detail
    if not (isinstance(detail, dict) and isinstance(detail.get("index"), int)):
        return exc
    if not 0 <= detail["index"] < len(positions):
        return exc
    index = positions[detail["index"]]
    message, n = _TEXT_INDEX.subn(f"input {index}", exc.message)
    if not n:
        message = f"input {index}: {exc.message}"
    return ClipsearchError(
        exc.type, message, {**detail, "index": index}, retry_after_s=exc.retry_after_s
    )


def _image_error(exc: ClipsearchError, index: int) -> ClipsearchError:
    detail = exc.detail if isinstance(exc.detail, dict) else {}
    return ClipsearchError(
        exc.type,
        f"input {index}: {exc.message}",
        {**detail, "index": index},
        retry_after_s=exc.retry_after_s,
    )


def _encode(vector: np.ndarray, encoding: EncodingFormat) -> list[float] | str:
    if encoding == "base64":
        # What the OpenAI clients decode: raw little-endian float32, base64-encoded.
        return base64.b64encode(vector.astype("<f4", copy=False).tobytes()).decode("ascii")
    values: list[float] = vector.astype(np.float32, copy=False).tolist()
    return values


def create_embeddings(
    embedder: EmbeddingClient, request: EmbeddingRequest, *, max_image_bytes: int
) -> EmbeddingResponse:
    """Answer one ``/v1/embeddings`` request; raises :class:`ClipsearchError` on bad input."""
    model = resolve_model(embedder, request.model)
    if request.dimensions is not None and request.dimensions != model.dim:
        raise invalid(
            f"dimensions={request.dimensions} is not available: {model.name} returns "
            f"{model.dim}-dimensional vectors and does not truncate them",
            {"dimensions": request.dimensions, "model_dimensions": model.dim},
        )
    inputs = classify_inputs(request, max_image_bytes=max_image_bytes)
    if inputs.images and model.space == "description":
        raise invalid(
            f"input {inputs.image_at[0]} is an image, but {model.name} embeds text only; "
            f"use {model.name.removesuffix(DESCRIPTION_SUFFIX)} for images",
            {"index": inputs.image_at[0]},
        )

    vectors = np.zeros((len(inputs.text_at) + len(inputs.image_at), model.dim), np.float32)
    tokens = 0
    # Texts first: they fail validation cheaply, before any image is sent to the image tower.
    if inputs.texts:
        try:
            out = embedder.embed_texts(inputs.texts, lane="interactive", bundle=model.bundle)
        except ClipsearchError as exc:
            raise _text_error(exc, inputs.text_at) from exc
        vectors[inputs.text_at] = out.joint if model.space == "joint" else out.sentence
        if out.tokens is not None:
            tokens = int(np.asarray(out.tokens, dtype=np.int64).sum())
    if inputs.images:
        results = embedder.embed_images(inputs.images, lane="interactive", bundle=model.bundle)
        for position, result in zip(inputs.image_at, results, strict=True):
            if isinstance(result, ClipsearchError):
                raise _image_error(result, position) from result
            vectors[position] = result

    return EmbeddingResponse(
        data=[
            Embedding(index=i, embedding=_encode(vector, request.encoding_format))
            for i, vector in enumerate(vectors)
        ],
        model=model.name,
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
    )
