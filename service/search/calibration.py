"""The null of each channel: how similar *unrelated* queries and items are, per bundle.

Fusion (``service.search.fusion``) scores a channel's cosine in spreads above this null, so a
score says the same in every query. The null is measured once per bundle, when its first search
needs it, on a fixed probe set that ships here: ``PROBE_TEXTS`` (everyday sentences on unrelated
subjects) and ``probe_images`` (seeded drawings of coloured shapes). Pairs of *different* probes
stand for unrelated query-item pairs:

* ``image``: a probe text's joint embedding against a probe image's;
* ``caption``: a probe text against another, in the joint space (captions are embedded there);
* ``description``: the same in the sentence space;
* ``visual``: a probe image's visual features against another's (image→image search).

Which null a channel takes depends on what its query vector is as well: a text query's ``image``
channel compares a text with pictures, an image query's compares pictures with pictures, and an
image query's ``caption`` channel compares a picture with texts (the text→image null, a cosine
being symmetric). An item query ("more like this") asks each channel with the item's own vector
of that channel, so every channel compares like with like. ``BundleNull.channels`` gives the
channels' nulls for a query kind. The search service scales every query by the text-query nulls
(``SearchService.null_scales``): one scale for every query, so that a fused score means the same
whatever asked; on it, a picture against a picture (an image or item query) sits higher than a
text against a picture would (the photo bundle's ``image_image`` null is above its
``text_image`` one), so a fused image or item query leans towards its picture channels.

The standardised score is the first of two steps: fusion then maps it to a probability of
relevance by a logistic curve per kind of evidence (``fusion.RELEVANCE``), fitted once for the
photo bundle on held-out photos, queries and scenes (``models/eval/search/relevance.py``); the
null keeps that curve's input on one scale whatever the bundle's cosines do.

Nothing of any evaluation (its queries or its items) is used. The probe images are not photos:
for a bundle whose image embedding lives in the text space (as the photo bundle's), how close a
text is to an unrelated picture depends on the text far more than on the picture, which the
measured mean (0.19 for the photo bundle, against 0.25 for every query-item pair of the
mixed-kind evaluation, nearly all unrelated) bears out.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

from service.clients.base import EmbeddingClient
from service.core.domain import VectorName
from service.core.errors import ClipsearchError
from service.search.fusion import ChannelScale, channel_scale

PROBE_TEXTS: tuple[str, ...] = (
    "a bowl of soup on a kitchen table",
    "children playing football in a park",
    "an old stone bridge over a river",
    "a laptop and a cup of coffee on a desk",
    "snow on the mountains in winter",
    "a red car parked on the street",
    "the minutes of the board meeting",
    "how to repair a flat bicycle tyre",
    "a recipe for banana bread",
    "a crowd at an outdoor concert",
    "a sailing boat on a calm sea",
    "an invoice for office supplies",
    "a cat sleeping on a sofa",
    "the train timetable for the weekend",
    "a field of sunflowers in summer",
    "a doctor talking to a patient",
    "a pile of books in a library",
    "fireworks over a city at night",
    "a wooden chair in an empty room",
    "a bee on a purple flower",
    "instructions for assembling a shelf",
    "a man running on a beach",
    "a plate of sushi",
    "a birthday cake with candles",
    "rain on a window",
    "a map of the old town",
    "a guitar leaning against a wall",
    "the quarterly sales report",
    "a horse in a green meadow",
    "a bus stop in the rain",
    "a teapot and two cups",
    "a lighthouse on a cliff",
    "a vase of tulips",
    "a letter to the tenants about the heating",
    "a tractor in a muddy field",
    "a child drawing with crayons",
    "a bowl of cherries",
    "a skyscraper made of glass",
    "a dog chasing a ball",
    "a bridge in the fog",
    "a pair of running shoes",
    "notes from a chemistry lecture",
    "a forest path in autumn",
    "a market stall selling vegetables",
    "a tennis racket and balls",
    "a snowman in a garden",
    "an airport departure board",
    "a knitted scarf",
)
PROBE_IMAGES = 48
PROBE_SEED = 0


def probe_images(n: int = PROBE_IMAGES, seed: int = PROBE_SEED) -> list[bytes]:
    """``n`` PNGs of one to five coloured ellipses and rectangles on a coloured ground."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        image = Image.new("RGB", (224, 224), tuple(int(x) for x in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(1, 6))):
            x0, y0 = (int(v) for v in rng.integers(0, 180, 2))
            w, h = (int(v) for v in rng.integers(20, 120, 2))
            colour = tuple(int(x) for x in rng.integers(0, 256, 3))
            shape = draw.ellipse if rng.integers(0, 2) == 0 else draw.rectangle
            shape([x0, y0, x0 + w, y0 + h], fill=colour)
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def _unit(rows: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    m = np.atleast_2d(np.asarray(rows, dtype=np.float64))
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a @ b.T).ravel()


