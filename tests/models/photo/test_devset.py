"""The dev set's files and its ranking metrics."""

from __future__ import annotations

import numpy as np
import pytest

from models.photo.dev.devset import (
    GROUPS,
    load_photos,
    load_queries,
    packages,
    relevance,
    score,
    score_groups,
)

# Sources the evaluation's TEST suite uses: never tune on them.
TEST_SOURCES = ("skimage", "scikit-image", "sklearn", "scikit-learn", "matplotlib", "opencv")


def test_dev_files_parse_and_every_query_has_a_match() -> None:
    photos, queries = load_photos(), load_queries()
    assert len(photos) > 300 and len(queries) > 250
    assert {q.group for q in queries} == set(GROUPS)
    rel = relevance(photos, queries)
    assert rel.any(axis=1).all()
    assert len({(p.package, p.path) for p in photos}) == len(photos)


def test_dev_photos_come_from_no_test_source() -> None:
    for package in packages(load_photos()):
        assert not any(s in package for s in TEST_SOURCES), package


def test_score_ranks_first_match() -> None:
    sims = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.1, 0.2, 0.3]])
    rel = np.array([[True, False, False], [True, False, False], [False, True, True]])
    s = score(sims, rel)
    assert s.r_at_1 == pytest.approx(2 / 3)  # query 1's match is ranked last
    assert s.mean_rank == pytest.approx((1 + 3 + 1) / 3)
    # AP: 1, 1/3, and (1/1 + 2/2) / 2 = 1
    assert s.map == pytest.approx((1 + 1 / 3 + 1) / 3)


def test_score_groups_has_all_and_each_group() -> None:
    photos, queries = load_photos(), load_queries()
    rel = relevance(photos, queries)
    sims = rel.astype(float)  # a perfect ranker
    out = score_groups(sims, rel, queries)
    assert set(out) == {"all", *GROUPS}
    assert all(s.r_at_1 == 1.0 and s.mean_rank == 1.0 and s.map == 1.0 for s in out.values())
