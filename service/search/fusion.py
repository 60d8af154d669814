"""Fusing the channels of a multi-channel search fairly: each item is judged on the channels it has.

Reciprocal-rank fusion sums over channels, so an item that has one vector (an uncaptioned photo,
a text-only document) can never beat one that has three middling ones. Here an item's fused
score is the weighted *mean* over the channels it has of its standardised similarity there:

* each channel's candidates come from the store's own search (``depth`` of them, filtered);
* the union of candidates is re-scored exactly from their stored vectors (a multivector by
  MaxSim, its best row), so an item is scored in every channel it has, also where it fell
  outside that channel's top ``depth``;
* a channel's similarities are standardised by the mean and spread of that channel's top
  ``SCALE_HITS`` hits (as Qdrant's distribution-based score fusion does), because channels live
  on different scales: an image-to-text cosine of 0.3 can be as strong a match as a text-to-text
  0.8. A fixed count, not however many the caller fetched: the scores, hence the order, of a
  query stay the same on every page and with or without grouping;
* an item's score is the weighted mean of its standardised similarities: a photo that is the
  best match in its image and description channels ranks above a captioned item that is
  middling in three.

The fused score is in standard deviations above a channel's typical top hit: 0 is an average
candidate, 2 a clearly better one. ``fuse_reference`` in the tests recomputes it in plain numpy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from service.core.domain import Record, StoredHit, VectorName, VectorValue

# A channel whose top hits all score alike would otherwise divide by ~0 and dominate.
MIN_SPREAD = 0.02
# The top hits of a channel that set its scale; callers fetch at least this many.
SCALE_HITS = 50


@dataclass(frozen=True)
class ChannelScale:
    mean: float
    spread: float

    def standardise(self, score: float) -> float:
        return (score - self.mean) / self.spread


def channel_scale(scores: Sequence[float]) -> ChannelScale:
    values = np.asarray(scores, dtype=np.float64)
    return ChannelScale(float(values.mean()), max(float(values.std()), MIN_SPREAD))


def similarity(query: np.ndarray, stored: VectorValue) -> float:
    """Cosine of ``query`` (unit) and a stored vector; a multivector's best row (MaxSim)."""
    rows = np.atleast_2d(np.asarray(stored, dtype=np.float64))
    rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    return float((rows @ query).max())


def fuse(
    hits: Mapping[VectorName, Sequence[StoredHit]],
    records: Sequence[Record],
    queries: Mapping[VectorName, Sequence[float]],
    weights: Mapping[VectorName, float],
) -> list[StoredHit]:
    """``records`` (the candidates, with vectors) ranked by their fused score, best first.
    ``hits``: each channel's own top hits, which set its scale; a channel with none is left
    out (no candidate has that vector, or none passed the filter)."""
    scales = {
        c: channel_scale([h.score for h in found[:SCALE_HITS]])
        for c, found in hits.items()
        if found
    }
    unit = {
        c: (q := np.asarray(queries[c], dtype=np.float64)) / max(float(np.linalg.norm(q)), 1e-12)
        for c in scales
    }
    out = []
    for record in records:
        total = weight_sum = 0.0
        for channel, scale in scales.items():
            weight = float(weights.get(channel, 1.0))
            value = record.vectors.get(channel)
            if weight <= 0 or value is None:
                continue
            total += weight * scale.standardise(similarity(unit[channel], value))
            weight_sum += weight
        if weight_sum > 0:
            out.append(StoredHit(id=record.id, score=total / weight_sum, payload=record.payload))
    out.sort(key=lambda h: (-h.score, h.id))
    return out
