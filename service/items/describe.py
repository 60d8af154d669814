"""A textual description of an uncaptioned image, written from the classes the image tower sees.

Bundles whose image tower names classes (``image_tower.labels``) return them with each image.
An image ingested without a description gets one from them, stored in the payload (so a hit
shows why it matched) and embedded as its ``description`` vector (so the vision-free
``description`` mode and ``auto`` reach uncaptioned photos). It says only what the classifier
said, hedged by its confidence, and names the broader terms of the best class, which is what a
query such as "an animal" or "a vehicle" asks for.
"""

from __future__ import annotations

from collections.abc import Sequence

from service.core.embeddings import Label

# A class below this probability is not worth naming beside the best one.
ALSO_MIN_SCORE = 0.1
# Below this the best class itself is a guess, and the text says so.
SURE_MIN_SCORE = 0.3
MAX_ALSO = 2
MAX_BROADER = 6


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def describe(labels: Sequence[Label]) -> str | None:
    """ "A photo of a tabby cat, a kind of domestic cat, cat, feline, mammal, animal. It may
    also show a tiger cat or an Egyptian cat." — or None when there are no labels."""
    if not labels:
        return None
    best, *rest = sorted(labels, key=lambda lb: -lb.score)
    hedge = "" if best.score >= SURE_MIN_SCORE else "possibly "
    text = f"A photo of {hedge}{_article(best.name)} {best.name}"
    broader = [b for b in best.broader if b != best.name][:MAX_BROADER]
    if broader:
        text += ", a kind of " + ", ".join(broader)
    also = [lb.name for lb in rest if lb.score >= ALSO_MIN_SCORE][:MAX_ALSO]
    text += "."
    if also:
        names = [f"{_article(n)} {n}" for n in also]
        text += " It may also show " + " or ".join(names) + "."
    return text


def merge_labels(per_frame: Sequence[Sequence[Label]]) -> tuple[Label, ...]:
    """The labels of several frames of one video segment: each class's mean probability over
    the frames (absent = 0), best first."""
    if not per_frame:
        return ()
    total: dict[str, float] = {}
    broader: dict[str, tuple[str, ...]] = {}
    for labels in per_frame:
        for lb in labels:
            total[lb.name] = total.get(lb.name, 0.0) + lb.score
            broader.setdefault(lb.name, lb.broader)
    n = len(per_frame)
    merged = [Label(name, score / n, broader[name]) for name, score in total.items()]
    return tuple(sorted(merged, key=lambda lb: (-lb.score, lb.name)))


def label_summary(labels: Sequence[Label], top: int = 3) -> list[dict[str, object]]:
    """The best classes as the payload keeps them (``labels``): name and rounded probability."""
    best = sorted(labels, key=lambda lb: -lb.score)[:top]
    return [{"name": lb.name, "score": round(lb.score, 4)} for lb in best]
