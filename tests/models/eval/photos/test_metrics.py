"""Ranks, recalls and the mixed-collection bookkeeping of the real-photo evaluation."""

from __future__ import annotations

from models.eval.photos.metrics import (
    best_rank,
    kept_in_top,
    reciprocal_rank_fusion,
    summarise,
)


def test_best_rank_is_the_first_relevant_hit() -> None:
    assert best_rank(["a", "b", "c", "d"], {"c", "d"}) == 3
    assert best_rank(["a", "b"], {"a"}) == 1
    assert best_rank(["a", "b"], {"z"}) is None
    assert best_rank([], {"a"}) is None


def test_summarise_counts_unretrieved_as_misses_at_the_collection_size() -> None:
    out = summarise([1, 3, 6, None], collection_size=50)
    assert out["n"] == 4
    assert out["r1"] == 0.25
    assert out["r5"] == 0.5
    assert out["mean_rank"] == (1 + 3 + 6 + 50) / 4


def test_an_unretrieved_query_never_counts_as_found_in_a_small_collection() -> None:
    # Three photos: an unretrieved query stands at rank 3 for the mean, but is not "in the top 5".
    out = summarise([None, 1], collection_size=3)
    assert out["r5"] == 0.5
    assert out["mean_rank"] == 2.0


def test_summarise_of_no_queries() -> None:
    assert summarise([], collection_size=10) == {"n": 0, "r1": None, "r5": None, "mean_rank": None}


def test_kept_in_top_splits_the_relevant_photos_that_were_in_the_top() -> None:
    before = ["cat", "doc", "dog", "x", "y", "late"]
    after = ["doc", "cat", "scene", "x", "y", "dog"]
    kept, gone = kept_in_top({"cat", "dog", "late"}, before, after, k=5)
    assert kept == ["cat"]
    assert gone == ["dog"]  # "late" was never in the top 5: it cannot fall out


def test_reciprocal_rank_fusion_sums_over_rankings_and_favours_many_channels() -> None:
    # "photo" is first in one ranking; "captioned" second in three: the sum lets it win (the
    # unfairness the gateway's fusion removed, kept here as the ablation).
    rankings = [["photo", "captioned"], ["captioned"], ["x", "captioned"]]
    assert reciprocal_rank_fusion(rankings) == ["captioned", "photo", "x"]
    assert reciprocal_rank_fusion([["b", "a"], ["a", "b"]]) == ["a", "b"]  # a tie goes by id
    assert reciprocal_rank_fusion([]) == []
