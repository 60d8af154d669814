"""Metrics on hand-built score matrices whose ranks are known by inspection."""

from __future__ import annotations

import numpy as np
import pytest

from models.eval.metrics import pad_ragged, pairwise_accuracy, ranks, recall_at_k

# Row 0: target 0.9 is the best -> rank 1.
# Row 1: target 0.3 ties with column 2 -> pessimistic rank 2.
# Row 2: target 0.6 is the worst -> rank 3.
SIM = np.array(
    [
        [0.9, 0.1, 0.5],
        [0.2, 0.3, 0.3],
        [0.8, 0.7, 0.6],
    ]
)


def test_ranks_on_the_diagonal_break_ties_against_the_model() -> None:
    assert ranks(SIM).tolist() == [1, 2, 3]


@pytest.mark.parametrize(("k", "expected"), [(1, 1 / 3), (2, 2 / 3), (3, 1.0), (10, 1.0)])
def test_recall_at_k_on_the_diagonal(k: int, expected: float) -> None:
    assert recall_at_k(SIM, k) == pytest.approx(expected)


def test_targets_other_than_the_diagonal() -> None:
    targets = np.array([2, 0, 1])
    # Row 0: 0.5 < 0.9 -> 2. Row 1: 0.2 < 0.3, 0.3 -> 3. Row 2: 0.7 < 0.8 -> 2.
    assert ranks(SIM, targets).tolist() == [2, 3, 2]
    assert recall_at_k(SIM, 1, targets) == 0.0
    assert recall_at_k(SIM, 2, targets) == pytest.approx(2 / 3)
    assert recall_at_k(SIM, 3, targets) == 1.0


def test_a_collapsed_model_scores_zero_not_one() -> None:
    flat = np.zeros((4, 4))
    assert ranks(flat).tolist() == [4, 4, 4, 4]
    assert recall_at_k(flat, 1) == 0.0
    assert recall_at_k(flat, 3) == 0.0
    assert recall_at_k(flat, 4) == 1.0


def test_more_gallery_than_queries_and_a_subset_of_queries() -> None:
    sim = np.array([[0.1, 0.9, 0.2, 0.0], [0.5, 0.4, 0.3, 0.6]])
    # Query rows 1 and 3 of a bigger set, each targeting its own gallery column.
    assert ranks(sim, np.array([1, 3])).tolist() == [1, 1]
    assert ranks(sim).tolist() == [3, 3]  # column 0 for row 0, column 1 for row 1


@pytest.mark.parametrize(
    ("sim", "k", "targets", "message"),
    [
        (SIM, 0, None, "k must be"),
        (np.array([[np.nan, 0.1], [0.1, 0.2]]), 1, None, "NaN"),
        (SIM, 1, np.array([0, 1, 3]), "targets must lie"),
        (SIM, 1, np.array([0, 1]), "shape"),
        (SIM, 1, np.array([0.0, 1.0, 2.0]), "integer"),
        (np.ones((3, 2)), 1, None, "without targets"),
        (np.ones(3), 1, None, "2-D"),
        (np.ones((0, 3)), 1, None, "at least one"),
    ],
)
def test_recall_refuses_bad_input(
    sim: np.ndarray, k: int, targets: np.ndarray | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        recall_at_k(sim, k, targets)


def test_pairwise_accuracy_needs_a_strict_win_over_every_negative() -> None:
    true = np.array([0.9, 0.5, 0.3, 0.7])
    negatives = np.array(
        [
            [0.1, 0.2],  # beats both -> win
            [0.5, 0.1],  # ties one -> failure
            [0.2, 0.4],  # loses to one -> failure
            [0.69, 0.0],  # beats both -> win
        ]
    )
    assert pairwise_accuracy(true, negatives) == pytest.approx(0.5)


def test_pairwise_accuracy_with_ragged_rows_padded_by_minus_inf() -> None:
    negatives = pad_ragged([np.array([0.1]), np.array([0.4, 0.6])])
    assert negatives.shape == (2, 2)
    assert negatives[0, 1] == -np.inf
    assert pairwise_accuracy(np.array([0.5, 0.5]), negatives) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("true", "negatives", "message"),
    [
        (np.array([0.5]), np.array([[-np.inf, -np.inf]]), "no negative"),
        (np.array([0.5]), np.zeros((1, 0)), "m>=1"),
        (np.array([0.5, 0.1]), np.zeros((1, 2)), "shape"),
        (np.array([np.nan]), np.zeros((1, 2)), "true_scores"),
        (np.array([0.5]), np.array([[np.nan, 0.1]]), "NaN"),
        (np.array([]), np.zeros((0, 2)), "non-empty"),
    ],
)
def test_pairwise_accuracy_refuses_bad_input(
    true: np.ndarray, negatives: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        pairwise_accuracy(true, negatives)