def _others(a: np.ndarray) -> np.ndarray:
    """The cosines of every pair of different rows."""
    sims = a @ a.T
    return sims[~np.eye(len(a), dtype=bool)]


QueryKind = Literal["text", "image", "item"]


@dataclass(frozen=True)
class BundleNull:
    """A bundle's null for each kind of pair (None: not measured, the bundle has no such
    embedding); ``channels`` maps them onto a query's channels."""

    text_text: ChannelScale  # joint space: text queries against captions
    sentence: ChannelScale  # sentence space: text against descriptions
    text_image: ChannelScale | None  # joint space: a text against a picture
    image_image: ChannelScale | None  # joint space: a picture against another
    visual: ChannelScale | None  # visual features: a picture against another

    def channels(self, query: QueryKind = "text") -> dict[VectorName, ChannelScale]:
        """Each channel's null for a ``query`` of this kind (channels it cannot search left
        out: fusion takes a channel without a null as uncalibrated)."""
        image = self.text_image if query == "text" else self.image_image
        caption = self.text_image if query == "image" else self.text_text
        found: dict[VectorName, ChannelScale | None] = {
            "image": image,
            "caption": caption,
            "description": self.sentence,
            "visual": self.visual,
        }
        return {c: scale for c, scale in found.items() if scale is not None}


def null_scales(
    text_joint: np.ndarray,
    text_sentence: np.ndarray,
    image_joint: np.ndarray | None,
    image_visual: np.ndarray | None,
) -> BundleNull:
    """The null of each kind of pair from the probes' embeddings (rows; normalised here)."""
    joint, sentence = _unit(text_joint), _unit(text_sentence)
    pictures = _unit(image_joint) if image_joint is not None and len(image_joint) > 1 else None
    visual = _unit(image_visual) if image_visual is not None and len(image_visual) > 1 else None
    return BundleNull(
        text_text=channel_scale(_others(joint)),
        sentence=channel_scale(_others(sentence)),
        text_image=channel_scale(_cross(joint, pictures)) if pictures is not None else None,
        image_image=channel_scale(_others(pictures)) if pictures is not None else None,
        visual=channel_scale(_others(visual)) if visual is not None else None,
    )


def measure_null(embedder: EmbeddingClient, *, bundle: str | None = None) -> BundleNull:
    """The bundle's null, from the probe set embedded by ``embedder``."""
    texts = embedder.embed_texts(list(PROBE_TEXTS), lane="interactive", bundle=bundle)
    encoded = [
        e
        for e in embedder.encode_images(probe_images(), lane="interactive", bundle=bundle)
        if not isinstance(e, ClipsearchError)
    ]
    image_joint = np.asarray([e.joint for e in encoded], dtype=np.float64) if encoded else None
    visual = [e.visual for e in encoded if e.visual is not None]
    image_visual = np.asarray(visual, dtype=np.float64) if len(visual) == len(encoded) else None
    return null_scales(
        np.asarray(texts.joint), np.asarray(texts.sentence), image_joint, image_visual
    )
