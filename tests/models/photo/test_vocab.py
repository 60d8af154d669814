"""ImageNet class names and broader terms from WordNet: cleaning, disambiguation, labels.json."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.photo.vocab import (
    STOP_TERMS,
    ImageNetClass,
    imagenet_classes,
    is_binomial,
    load_wnids,
    pick_name,
    prompts,
    to_labels,
    with_article,
)
from models.photo.wordnet import DEFAULT_DATA_NOUN, WordNet
from service.core.bundle.labels import Labels


@pytest.mark.parametrize(
    ("lemmas", "name"),
    [
        (("tabby", "tabby cat"), "tabby cat"),
        (("mouse", "computer mouse"), "computer mouse"),
        (("pickup", "pickup truck"), "pickup truck"),
        (("hammerhead", "hammerhead shark"), "hammerhead shark"),
        (("zebra",), "zebra"),
        (("jay",), "jay"),
        # "Cardigan" extends to "Cardigan Welsh corgi", which keeps the dog apart from the
        # sweater ("cardigan").
        (("Cardigan", "Cardigan Welsh corgi"), "Cardigan Welsh corgi"),
        # a later lemma that only shares letters is not an extension
        (("ram", "tup"), "ram"),
        (("cab", "cabriolet"), "cab"),
    ],
)
def test_pick_name(lemmas: tuple[str, ...], name: str) -> None:
    assert pick_name(lemmas) == name


def test_binomials() -> None:
    genera = frozenset({"Gorilla", "Canis", "Lhasa"})
    assert is_binomial("Gorilla gorilla", genera)
    assert is_binomial("Canis dingo", genera)
    assert not is_binomial("German shepherd", genera)  # not a genus
    assert not is_binomial("Lhasa Apso", genera)  # the epithet is never capitalised
    assert not is_binomial("gorilla", genera)


def test_articles_and_prompts() -> None:
    assert with_article("apple") == "an apple"
    assert with_article("zebra") == "a zebra"
    assert prompts("owl", ("a photo of {a}.", "the {n}")) == ["a photo of an owl.", "the owl"]


def test_class_list_is_imagenet_1k() -> None:
    wnids = load_wnids()
    assert len(wnids) == 1000 == len(set(wnids))
    assert wnids[0] == "n01440764"  # tench: class 0 of every ImageNet-1k classifier
    assert wnids[281] == "n02123045"  # tabby
    assert wnids == sorted(wnids)


wordnet_needed = pytest.mark.skipif(
    not DEFAULT_DATA_NOUN.is_file(), reason="Debian wordnet-base not installed"
)


@pytest.fixture(scope="module")
def classes() -> list[ImageNetClass]:
    return imagenet_classes(WordNet.load(), load_wnids())


@wordnet_needed
def test_names_unique_and_duplicates_disambiguated(classes: list[ImageNetClass]) -> None:
    names = [c.name.lower() for c in classes]
    assert len(set(names)) == 1000
    by_id = {c.wnid: c for c in classes}
    assert by_id["n02012849"].name == "crane (wading bird)"
    assert by_id["n03126707"].name == "crane (lifting device)"
    assert by_id["n03710721"].name == "tank suit"  # the swimsuit has a lemma of its own
    assert by_id["n03710637"].name == "maillot (tights)"
    assert by_id["n02123045"].name == "tabby cat"
    assert by_id["n02480855"].name == "gorilla"  # not "Gorilla gorilla"
    assert "Gorilla gorilla" not in by_id["n02480855"].synonyms


@wordnet_needed
def test_broader_terms(classes: list[ImageNetClass]) -> None:
    by_id = {c.wnid: c for c in classes}
    tabby = by_id["n02123045"].broader
    assert tabby[:2] == ("domestic cat", "cat")
    assert "animal" in tabby and "mammal" in tabby
    assert "vehicle" in by_id["n03930630"].broader  # pickup truck
    assert "food" in by_id["n07873807"].broader  # pizza
    for c in classes:
        assert c.broader, c
        assert not STOP_TERMS & set(c.broader), c
        assert c.name not in c.broader


@wordnet_needed
def test_labels_json_round_trip(classes: list[ImageNetClass], tmp_path: Path) -> None:
    from service.core.bundle.labels import load_labels, write_labels

    labels = to_labels(classes)
    path = write_labels(tmp_path / "labels.json", labels)
    again = load_labels(path)
    assert isinstance(again, Labels) and again == labels
    assert again.classes[281].id == "n02123045"
    assert "timm 1.0.31" in again.source and "WordNet 3.0" in again.source
