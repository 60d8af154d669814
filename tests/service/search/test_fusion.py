"""Fair fusion: an item is judged on the channels it has, each channel on the bundle's null and
turned into a probability of relevance.

The fusion must agree with the numpy reference of the congruence suite (``fused_reference``),
with the store (a real embedded Qdrant Edge) in the loop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.core.domain import Point, Record
from service.search.fusion import (
    GENERATED_EVIDENCE,
    RELEVANCE,
    SCALE_HITS,
    UNCALIBRATED,
    ChannelScale,
    evidence_kind,
    fuse,
    fused_score,
)
from service.store.edge import QdrantEdgeStore
from tests.service.store.test_congruence import fused_reference

DIMS = {"image": 8, "caption": 8, "description": 6}


def _unit(v: np.ndarray) -> list[float]:
    return (v / np.linalg.norm(v)).tolist()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[QdrantEdgeStore]:
    s = QdrantEdgeStore(tmp_path / "store")
    s.ensure_collection("c", DIMS)  # type: ignore[arg-type]
    yield s
    s.close()


def test_fusion_matches_the_reference_with_the_store_in_the_loop(store: QdrantEdgeStore) -> None:
    """The candidates a store returns for each channel's top ``depth``, fused, must give the
    numpy reference's ranking and scores (the congruence suite's ``fused_reference``)."""
    rng = np.random.default_rng(7)
    points = []
    for i in range(160):
        vectors: dict[str, Any] = {}
        if i % 4 != 3:  # every fourth item is a text document: no image
            vectors["image"] = _unit(rng.standard_normal(8))
        if i % 3 == 0:  # a third have captions, of several chunks
            vectors["caption"] = [_unit(r) for r in rng.standard_normal((1 + i % 4, 8))]
        if i % 2 == 0:
            vectors["description"] = _unit(rng.standard_normal(6))
        payload = {"n": i, "description_generated": i % 5 == 0}
        points.append(Point(f"00000000-0000-0000-0000-{i:012d}", vectors, payload))
    store.upsert("c", points)
    queries = {c: _unit(rng.standard_normal(d)) for c, d in DIMS.items()}
    weights = {"image": 1.0, "caption": 0.5, "description": 2.0}
    depth = SCALE_HITS  # fewer than the items: some are re-scored in channels they fell out of
    hits = {c: store.search("c", c, queries[c], limit=depth) for c in DIMS}  # type: ignore[arg-type]
    ids = list(dict.fromkeys(h.id for found in hits.values() for h in found))
    records = store.retrieve("c", ids, with_vectors=True)
    # spreads that put the best matches where the curves are steep (P far from 0 and 1)
    null = {
        "image": ChannelScale(-0.3, 0.15),
        "caption": ChannelScale(-0.6, 0.15),
        "description": ChannelScale(-0.3, 0.15),
    }
    got = fuse(records, queries, weights, null=null, depth=depth)  # type: ignore[arg-type]
    want = fused_reference(
        queries,
        depth,
        weights=weights,
        points=points,
        null={c: (n.mean, n.spread) for c, n in null.items()},
    )
    assert [h.id for h in got.hits] == [pid for _, pid in want]
    np.testing.assert_allclose([h.score for h in got.hits], [s for s, _ in want], atol=1e-6)
    assert got.hits[0].score > 0.2 and got.hits[-1].score < 0.01  # the test spans the scale
    # explain: each channel's rank is the store's own order there, and the score their mean
    for channel, found in hits.items():
        for place, hit in enumerate(found, start=1):
            (score,) = [c for c in got.explain[hit.id] if c.channel == channel]
            assert score.rank == place and score.similarity == pytest.approx(hit.score, abs=1e-5)
    by_id = {p.id: p for p in points}
    for hit in got.hits:
        parts = got.explain[hit.id]
        assert {c.channel for c in parts} == set(by_id[hit.id].vectors)
        assert hit.score == pytest.approx(fused_score(parts))
        for c in parts:
            scale = null.get(c.channel, UNCALIBRATED)
            assert c.standardised == pytest.approx(scale.standardise(c.similarity))
            curve = RELEVANCE[evidence_kind(c.channel, by_id[hit.id].payload)]
            assert c.relevance == pytest.approx(curve.probability(c.standardised))
    beyond = [c for parts in got.explain.values() for c in parts if c.rank is None]
    assert beyond  # re-scored outside a channel's top: its rank there is not known
    # A search that does not show explain gets the same ranking without it.
    quiet = fuse(records, queries, weights, null=null, depth=depth, explain=False)  # type: ignore[arg-type]
    assert [(h.id, h.score) for h in quiet.hits] == [(h.id, h.score) for h in got.hits]
    assert quiet.explain == {}


def test_a_one_vector_item_best_in_its_channel_ranks_first() -> None:
    """RRF would rank the three-channel item first (three middling ranks beat one first place)."""
    q = {"image": [1.0, 0.0], "caption": [1.0, 0.0], "description": [1.0, 0.0]}
    photo = Record("photo", {}, {"image": [1.0, 0.0]})
    middling = Record("all-three", {}, {c: [0.6, 0.8] for c in q})
    others = [Record(f"o{i}", {}, {c: [0.5, 0.866] for c in q}) for i in range(3)]
    records = [middling, photo, *others]
    fused = fuse(records, q, dict.fromkeys(q, 1.0), null={})  # type: ignore[arg-type]
    assert [h.id for h in fused.hits][:2] == ["photo", "all-three"]
    assert [c.channel for c in fused.explain["photo"]] == ["image"]


def test_a_weight_of_zero_and_a_channel_no_candidate_has_are_left_out() -> None:
    q = {"image": [1.0, 0.0], "caption": [0.0, 1.0]}
    a = Record("a", {}, {"image": [1.0, 0.0], "caption": [1.0, 0.0]})
    b = Record("b", {}, {"image": [0.0, 1.0], "caption": [0.0, 1.0]})
    both = fuse([a, b], q, {"image": 1.0, "caption": 1.0}, null={})  # type: ignore[arg-type]
    assert {c.channel for c in both.explain["a"]} == {"image", "caption"}
    image_only = fuse([a, b], q, {"image": 1.0, "caption": 0.0}, null={})  # type: ignore[arg-type]
    assert [h.id for h in image_only.hits] == ["a", "b"]
    assert {c.channel for c in image_only.explain["a"]} == {"image"}
    no_caption = [Record(r.id, {}, {"image": r.vectors["image"]}) for r in (a, b)]
    alone = fuse(no_caption, q, {"image": 1.0, "caption": 1.0}, null={})  # type: ignore[arg-type]
    assert [h.id for h in alone.hits] == ["a", "b"]


def test_scores_do_not_depend_on_how_many_hits_were_fetched() -> None:
    """A channel's scale is the bundle's null, not the query's other hits, so a second page or
    a grouped search (which fetch deeper) score and order the same items the same."""
    rng = np.random.default_rng(3)
    q = {"image": _unit(rng.standard_normal(4)), "description": _unit(rng.standard_normal(4))}
    records = [
        Record(f"r{i:03d}", {}, {c: _unit(rng.standard_normal(4)) for c in q}) for i in range(120)
    ]

    def candidates(depth: int) -> list[Record]:
        """Each channel's top ``depth`` records, as a store would fetch them."""
        keep: set[str] = set()
        for c, query in q.items():
            by_score = sorted(records, key=lambda r: -float(np.dot(query, r.vectors[c])))
            keep |= {r.id for r in by_score[:depth]}
        return [r for r in records if r.id in keep]

    null = {"image": ChannelScale(0.0, 0.4), "description": ChannelScale(0.1, 0.2)}
    weights = dict.fromkeys(q, 1.0)
    shallow = fuse(candidates(SCALE_HITS), q, weights, null=null)  # type: ignore[arg-type]
    deep = fuse(candidates(3 * SCALE_HITS), q, weights, null=null)  # type: ignore[arg-type]
    assert len(deep.hits) > len(shallow.hits)
    deep_scores = {h.id: h.score for h in deep.hits}
    for hit in shallow.hits:
        assert hit.score == pytest.approx(deep_scores[hit.id])
    assert [h.id for h in deep.hits][:10] == [h.id for h in shallow.hits][:10]


