"""The write path's captions on the real tiny bundle: long captions become a multivector of
chunks that each fit the text tower (none truncated), embedded in one call when the tokenizer is
at hand and checked against the encoder's token counts when it is not (a remote encoder)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.clients.base import EmbeddingClient, TextEmbeddings
from service.clients.inprocess import InProcessEmbeddingClient
from service.core.bundle.manifest import load_bundle
from service.core.bundle.tokenize import TokenCounter
from service.core.config import LimitsSettings, Settings
from service.core.domain import Lane, Point
from service.core.errors import ClipsearchError, ErrorType
from service.encoder.engine import EncoderEngine
from service.items import points as points_module
from service.items.points import Item, TokenCounting, build_points, validate_item

COLL = "media"
PARAGRAPHS = (
    "A big red circle sits in the middle of the picture, next to a small blue square. "
    "Above them there is a green triangle, and below them a yellow line. "
    "The background is a dark grey field with a few white dots on the left side.\n\n"
    "In the second part of the image a black ball is near the bottom edge. "
    "Two orange squares are between the ball and the top right corner. "
    "A pink heart and a brown box are far from the centre, on the right.\n\n"
    "Finally, in the upper left corner, there is one small purple star."
)
# Words the tiny vocabulary lacks split into single letters: an estimate counts them low.
RARE = "Photosynthesis antidisestablishmentarianism quixotically zygomorphic. " * 6


@pytest.fixture(scope="module")
def local(tiny_bundle_dir: Path) -> Iterator[InProcessEmbeddingClient]:
    client = InProcessEmbeddingClient(EncoderEngine(load_bundle(tiny_bundle_dir), Settings()))
    yield client
    client.close()


class Recording:
    """Forwards to the real client and keeps every text batch with the counts it got back.
    Without ``exact`` it lacks ``count_tokens``, as a remote (gRPC) encoder does."""

    def __init__(self, inner: InProcessEmbeddingClient) -> None:
        self.inner = inner
        self.calls: list[tuple[list[str], list[int]]] = []

    def info(self, *, bundle: str | None = None) -> Any:
        return self.inner.info(bundle=bundle)

    def embed_texts(
        self, texts: Sequence[str], *, lane: Lane = "interactive", bundle: str | None = None
    ) -> TextEmbeddings:
        out = self.inner.embed_texts(texts, lane=lane, bundle=bundle)
        assert out.tokens is not None
        self.calls.append((list(texts), out.tokens.tolist()))
        return out

    def embed_images(
        self, images: Sequence[bytes], *, lane: Lane = "interactive", bundle: str | None = None
    ) -> Any:
        return self.inner.embed_images(images, lane=lane, bundle=bundle)

    def encode_images(
        self, images: Sequence[bytes], *, lane: Lane = "interactive", bundle: str | None = None
    ) -> Any:
        return self.inner.encode_images(images, lane=lane, bundle=bundle)

    def ready(self) -> bool:
        return True

    def health(self) -> Any:
        return self.inner.health()

    def close(self) -> None: ...


class ExactRecording(Recording):
    def count_tokens(self, text: str, *, bundle: str | None = None) -> int:
        return self.inner.count_tokens(text, bundle=bundle)


@pytest.fixture
def counter(tiny_bundle_dir: Path) -> TokenCounter:
    return TokenCounter(tiny_bundle_dir / "tokenizer.json")


def caption_rows(embedder: EmbeddingClient, caption: str) -> list[list[float]]:
    [point] = build_points(embedder, COLL, [Item(caption=caption)], lane="bulk")
    assert isinstance(point, Point)
    assert point.payload["caption"] == caption  # the whole text, not a chunk
    rows = point.vectors["caption"]
    assert isinstance(rows, list) and isinstance(rows[0], list)
    return rows  # type: ignore[return-value]


def test_a_long_caption_is_chunked_exactly_in_one_call(
    local: InProcessEmbeddingClient, counter: TokenCounter
):
    limit = local.info().max_text_tokens
    assert counter(PARAGRAPHS) > limit  # one vector would lose the end
    embedder = ExactRecording(local)
    assert isinstance(embedder, TokenCounting) and isinstance(embedder, EmbeddingClient)
    rows = caption_rows(embedder, PARAGRAPHS)
    [(chunks, tokens)] = embedder.calls
    assert len(rows) == len(chunks) > 1
    assert all(counter(c) <= limit for c in chunks) and max(tokens) <= limit
    assert " ".join(chunks).split() == PARAGRAPHS.split()
    want = local.embed_texts(chunks).joint
    np.testing.assert_allclose(rows, want, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)  # unit rows


def test_without_a_tokenizer_chunks_are_checked_against_the_encoders_counts(
    local: InProcessEmbeddingClient, counter: TokenCounter
):
    limit = local.info().max_text_tokens
    embedder = Recording(local)
    rows = caption_rows(embedder, RARE + PARAGRAPHS)
    assert len(embedder.calls) > 1  # the estimate let chunks through that filled the tower
    sent = [(t, n) for texts, counts in embedder.calls for t, n in zip(texts, counts, strict=True)]
    kept = [t for t, n in sent if n < limit]
    refused = [t for t, n in sent if n >= limit]
    assert refused and all(counter(t) >= limit for t in refused)
    assert len(rows) == len(kept)
    assert all(counter(t) < limit for t in kept)  # nothing stored was truncated
    assert sorted(" ".join(kept).split()) == sorted((RARE + PARAGRAPHS).split())
    want = local.embed_texts(kept).joint
    best = (np.asarray(rows) @ want.T).max(axis=1)  # every row is the vector of a kept chunk
    np.testing.assert_allclose(best, 1.0, atol=1e-5)


def test_a_short_caption_is_a_one_row_multivector(local: InProcessEmbeddingClient):
    rows = caption_rows(local, "a red circle")
    np.testing.assert_allclose(rows, local.embed_texts(["a red circle"]).joint, atol=1e-5)


def test_captions_of_a_batch_share_one_call_and_descriptions_stay_single(
    local: InProcessEmbeddingClient,
):
    embedder = ExactRecording(local)
    items = [
        Item(caption=PARAGRAPHS, description="a long description", source_id="a"),
        Item(caption="a blue square", source_id="b"),
        Item(description="only a description", source_id="c"),
    ]
    points = build_points(embedder, COLL, items, lane="bulk")
    assert len(embedder.calls) == 2  # every caption chunk at once, then the descriptions
    assert embedder.calls[1][0] == ["a long description", "only a description"]
    a, b, c = points
    assert isinstance(a, Point) and isinstance(b, Point) and isinstance(c, Point)
    assert len(a.vectors["caption"]) > 1 and len(b.vectors["caption"]) == 1
    assert np.ndim(a.vectors["description"]) == 1 and "caption" not in c.vectors


def test_a_caption_over_the_chunk_bound_fails_alone(
    local: InProcessEmbeddingClient, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(points_module, "MAX_CHUNKS", 2)
    items = [Item(caption=PARAGRAPHS, source_id="long"), Item(caption="a dot", source_id="ok")]
    failed, ok = build_points(local, COLL, items, lane="bulk")
    assert isinstance(failed, ClipsearchError) and failed.type is ErrorType.invalid_input
    assert "more than 2 chunks" in failed.message
    assert isinstance(ok, Point)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (Item(caption="x" * 10_001), "caption is 10001 characters; the limit is 10000"),
        (Item(description="x" * 2_001), "description is 2001 characters; the limit is 2000"),
    ],
)
def test_over_long_text_is_refused_naming_its_setting(item: Item, message: str):
    validate_item(Item(caption="x" * 10_000, description="y" * 2_000), LimitsSettings())
    with pytest.raises(ClipsearchError) as err:
        validate_item(item, LimitsSettings())
    assert err.value.type is ErrorType.invalid_input
    assert message in err.value.message and "limits.max_" in err.value.message


def test_content_sha256_is_the_items_hash_whatever_the_blocks() -> None:
    """A video hashed in 1 MiB blocks must match what the same bytes hash to as one item, or a
    resumed job would never skip it."""
    from service.items.points import Item, content_sha256

    data = bytes(range(256)) * 10
    item = Item(image=data, caption="a cat", description="on a mat")
    blocks = [data[:1000], data[1000:1001], data[1001:]]
    assert content_sha256(blocks, "a cat", "on a mat") == item.sha256
    assert content_sha256([data], "a cat", None) != item.sha256
    assert content_sha256([data], "a ca", "ton a mat") != item.sha256  # the NUL separates them
