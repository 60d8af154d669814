"""Ranks and recalls of the real-photo evaluation: pure functions over hit lists.

A query's rank is the 1-based position of its best relevant hit, or None when no relevant photo
came back. Recall@k counts only retrieved ranks; the mean rank puts an unretrieved query at the
collection size (the worst rank it could have had), so a bundle that finds nothing is not
rewarded by a short hit list.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

RECALL_AT: tuple[int, ...] = (1, 5)


def best_rank(hit_ids: Sequence[str], relevant: Collection[str]) -> int | None:
    """1-based position of the first relevant hit, or None."""
    for position, hit in enumerate(hit_ids, start=1):
        if hit in relevant:
            return position
    return None


def summarise(ranks: Sequence[int | None], collection_size: int) -> dict[str, float | int | None]:
    """``{"n", "r1", "r5", "mean_rank"}`` of a group of queries (None values for an empty one)."""
    n = len(ranks)
    out: dict[str, float | int | None] = {"n": n}
    for k in RECALL_AT:
        hits = sum(1 for r in ranks if r is not None and r <= k)
        out[f"r{k}"] = round(hits / n, 4) if n else None
    resolved = [collection_size if r is None else r for r in ranks]
    out["mean_rank"] = round(sum(resolved) / n, 2) if n else None
    return out


def kept_in_top(
    relevant: Collection[str], before: Sequence[str], after: Sequence[str], k: int = 5
) -> tuple[list[str], list[str]]:
    """The relevant ids in the top ``k`` of ``before``, split into those still in the top ``k``
    of ``after`` and those that fell out (each list sorted)."""
    was = sorted(set(before[:k]) & set(relevant))
    now = set(after[:k])
    return [i for i in was if i in now], [i for i in was if i not in now]


RRF_K = 60


def reciprocal_rank_fusion(rankings: Sequence[Sequence[str]], k: int = RRF_K) -> list[str]:
    """Ids by the sum over rankings of 1 / (k + position): the fusion the gateway used before
    ``service.search.fusion``, kept here as the mixed check's ablation (ties by id)."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for position, hit in enumerate(ranking, start=1):
            scores[hit] = scores.get(hit, 0.0) + 1.0 / (k + position)
    return sorted(scores, key=lambda i: (-scores[i], i))
