"""Retrieval and discrimination metrics over score matrices: pure numpy, no I/O.

Ties never count in the model's favour. A model that gives every gallery item the same score
(a collapsed tower, all-zero embeddings) must score at chance or below, never 1.0, so a query's
rank is ``1 + (items scoring strictly higher) + (other items scoring exactly the same)``: ties are
broken pessimistically, as if every tied competitor had been ranked first. Likewise a true item
must beat a negative *strictly* to count as a win.

Scores must be finite: NaN compares false against everything and would silently turn into a
win or a loss depending on which side it sits, so it is refused with ``ValueError``. The one
exception is ``-inf`` in ``pairwise_accuracy``'s negatives, which pads ragged rows (a row with
fewer negatives than the widest one); every finite score beats it.
"""

from __future__ import annotations

import numpy as np


def _as_matrix(similarity: np.ndarray) -> np.ndarray:
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.ndim != 2:
        raise ValueError(f"similarity must be 2-D [queries, gallery], got shape {sim.shape}")
    if sim.shape[0] == 0 or sim.shape[1] == 0:
        raise ValueError(f"similarity must have at least one query and one item, got {sim.shape}")
    if not np.isfinite(sim).all():
        raise ValueError("similarity contains NaN or infinite scores")
    return sim


def _targets(targets: np.ndarray | None, n_queries: int, n_gallery: int) -> np.ndarray:
    if targets is None:
        if n_queries > n_gallery:
            raise ValueError(
                f"without targets, query i must match item i: {n_queries} queries but only "
                f"{n_gallery} gallery items"
            )
        return np.arange(n_queries)
    tgt = np.asarray(targets)
    if tgt.shape != (n_queries,):
        raise ValueError(f"targets must have shape ({n_queries},), got {tgt.shape}")
    if not np.issubdtype(tgt.dtype, np.integer):
        raise ValueError(f"targets must be integer column indices, got dtype {tgt.dtype}")
    if tgt.min() < 0 or tgt.max() >= n_gallery:
        raise ValueError(f"targets must lie in [0, {n_gallery}), got [{tgt.min()}, {tgt.max()}]")
    return tgt.astype(np.int64)


def ranks(similarity: np.ndarray, targets: np.ndarray | None = None) -> np.ndarray:
    """1-based rank of each query's target among its row, ties broken pessimistically.

    ``similarity[i, j]`` scores query ``i`` against gallery item ``j``; the target of row ``i`` is
    column ``i`` unless ``targets[i]`` names another. Rank = 1 + (columns scoring strictly higher
    than the target) + (other columns scoring exactly the same as the target).
    """
    sim = _as_matrix(similarity)
    tgt = _targets(targets, sim.shape[0], sim.shape[1])
    target_scores = sim[np.arange(sim.shape[0]), tgt][:, None]
    # `>=` counts the target itself once; every other tie counts against the model.
    at_least = (sim >= target_scores).sum(axis=1)
    return at_least.astype(np.int64)


def recall_at_k(similarity: np.ndarray, k: int, targets: np.ndarray | None = None) -> float:
    """Fraction of queries whose target ranks within the top ``k`` (see :func:`ranks`)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return float((ranks(similarity, targets) <= k).mean())


def pairwise_accuracy(true_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    """Fraction of rows whose true score beats EVERY negative of the row strictly.

    ``true_scores`` has shape ``[n]`` and ``negative_scores`` ``[n, m]`` (``m >= 1``); a tie with
    any negative counts as a failure. Pad rows with fewer negatives with ``-inf``; a row made only
    of padding has nothing to beat and is refused, since it would count as a free win.
    """
    true = np.asarray(true_scores, dtype=np.float64)
    neg = np.asarray(negative_scores, dtype=np.float64)
    if true.ndim != 1 or true.size == 0:
        raise ValueError(f"true_scores must be 1-D and non-empty, got shape {true.shape}")
    if neg.ndim != 2 or neg.shape[0] != true.shape[0] or neg.shape[1] == 0:
        raise ValueError(
            f"negative_scores must have shape ({true.shape[0]}, m>=1), got {neg.shape}"
        )
    if not np.isfinite(true).all():
        raise ValueError("true_scores contains NaN or infinite scores")
    if np.isnan(neg).any() or np.isposinf(neg).any():
        raise ValueError("negative_scores contains NaN or +inf (only -inf pads a short row)")
    if np.isneginf(neg).all(axis=1).any():
        raise ValueError("a row of negative_scores has no negative, only -inf padding")
    return float((true > neg.max(axis=1)).mean())


def pad_ragged(rows: list[np.ndarray]) -> np.ndarray:
    """Stack 1-D score arrays of different lengths into ``[n, max_len]``, padding with ``-inf``."""
    if not rows:
        raise ValueError("no rows to pad")
    width = max(len(r) for r in rows)
    out = np.full((len(rows), width), -np.inf, dtype=np.float64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out