def test_a_fused_score_is_the_probability_of_relevance_of_its_channels() -> None:
    """What a fused score means: an item judged on one channel scores that channel's probability
    of relevance (its curve at the standardised score: about 0 at the null, 0.5 where the curve
    crosses it), whatever the other hits; an item with two channels their weighted mean."""
    q = {"image": [1.0, 0.0], "caption": [1.0, 0.0]}
    null = {"image": ChannelScale(0.2, 0.1), "caption": ChannelScale(0.1, 0.1)}
    picture, text = RELEVANCE["picture"], RELEVANCE["text"]
    half = -picture.intercept / picture.slope  # the standardised score where P = 0.5

    def at(cosine: float) -> list[float]:
        return [cosine, float(np.sqrt(1 - cosine**2))]

    unrelated = Record("unrelated", {}, {"image": at(0.2)})
    even = Record("even", {}, {"image": at(0.2 + 0.1 * half)})
    both = Record("both", {}, {"image": at(0.2 + 0.1 * half), "caption": at(0.8)})
    strong = Record("strong", {}, {"image": at(0.95)})
    for others in ([], [strong]):
        fused = fuse([unrelated, even, both, *others], q, dict.fromkeys(q, 1.0), null=null)  # type: ignore[arg-type]
        scores = {h.id: h.score for h in fused.hits}
        assert scores["unrelated"] == pytest.approx(picture.probability(0.0))
        assert scores["unrelated"] < 0.001
        assert scores["even"] == pytest.approx(0.5)
        assert scores["both"] == pytest.approx((0.5 + text.probability(7.0)) / 2)
        assert all(0.0 <= s <= 1.0 for s in scores.values())
    assert picture.probability(-1e6) == 0.0 and picture.probability(1e6) == 1.0  # no overflow


