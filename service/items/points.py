"""The write path shared by the gateway (``POST /v1/items``) and the indexer pipeline.

An :class:`Item` (image bytes and/or texts) becomes one :class:`Point` with the named vectors it
can fill, embedded on the lane the caller names. Point ids are deterministic (UUIDv5 of the
collection and the item's id, or its content sha256), so posting or ingesting the same thing
again replaces the point instead of duplicating it.

A caption becomes the ``caption`` multivector: sentence chunks that each fit the text tower
(``service.items.chunking``), one row each, so no part of a long caption is truncated away. The
chunks are counted with the encoder's own tokenizer where this process has it (the in-process
encoder); a remote encoder's tokenizer is not here, so chunks are packed by an estimate and
checked against the token counts the encoder reports: a chunk that filled the tower (it may
have been cut) is halved and embedded again. The description stays one vector.

Every call names the bundle it embeds with (``bundle``, ``name@version``; None: the encoder's
default), and the payload's ``model`` says which. During a model rollout a write embeds each item
once per bundle (:func:`build_versioned_points`); the store routes each point to the collection
version of its bundle (``service.store.versions``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

import numpy as np

from service.clients.base import EmbeddingClient
from service.core.config import LimitsSettings
from service.core.domain import Kind, Lane, MultiVector, Point, VectorValue, point_id
from service.core.embeddings import ImageEmbedding
from service.core.errors import ClipsearchError, ErrorType, invalid
from service.items.chunking import (
    MAX_CHUNKS,
    TokenCount,
    chunk_caption,
    estimate_tokens,
    split_in_two,
)
from service.items.describe import describe, label_summary

# An estimate lets through a chunk the encoder then reports too long: it is halved, at most
# this many times over (a 10,000-character caption halves to single characters in 14).
MAX_SPLIT_ROUNDS = 16


@runtime_checkable
class TokenCounting(Protocol):
    """An embedder that can count tokens exactly as its text tower reads them, untruncated."""

    def count_tokens(self, text: str, *, bundle: str | None = None) -> int: ...


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
        return content_sha256([self.image or b""], self.caption, self.description)

    @property
    def key(self) -> str:
        return self.source_id or self.sha256

    @property
    def kind(self) -> Kind:
        return Kind.image if self.image is not None else Kind.text


def content_sha256(media: Iterable[bytes], caption: str | None, description: str | None) -> str:
    """An item's content hash (payload ``sha256``; a resumed job skips what matches): the media
    bytes, given in any number of blocks, then the caption, a NUL, the description."""
    digest = hashlib.sha256()
    for block in media:
        digest.update(block)
    digest.update((caption or "").encode())
    digest.update(b"\0")
    digest.update((description or "").encode())
    return digest.hexdigest()


def clean_text(text: str | None) -> str | None:
    """Strip surrounding whitespace; an empty text counts as absent."""
    if text is None:
        return None
    text = text.strip()
    return text or None


def validate_item(item: Item, limits: LimitsSettings) -> None:
    """Refuse, never truncate: a caption up to ``limits.max_caption_chars`` (it is chunked), a
    description up to ``limits.max_text_chars`` (it is one vector)."""
    if item.image is None and not (item.caption or item.description):
        raise invalid("an item needs an image, a caption or a description")
    for name, text, setting in (
        ("caption", item.caption, "max_caption_chars"),
        ("description", item.description, "max_text_chars"),
    ):
        limit: int = getattr(limits, setting)
        if text is not None and len(text) > limit:
            raise invalid(
                f"{name} is {len(text)} characters; the limit is {limit} (limits.{setting})",
                {"field": name, "length": len(text), setting: limit},
            )


@dataclass
class _Chunk:
    text: str
    vector: list[float] | None = None


def caption_multivectors(
    embedder: EmbeddingClient, captions: Sequence[str], *, lane: Lane, bundle: str | None = None
) -> list[MultiVector | ClipsearchError]:
    """Each caption's chunk vectors (rows L2-normalised by the encoder), or its own error (a
    caption that needs more than ``MAX_CHUNKS`` chunks). Every chunk of every caption goes in
    one ``embed_texts`` call; more only when an estimated chunk must be halved."""
    limit = embedder.info(bundle=bundle).max_text_tokens
    exact = isinstance(embedder, TokenCounting)
    count: TokenCount = estimate_tokens
    if isinstance(embedder, TokenCounting):
        counter = embedder

        def count(text: str) -> int:
            return counter.count_tokens(text, bundle=bundle)

    parts: list[list[_Chunk] | ClipsearchError] = []
    for caption in captions:
        try:
            chunks = chunk_caption(caption, count, limit, max_chunks=MAX_CHUNKS)
            parts.append([_Chunk(t) for t in chunks])
        except ClipsearchError as exc:
            parts.append(exc)
    for _ in range(MAX_SPLIT_ROUNDS):
        todo = [
            c for chunks in parts if isinstance(chunks, list) for c in chunks if c.vector is None
        ]
        if not todo:
            return [
                p if isinstance(p, ClipsearchError) else [c.vector or [] for c in p] for p in parts
            ]
        emb = embedder.embed_texts([c.text for c in todo], lane=lane, bundle=bundle)
        if emb.tokens is None and not exact:
            raise ClipsearchError(
                ErrorType.internal,
                "the encoder reports no token counts: cannot tell whether caption chunks fit",
            )
        for row, chunk in enumerate(todo):
            # A count below the limit was not truncated; one at the limit may have been, unless
            # the chunk was counted exactly (then it just fills the tower).
            if exact or emb.tokens is None or int(emb.tokens[row]) < limit:
                chunk.vector = emb.joint[row].tolist()
        parts = [p if isinstance(p, ClipsearchError) else _halve_unfit(p, limit) for p in parts]
    raise ClipsearchError(ErrorType.internal, "caption chunks still do not fit after halving")


def _halve_unfit(chunks: list[_Chunk], limit: int) -> list[_Chunk] | ClipsearchError:
    out: list[_Chunk] = []
    for chunk in chunks:
        if chunk.vector is not None:
            out.append(chunk)
        elif len(chunk.text) < 2:
            return invalid(f"a character of the caption takes more than {limit} tokens")
        else:
            out += [_Chunk(half) for half in split_in_two(chunk.text)]
    if len(out) > MAX_CHUNKS:
        return invalid(f"the caption needs more than {MAX_CHUNKS} chunks of {limit} tokens")
    return out


def build_points(
    embedder: EmbeddingClient,
    collection: str,
    items: Sequence[Item],
    *,
    lane: Lane,
    bundle: str | None = None,
) -> list[Point | ClipsearchError]:
    """Embed items in batches with ``bundle``; each item yields its point or its own error. An
    image with no caption and no description gets a description written from the classes the
    image tower sees, where the bundle names classes (``service.items.describe``)."""
    out: list[Point | ClipsearchError | None] = [None] * len(items)
    vectors: list[dict[str, VectorValue]] = [{} for _ in items]
    descriptions: list[str | None] = [it.description for it in items]
    labels: list[list[dict[str, object]] | None] = [None] * len(items)

    image_idx = [i for i, it in enumerate(items) if it.image is not None]
    if image_idx:
        images = embedder.encode_images(
            [items[i].image or b"" for i in image_idx], lane=lane, bundle=bundle
        )
        for i, result in zip(image_idx, images, strict=True):
            if isinstance(result, ClipsearchError):
                out[i] = result
                continue
            vectors[i].update(image_vectors(result))
            if result.labels:
                labels[i] = label_summary(result.labels)
                # Only an image with no text of its own: a caption already says what it shows,
                # better than any classifier (and a second, weaker text would dilute it).
                if descriptions[i] is None and not items[i].caption:
                    descriptions[i] = describe(result.labels)

    idx = [i for i, it in enumerate(items) if out[i] is None and it.caption]
    if idx:
        captions = caption_multivectors(
            embedder, [items[i].caption or "" for i in idx], lane=lane, bundle=bundle
        )
        for i, rows in zip(idx, captions, strict=True):
            if isinstance(rows, ClipsearchError):
                out[i] = rows
            else:
                vectors[i]["caption"] = rows

    idx = [i for i in range(len(items)) if out[i] is None and descriptions[i]]
    if idx:
        emb = embedder.embed_texts([descriptions[i] or "" for i in idx], lane=lane, bundle=bundle)
        for row, i in enumerate(idx):
            vectors[i]["description"] = emb.sentence[row].tolist()

    model = embedder.info(bundle=bundle).bundle
    now = datetime.now(UTC).isoformat()
    for i, item in enumerate(items):
        if out[i] is not None:
            continue
        payload: dict[str, Any] = {
            "media_id": item.key,
            "kind": item.kind.value,
            "uri": item.uri,
            "caption": item.caption,
            "description": descriptions[i],
            "tags": list(item.tags),
            "metadata": dict(item.metadata),
            "created_at": now,
            "model": model,
            "sha256": item.sha256,
        }
        if labels[i] is not None:
            payload["labels"] = labels[i]
            # The description was written by the model, not given: say so.
            payload["description_generated"] = item.description is None and not item.caption
        out[i] = Point(id=point_id(collection, item.key), vectors=vectors[i], payload=payload)
    return [p for p in out if p is not None]


def build_versioned_points(
    embedder: EmbeddingClient,
    collection: str,
    items: Sequence[Item],
    *,
    lane: Lane,
    bundles: Sequence[str | None] = (None,),
) -> list[list[Point] | ClipsearchError]:
    """Each item's points, one per bundle (``VersionedStore.write_bundles``: the current
    version's and, during a rollout, the next version's), or its error: an item fails as a
    whole, so no version holds it while another misses it."""
    out: list[list[Point] | ClipsearchError] = [[] for _ in items]
    for bundle in dict.fromkeys(bundles):
        try:
            made = build_points(embedder, collection, items, lane=lane, bundle=bundle)
        except ClipsearchError as exc:
            if exc.type != ErrorType.not_found or bundle is None:
                raise
            raise ClipsearchError(
                ErrorType.unavailable,
                f"collection {collection!r} is written with bundle {bundle}, which this "
                "encoder does not serve: serve it (CLIPSEARCH_ENCODER__EXTRA_BUNDLES, or "
                "--bundle on the encoder workers) or roll the collection back",
                {"bundle": bundle},
            ) from exc
        for i, result in enumerate(made):
            kept = out[i]
            if isinstance(kept, ClipsearchError):
                continue
            if isinstance(result, ClipsearchError):
                out[i] = result
            else:
                kept.append(result)
    return out


def image_vectors(embedding: ImageEmbedding) -> dict[str, VectorValue]:
    """An image's named vectors: ``image`` (joint space) and, where the bundle has it,
    ``visual``."""
    out: dict[str, VectorValue] = {"image": np.asarray(embedding.joint, np.float32).tolist()}
    if embedding.visual is not None:
        out["visual"] = np.asarray(embedding.visual, np.float32).tolist()
    return out
