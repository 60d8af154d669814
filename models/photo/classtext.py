"""Class text embeddings: the [1000, 384] matrix the ConSE head combines.

Each class's vector is the text tower's embedding of its name in several prompt templates
(averaged), optionally with its other WordNet lemmas, plus ``hypernym_weight`` times the mean
embedding of its nearest broader terms. The broader terms are what let a query such as "an
animal" or "a vehicle" find a photo whose classes are "zebra" or "pickup truck": on their own,
fine-grained class names sit far from such words in the sentence space.

The matrix must come from the very text tower the bundle ships (compacted or not), so that a
class and a query naming it get the same vector.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from models.photo.vocab import TEMPLATE_SETS, ImageNetClass, prompts
from models.train.minilm import MiniLM, encode_texts, load_tokenizer

Encode = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class TextConfig:
    templates: str = "photo"  # a key of TEMPLATE_SETS
    synonyms: int = 0  # how many other lemmas join the name
    hypernyms: int = 0  # how many of the nearest broader terms
    hypernym_weight: float = 0.0

    def describe(self) -> str:
        broader = (
            f"hypernyms={self.hypernyms} hypernym_weight={self.hypernym_weight:g}"
            if self.hypernym_weight > 0
            else "no hypernyms"
        )
        return f"templates={self.templates} synonyms={self.synonyms} {broader}"


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class PhraseCache:
    """Embeds each distinct prompt once, however many configurations ask for it."""

    def __init__(self, encode: Encode) -> None:
        self.encode = encode
        self.vectors: dict[str, np.ndarray] = {}

    def term_vector(self, term: str, templates: Sequence[str]) -> np.ndarray:
        return _normalize(np.mean([self.vectors[p] for p in prompts(term, templates)], axis=0))

    def ensure(self, phrases: Sequence[str]) -> None:
        todo = sorted({p for p in phrases if p not in self.vectors})
        if todo:
            for phrase, vec in zip(todo, self.encode(todo), strict=True):
                self.vectors[phrase] = vec


def _terms(cls: ImageNetClass, config: TextConfig) -> tuple[list[str], list[str]]:
    names = [cls.name, *cls.synonyms[: config.synonyms]]
    broader = list(cls.broader[: config.hypernyms]) if config.hypernym_weight > 0 else []
    return names, broader


def class_embeddings(
    classes: Sequence[ImageNetClass], config: TextConfig, cache: PhraseCache
) -> np.ndarray:
    """float32 [classes, dim], unit rows."""
    templates = TEMPLATE_SETS[config.templates]
    needed: list[str] = []
    for cls in classes:
        names, broader = _terms(cls, config)
        for term in names + broader:
            needed += prompts(term, templates)
    cache.ensure(needed)
    rows = []
    for cls in classes:
        names, broader = _terms(cls, config)
        vec = _normalize(np.mean([cache.term_vector(n, templates) for n in names], axis=0))
        if broader:
            hyper = _normalize(np.mean([cache.term_vector(b, templates) for b in broader], axis=0))
            vec = _normalize(vec + config.hypernym_weight * hyper)
        rows.append(vec)
    return np.asarray(rows, dtype=np.float32)


def tower_encoder(model: MiniLM) -> Encode:
    """texts -> float32 [n, 384] through ``model`` and the serving tokenizer."""
    tokenizer = load_tokenizer()

    def encode(texts: Sequence[str]) -> np.ndarray:
        return encode_texts(model, tokenizer, list(texts), batch_size=128)

    return encode
