"""Descriptions written from an image's classes: what they say, how they hedge, how frames merge."""

from __future__ import annotations

from service.core.embeddings import Label
from service.items.describe import describe, label_summary, merge_labels

CAT = Label("tabby cat", 0.62, ("domestic cat", "cat", "feline", "mammal", "animal"))
TIGER = Label("tiger cat", 0.21, ("cat", "feline"))
EGYPT = Label("Egyptian cat", 0.11, ("domestic cat", "cat"))
LYNX = Label("lynx", 0.03, ("wildcat",))


def test_the_best_class_its_broader_terms_and_the_likely_others() -> None:
    text = describe([TIGER, CAT, LYNX, EGYPT])
    assert text == (
        "A photo of a tabby cat, a kind of domestic cat, cat, feline, mammal, animal. "
        "It may also show a tiger cat or an Egyptian cat."
    )


def test_an_unsure_best_class_is_hedged_and_nothing_is_said_without_labels() -> None:
    unsure = Label("espresso", 0.2, ("coffee", "beverage"))
    assert describe([unsure]) == "A photo of possibly an espresso, a kind of coffee, beverage."
    assert describe([]) is None


def test_frames_merge_by_mean_probability() -> None:
    # A class seen strongly in one frame vs. one seen weakly in two: the mean over all frames.
    merged = merge_labels([(CAT, TIGER), (TIGER,), ()])
    assert [lb.name for lb in merged] == ["tabby cat", "tiger cat"]
    assert merged[0].score == 0.62 / 3 and merged[1].score == (0.21 * 2) / 3
    assert merged[0].broader == CAT.broader
    assert merge_labels([]) == ()
    assert label_summary([LYNX, CAT], top=1) == [{"name": "tabby cat", "score": 0.62}]