def test_a_generated_description_is_weaker_evidence_than_a_given_one() -> None:
    """Two items alike but for who wrote the description: the one a person gave ranks first
    where the description matches better than the picture, the generated one votes with half
    the weight and on its own curve (explain shows both)."""
    q = {"image": [1.0, 0.0], "description": [1.0, 0.0]}
    vectors = {"image": [0.3, 0.954], "description": [0.95, 0.312]}
    given = Record("given", {"description_generated": False}, vectors)
    generated = Record("generated", {"description_generated": True}, vectors)
    null = {"image": ChannelScale(0.2, 0.1), "description": ChannelScale(0.1, 0.1)}
    fused = fuse([generated, given], q, dict.fromkeys(q, 1.0), null=null)  # type: ignore[arg-type]
    assert [h.id for h in fused.hits] == ["given", "generated"]
    weights = {c.channel: c.weight for c in fused.explain["generated"]}
    assert weights == {"image": 1.0, "description": GENERATED_EVIDENCE}
    assert {c.channel: c.weight for c in fused.explain["given"]} == dict.fromkeys(q, 1.0)
    (gen,) = [c for c in fused.explain["generated"] if c.channel == "description"]
    assert gen.standardised == pytest.approx(8.5, abs=0.01)
    assert gen.relevance == pytest.approx(RELEVANCE["generated"].probability(gen.standardised))
    assert fused.hits[1].score == pytest.approx(fused_score(fused.explain["generated"]))


def test_a_good_match_in_one_channel_is_not_dragged_under_by_a_channel_blind_to_it() -> None:
    """A captioned scene whose caption matches well and whose picture the image tower cannot
    read (below the null: P about 0) still ranks above an item that is middling in both: a
    blind channel costs an item its share of the mean, never a negative score."""
    q = {"image": [1.0, 0.0], "caption": [1.0, 0.0]}
    null = {"image": ChannelScale(0.2, 0.1), "caption": ChannelScale(0.1, 0.1)}
    scene = Record("scene", {}, {"image": [0.0, 1.0], "caption": [0.8, 0.6]})  # z: -2, 7
    middling = Record("middling", {}, {"image": [0.45, 0.893], "caption": [0.45, 0.893]})
    fused = fuse([middling, scene], q, dict.fromkeys(q, 1.0), null=null)  # type: ignore[arg-type]
    assert [h.id for h in fused.hits] == ["scene", "middling"]


def test_similarities_in_one_product_equal_each_candidates_own_cosine() -> None:
    """The candidates' cosines come from one matrix product over all their rows: each equals the
    cosine computed for that candidate alone (a multivector: its best row, MaxSim)."""
    from service.search.fusion import similarities

    rng = np.random.default_rng(3)
    query = rng.normal(size=16)
    query /= np.linalg.norm(query)
    stored: list[Any] = [
        rng.normal(size=16).tolist(),
        [rng.normal(size=16).tolist() for _ in range(3)],  # a caption's chunks
        (rng.normal(size=16) * 40).tolist(),  # not unit: normalised too
        [rng.normal(size=16).tolist()],
    ]

    def alone(value: Any) -> float:
        rows = np.atleast_2d(np.asarray(value, dtype=np.float64))
        rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        return float((rows @ query).max())

    assert similarities(query, stored) == pytest.approx([alone(v) for v in stored], abs=1e-12)
