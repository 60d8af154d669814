"""Fair fusion: an item is judged on the channels it has, each channel on its own scale.

``fuse_reference`` recomputes the fused ranking in plain numpy from the definition; the planner's
fusion must agree with it, and with the store (a real embedded Qdrant Edge) in the loop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from service.core.domain import Point, Record, StoredHit
from service.search.fusion import MIN_SPREAD, SCALE_HITS, fuse
from service.store.edge import QdrantEdgeStore

DIMS = {"image": 8, "caption": 8, "description": 6}


def _unit(v: np.ndarray) -> list[float]:
    return (v / np.linalg.norm(v)).tolist()


def fuse_reference(
    queries: dict[str, np.ndarray],
    items: dict[str, dict[str, np.ndarray]],
    tops: dict[str, list[float]],
    weights: dict[str, float],
) -> list[tuple[str, float]]:
    """The definition: per channel, cosine (a multivector: its best row), standardised by the
    mean and spread of that channel's top scores; an item's score, the weighted mean over the
    channels it has."""
    out = []
    for pid, vectors in items.items():
        num = den = 0.0
        for channel, top in tops.items():
            if channel not in vectors:
                continue
            q = queries[channel] / np.linalg.norm(queries[channel])
            rows = np.atleast_2d(vectors[channel])
            rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
            cos = float((rows @ q).max())
            z = (cos - np.mean(top)) / max(float(np.std(top)), MIN_SPREAD)
            num += weights[channel] * z
            den += weights[channel]
        out.append((pid, num / den))
    return sorted(out, key=lambda x: (-x[1], x[0]))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[QdrantEdgeStore]:
    s = QdrantEdgeStore(tmp_path / "store")
    s.ensure_collection("c", DIMS)  # type: ignore[arg-type]
    yield s
    s.close()


def test_fusion_matches_the_reference_with_the_store_in_the_loop(store: QdrantEdgeStore) -> None:
    rng = np.random.default_rng(7)
    items: dict[str, dict[str, np.ndarray]] = {}
    points = []
    for i in range(40):
        vectors: dict[str, np.ndarray] = {}
        if i % 4 != 3:  # every fourth item is a text document: no image
            vectors["image"] = rng.standard_normal(8)
        if i % 3 == 0:  # a third have captions, of several chunks
            vectors["caption"] = rng.standard_normal((1 + i % 4, 8))
        if i % 2 == 0:
            vectors["description"] = rng.standard_normal(6)
        pid = f"00000000-0000-0000-0000-{i:012d}"
        items[pid] = vectors
        points.append(
            Point(
                id=pid,
                vectors={
                    k: (np.asarray([_unit(r) for r in v]).tolist() if v.ndim == 2 else _unit(v))
                    for k, v in vectors.items()
                },
                payload={"n": i},
            )
        )
    store.upsert("c", points)
    queries = {c: rng.standard_normal(d) for c, d in DIMS.items()}
    weights = {"image": 1.0, "caption": 0.5, "description": 2.0}
    depth = 10  # fewer than the items: some are re-scored in channels they fell out of
    hits = {c: store.search("c", c, _unit(queries[c]), limit=depth) for c in DIMS}  # type: ignore[arg-type]
    ids = list(dict.fromkeys(h.id for found in hits.values() for h in found))
    records = store.retrieve("c", ids, with_vectors=True)
    got = fuse(hits, records, {c: _unit(q) for c, q in queries.items()}, weights)  # type: ignore[arg-type]
    tops = {c: [h.score for h in found] for c, found in hits.items()}
    want = fuse_reference(queries, {pid: items[pid] for pid in ids}, tops, weights)
    assert [h.id for h in got] == [pid for pid, _ in want]
    np.testing.assert_allclose([h.score for h in got], [s for _, s in want], atol=1e-5)


def test_a_one_vector_item_best_in_its_channel_ranks_first() -> None:
    """RRF would rank the three-channel item first (three middling ranks beat one first place)."""
    q = {"image": [1.0, 0.0], "caption": [1.0, 0.0], "description": [1.0, 0.0]}
    photo = Record("photo", {}, {"image": [1.0, 0.0]})
    middling = Record("all-three", {}, {c: [0.6, 0.8] for c in q})
    others = [Record(f"o{i}", {}, {c: [0.5, 0.866] for c in q}) for i in range(3)]
    records = [middling, photo, *others]

    def top(channel: str) -> list[StoredHit]:
        scored = [
            StoredHit(r.id, float(np.dot(q[channel], r.vectors[channel])), {})
            for r in records
            if channel in r.vectors
        ]
        return sorted(scored, key=lambda h: -h.score)

    hits = {c: top(c) for c in q}
    fused = fuse(hits, records, q, dict.fromkeys(q, 1.0))  # type: ignore[arg-type]
    assert [h.id for h in fused][:2] == ["photo", "all-three"]


def test_a_weight_of_zero_and_an_empty_channel_leave_the_channel_out() -> None:
    q = {"image": [1.0, 0.0], "caption": [0.0, 1.0]}
    a = Record("a", {}, {"image": [1.0, 0.0], "caption": [1.0, 0.0]})
    b = Record("b", {}, {"image": [0.0, 1.0], "caption": [0.0, 1.0]})
    hits = {
        "image": [StoredHit("a", 1.0, {}), StoredHit("b", 0.0, {})],
        "caption": [StoredHit("b", 1.0, {}), StoredHit("a", 0.0, {})],
    }
    both = fuse(hits, [a, b], q, {"image": 1.0, "caption": 1.0})  # type: ignore[arg-type]
    assert both[0].score == pytest.approx(both[1].score)  # one channel each: a tie
    image_only = fuse(hits, [a, b], q, {"image": 1.0, "caption": 0.0})  # type: ignore[arg-type]
    assert [h.id for h in image_only] == ["a", "b"]
    empty = fuse({"image": hits["image"], "caption": []}, [a, b], q, {"image": 1.0, "caption": 1.0})  # type: ignore[arg-type]
    assert [h.id for h in empty] == ["a", "b"]


def test_scores_do_not_depend_on_how_many_hits_were_fetched() -> None:
    """A channel's scale comes from its top SCALE_HITS hits, so a second page or a grouped
    search (which fetch deeper) score and order the same items the same."""
    rng = np.random.default_rng(3)
    q = {"image": _unit(rng.standard_normal(4)), "description": _unit(rng.standard_normal(4))}
    records = [
        Record(f"r{i:03d}", {}, {c: _unit(rng.standard_normal(4)) for c in q}) for i in range(120)
    ]

    def hits(depth: int) -> dict[str, list[StoredHit]]:
        out = {}
        for c in q:
            scored = [StoredHit(r.id, float(np.dot(q[c], r.vectors[c])), {}) for r in records]
            out[c] = sorted(scored, key=lambda h: -h.score)[:depth]
        return out

    shallow = fuse(hits(SCALE_HITS), records, q, dict.fromkeys(q, 1.0))  # type: ignore[arg-type]
    deep = fuse(hits(3 * SCALE_HITS), records, q, dict.fromkeys(q, 1.0))  # type: ignore[arg-type]
    assert [(h.id, h.score) for h in shallow] == [(h.id, h.score) for h in deep]
