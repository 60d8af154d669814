"""Each hard negative is scored against the true text it was edited from."""

from __future__ import annotations

import pytest

from models.data.scenes import Scene, count_caption, generate_split
from models.eval.pairs import count_pair, negative_pairs


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    return generate_split("test", 200)


def test_every_negative_has_a_different_true_partner(scenes: list[Scene]) -> None:
    for scene in scenes:
        pairs, fallbacks = negative_pairs(scene)
        # The relation source is rebuilt for every negative the generator makes today.
        assert fallbacks == 0, scene.id
        for kind in ("attribute", "relation", "count"):
            assert [neg for _, neg in pairs[kind]] == list(scene.negatives[kind])
            for true, neg in pairs[kind]:
                assert true != neg
                assert true not in scene.negatives[kind]


def test_minimal_pairs_change_only_what_the_kind_is_about(scenes: list[Scene]) -> None:
    for scene in scenes:
        pairs, _ = negative_pairs(scene)
        for true, _neg in pairs["attribute"]:
            assert true == scene.captions["short"][0]
        for true, neg in pairs["count"]:
            if neg.startswith("the number of objects is"):
                assert true == count_caption(len(scene.objects))
            else:
                assert true == scene.captions["counting"][0]
        if len(scene.objects) > 1:
            for true, neg in pairs["relation"]:
                # Same two objects, same order: only the relation words differ.
                names = [f"{o.colour} {o.shape}" for o in scene.objects]
                assert sorted(n for n in names if n in true) == sorted(n for n in names if n in neg)


def test_count_pair(scenes: list[Scene]) -> None:
    for scene in scenes[:20]:
        true, others = count_pair(scene)
        assert true == count_caption(len(scene.objects))
        assert len(others) == 5 and true not in others
