"""The photo bundle's vocabulary: ImageNet-1k's classes, their names and their broader terms.

The class order is the checkpoint's: ``imagenet_synsets.txt`` beside this file is
``timm/data/_info/imagenet_synsets.txt`` from the timm 1.0.31 wheel (Apache-2.0), the WordNet
ids of ImageNet-1k sorted, which is the index order every ImageNet-1k classifier uses. Names and
broader terms come from WordNet 3.0 (:mod:`models.photo.wordnet`).

Names: WordNet's first lemma reads oddly on its own for many classes ("tabby", "mouse",
"pickup"), so a later lemma that extends it ("tabby cat", "computer mouse", "pickup truck") is
preferred; Latin binomials ("Gorilla gorilla") never become names. Two pairs of classes still
share a name ("crane" the bird and the machine; "maillot" the tights and the swimsuit): each
takes another lemma of its own if it has one, else its nearest broader term in brackets.

Broader terms stop short of WordNet's top-level categories (``STOP_TERMS``): "entity", "whole",
"artifact", "organism" and the like hold for most of the 1,000 classes, so they neither
describe a photo nor help a query pick one out.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from models.photo.wordnet import WordNet
from service.core.bundle.labels import ClassLabel, Labels

SYNSETS_FILE = Path(__file__).with_name("imagenet_synsets.txt")
SYNSETS_ORIGIN = "timm 1.0.31 timm/data/_info/imagenet_synsets.txt (Apache-2.0)"
# WordNet's upper ontology, down to where a word starts to say what a thing looks like. Checked
# against the ancestors of all 1,000 classes: every term here covers most classes ("object"
# 958, "whole" 949, "artifact" 522, "organism" 410) or names no look ("solid" above food,
# "commodity" above clothing).
STOP_TERMS = frozenset(
    {
        "entity",
        "physical entity",
        "abstraction",
        "object",
        "whole",
        "artifact",
        "living thing",
        "organism",
        "instrumentality",
        "matter",
        "thing",
        "part",
        "relation",
        "psychological feature",
        "attribute",
        "causal agent",
        "group",
        "measure",
        "communication",
        "event",
        "act",
        "unit",
        "solid",
        "substance",
        "natural object",
        "commodity",
        "consumer goods",
    }
)
MAX_BROADER = 13  # the longest chain below the stop list (Italian greyhound); none is cut


@dataclass(frozen=True)
class ImageNetClass:
    wnid: str
    name: str
    synonyms: tuple[str, ...]  # other lemmas, binomials left out
    broader: tuple[str, ...]  # most specific first


def load_wnids(path: Path = SYNSETS_FILE) -> list[str]:
    wnids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    wnids = [w for w in wnids if w]
    if len(wnids) != 1000 or not all(re.fullmatch(r"n\d{8}", w) for w in wnids):
        raise ValueError(f"{path} is not the ImageNet-1k list of 1,000 WordNet ids")
    return wnids


def genus_names(wordnet: WordNet) -> frozenset[str]:
    """Every genus WordNet knows ("genus Gorilla" -> "Gorilla"), to spot binomials."""
    return frozenset(
        lemma[len("genus ") :]
        for synset in wordnet.synsets.values()
        for lemma in synset.lemmas
        if lemma.startswith("genus ")
    )


def is_binomial(lemma: str, genera: frozenset[str]) -> bool:
    words = lemma.split()
    return len(words) == 2 and words[0] in genera and words[1].islower()


def pick_name(lemmas: Sequence[str]) -> str:
    """The first lemma, or the first later one that contains it as a whole word."""
    first = lemmas[0]
    pattern = re.compile(rf"(^|\s){re.escape(first.lower())}(\s|$)")
    for lemma in lemmas[1:]:
        if len(lemma) > len(first) and pattern.search(lemma.lower()):
            return lemma
    return first


def broader_terms(wordnet: WordNet, wnid: str, name: str) -> tuple[str, ...]:
    terms: list[str] = []
    for synset in wordnet.ancestors(wnid):
        term = synset.lemmas[0]
        if term in STOP_TERMS or term == name or term in terms:
            continue
        terms.append(term)
    return tuple(terms[:MAX_BROADER])


def imagenet_classes(wordnet: WordNet, wnids: Sequence[str]) -> list[ImageNetClass]:
    genera = genus_names(wordnet)
    lemma_lists = []
    for wnid in wnids:
        lemmas = [x for x in wordnet.get(wnid).lemmas if not is_binomial(x, genera)]
        lemma_lists.append(lemmas or list(wordnet.get(wnid).lemmas))
    names = [pick_name(lemmas) for lemmas in lemma_lists]
    counts = Counter(n.lower() for n in names)
    for i, (wnid, lemmas) in enumerate(zip(wnids, lemma_lists, strict=True)):
        if counts[names[i].lower()] == 1:
            continue
        own = [x for x in lemmas if counts[x.lower()] == 0 and x.lower() != names[i].lower()]
        parent = wordnet.get(wnid).hypernyms[0]
        names[i] = own[0] if own else f"{names[i]} ({wordnet.synsets[parent].lemmas[0]})"
    if len({n.lower() for n in names}) != len(names):
        raise ValueError("class names are still not unique after disambiguation")
    return [
        ImageNetClass(
            wnid=wnid,
            name=name,
            synonyms=tuple(x for x in lemmas if x != name),
            broader=broader_terms(wordnet, wnid, name),
        )
        for wnid, name, lemmas in zip(wnids, names, lemma_lists, strict=True)
    ]


def to_labels(classes: Sequence[ImageNetClass]) -> Labels:
    return Labels(
        source=(
            f"ImageNet-1k classes in the checkpoint's order ({SYNSETS_ORIGIN}); names and "
            "broader terms from WordNet 3.0 (Princeton University, WordNet 3.0 license)"
        ),
        classes=tuple(ClassLabel(id=c.wnid, name=c.name, broader=c.broader) for c in classes),
    )


def with_article(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


# Prompt templates: {a} is the name with its article, {n} the bare name.
TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "bare": ("{n}",),
    "photo": ("a photo of {a}.",),
    "five": (
        "a photo of {a}.",
        "{a}",
        "a picture of {a}.",
        "a close-up photo of {a}.",
        "a photo of the {n}.",
    ),
}


def prompts(term: str, templates: Sequence[str]) -> list[str]:
    return [t.format(a=with_article(term), n=term) for t in templates]
