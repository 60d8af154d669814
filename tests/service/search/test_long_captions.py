"""mode=caption is MaxSim over caption chunks, end to end on the tiny bundle and the embedded
store: a sentence at the end of a long caption is found, where one truncated vector loses it.
And item queries ("more like this") search with a stored caption multivector."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from service.clients.inprocess import InProcessEmbeddingClient
from service.core.bundle.manifest import load_bundle
from service.core.config import Settings
from service.core.domain import Point, point_id
from service.core.errors import ClipsearchError, ErrorType
from service.encoder.engine import EncoderEngine
from service.items.points import Item, build_points
from service.search.planner import Query, SearchOptions, SearchService
from service.store.edge import QdrantEdgeStore
from tests.service.items.test_points import PARAGRAPHS

COLL = "media"
DIMS = {"image": 64, "caption": 64, "description": 128}
QUERY = "one small purple star in the upper left corner"  # PARAGRAPHS' last sentence
LONG = point_id(COLL, "long")
OTHERS = [
    "a purple circle on a white background",
    "a star in the dark sky",
    "a small square in the corner",
    "a green triangle above a yellow line",
    "two red balls near the left edge",
    "a blue box in the middle of a grey field",
    "an orange heart far from the centre",
    "a black dot next to a pink ring",
]


@pytest.fixture(scope="module")
def embedder(tiny_bundle_dir: Path) -> Iterator[InProcessEmbeddingClient]:
    client = InProcessEmbeddingClient(EncoderEngine(load_bundle(tiny_bundle_dir), Settings()))
    yield client
    client.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[QdrantEdgeStore]:
    store = QdrantEdgeStore(tmp_path)
    store.ensure_collection(COLL, DIMS)  # type: ignore[arg-type]
    yield store
    store.close()


def index(embedder: InProcessEmbeddingClient, store: QdrantEdgeStore, items: list[Item]) -> None:
    points = build_points(embedder, COLL, items, lane="bulk")
    assert all(isinstance(p, Point) for p in points)
    store.upsert(COLL, points)  # type: ignore[arg-type]


def corpus() -> list[Item]:
    return [Item(caption=PARAGRAPHS, source_id="long")] + [
        Item(caption=text, source_id=f"other-{i}") for i, text in enumerate(OTHERS)
    ]


def test_a_sentence_at_the_end_of_a_long_caption_is_found(
    embedder: InProcessEmbeddingClient, store: QdrantEdgeStore
):
    index(embedder, store, corpus())
    search = SearchService(embedder, store, COLL)
    result = search.search(Query(text=QUERY), SearchOptions(mode="caption", limit=3))
    assert result.channels == ("caption",)
    assert result.hits[0].payload["media_id"] == "long"
    assert result.hits[0].payload["caption"] == PARAGRAPHS
    hybrid = search.search(Query(text=QUERY), SearchOptions(mode="hybrid", limit=3))
    assert hybrid.hits[0].payload["media_id"] == "long"  # the caption leg carries it


def test_one_truncated_vector_would_have_lost_it(
    embedder: InProcessEmbeddingClient, store: QdrantEdgeStore
):
    """The control: the whole caption as one text is cut at the tower's limit; its vector does
    not lead the search, and scores far below the chunk that holds the last sentence."""
    whole = embedder.embed_texts([PARAGRAPHS])
    assert whole.tokens is not None and whole.tokens[0] == embedder.info().max_text_tokens
    index(embedder, store, corpus())
    query = embedder.embed_texts([QUERY]).joint[0].tolist()
    [chunked] = [h for h in store.search(COLL, "caption", query, limit=20) if h.id == LONG]
    store.upsert(COLL, [Point(LONG, {"caption": [whole.joint[0].tolist()]})])
    hits = store.search(COLL, "caption", query, limit=20)
    assert hits[0].id != LONG
    [truncated] = [h for h in hits if h.id == LONG]
    assert truncated.score < chunked.score - 0.2


def test_more_like_an_item_uses_the_mean_of_its_caption_chunks(
    embedder: InProcessEmbeddingClient, store: QdrantEdgeStore
):
    twin = PARAGRAPHS.replace("purple star", "purple ball")
    index(embedder, store, [*corpus(), Item(caption=twin, source_id="twin")])
    search = SearchService(embedder, store, COLL)
    for mode in ("caption", "auto", "hybrid"):
        result = search.search(Query(item_id="long"), SearchOptions(mode=mode, limit=4))
        assert result.channels == ("caption",)  # the only vector the item has
        assert result.hits[0].payload["media_id"] == "twin", mode
        assert LONG not in {h.id for h in result.hits}  # not itself
        assert len(result.hits) == 4
    [record] = store.retrieve(COLL, [LONG], with_vectors=True)
    rows = np.asarray(record.vectors["caption"])
    mean = rows.mean(axis=0) / np.linalg.norm(rows.mean(axis=0))
    want = store.search(COLL, "caption", mean.tolist(), limit=5)[1:]
    got = search.search(Query(item_id=record.id), SearchOptions(mode="caption", limit=4))
    assert [h.id for h in got.hits] == [h.id for h in want]  # by point id as well


def test_an_item_query_crosses_to_the_other_joint_vector_only_when_asked_for_one(
    embedder: InProcessEmbeddingClient, store: QdrantEdgeStore
):
    index(embedder, store, corpus())
    search = SearchService(embedder, store, COLL)
    result = search.search(Query(item_id="long"), SearchOptions(mode="image", limit=3))
    assert result.channels == ("image",)  # a text item asks images with its caption
    with pytest.raises(ClipsearchError) as err:
        search.search(Query(item_id="long"), SearchOptions(mode="description"))
    assert err.value.type is ErrorType.invalid_input
    with pytest.raises(ClipsearchError) as err:
        search.search(Query(item_id="never-added"), SearchOptions(mode="caption"))
    assert err.value.type is ErrorType.not_found
