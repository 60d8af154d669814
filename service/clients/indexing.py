"""The write path shared by the gateway (``POST /v1/items``) and the indexer pipeline.

An :class:`Item` (image bytes and/or texts) becomes one :class:`Point` with the named vectors it
can fill, embedded on the lane the caller names. Point ids are deterministic (UUIDv5 of the
collection and the item's id, or its content sha256), so posting or ingesting the same thing
again replaces the point instead of duplicating it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from service.clients.base import EmbeddingClient
from service.core.domain import Kind, Lane, Point, point_id
from service.core.errors import ClipsearchError, invalid


@dataclass(frozen=True)
class Item:
    image: bytes | None = None
    caption: str | None = None
    description: str | None = None
    source_id: str | None = None
    uri: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    tags: Sequence[str] = ()

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256()
        for part in (self.image or b"", (self.caption or "").encode(), b"\0"):
            digest.update(part)
        digest.update((self.description or "").encode())
        return digest.hexdigest()

    @property
    def key(self) -> str:
        return self.source_id or self.sha256

    @property
    def kind(self) -> Kind:
        return Kind.image if self.image is not None else Kind.text


def clean_text(text: str | None) -> str | None:
    """Strip surrounding whitespace; an empty text counts as absent."""
    if text is None:
        return None
    text = text.strip()
    return text or None


def validate_item(item: Item, *, max_text_chars: int) -> None:
    if item.image is None and not (item.caption or item.description):
        raise invalid("an item needs an image, a caption or a description")
    for name, text in (("caption", item.caption), ("description", item.description)):
        if text is not None and len(text) > max_text_chars:
            raise invalid(f"{name} is {len(text)} characters; the limit is {max_text_chars}")


def build_points(
    embedder: EmbeddingClient,
    collection: str,
    items: Sequence[Item],
    *,
    lane: Lane,
) -> list[Point | ClipsearchError]:
    """Embed items in batches; each item yields its point or its own error."""
    out: list[Point | ClipsearchError | None] = [None] * len(items)
    vectors: list[dict[str, list[float]]] = [{} for _ in items]

    image_idx = [i for i, it in enumerate(items) if it.image is not None]
    if image_idx:
        images = embedder.embed_images([items[i].image or b"" for i in image_idx], lane=lane)
        for i, result in zip(image_idx, images, strict=True):
            if isinstance(result, ClipsearchError):
                out[i] = result
            else:
                vectors[i]["image"] = np.asarray(result, dtype=np.float32).tolist()

    for field_name, output, vector_name in (
        ("caption", "joint", "caption"),
        ("description", "sentence", "description"),
    ):
        idx = [i for i, it in enumerate(items) if out[i] is None and getattr(it, field_name)]
        if not idx:
            continue
        emb = embedder.embed_texts([getattr(items[i], field_name) for i in idx], lane=lane)
        matrix = getattr(emb, output)
        for row, i in enumerate(idx):
            vectors[i][vector_name] = matrix[row].tolist()

    model = embedder.info().bundle
    now = datetime.now(UTC).isoformat()
    for i, item in enumerate(items):
        if out[i] is not None:
            continue
        out[i] = Point(
            id=point_id(collection, item.key),
            vectors=vectors[i],
            payload={
                "media_id": item.key,
                "kind": item.kind.value,
                "uri": item.uri,
                "caption": item.caption,
                "description": item.description,
                "tags": list(item.tags),
                "metadata": dict(item.metadata),
                "created_at": now,
                "model": model,
                "sha256": item.sha256,
            },
        )
    return [p for p in out if p is not None]
