"""Fusing the channels of a multi-channel search fairly: each item is judged on the channels it has,
each channel on a query-independent scale.

Reciprocal-rank fusion sums over channels, so an item that has one vector (an uncaptioned photo,
a text-only document) can never beat one that has three middling ones. Here:

* the candidates are each channel's own top ``depth`` hits (filtered): the server store fetches
  them with their vectors in one round trip (Qdrant's Query API, one ``prefetch`` per channel,
  :class:`ChannelCandidates`), the embedded store fetches them and scores them in every channel
  itself (:class:`ScoredCandidates`), another store by one search per channel and a retrieve;
* every candidate is re-scored exactly (a multivector by MaxSim, its best row) in every channel
  it has, also where it fell outside that channel's top ``depth``: from its stored vectors, or
  by the store;
* a channel's cosine is **calibrated** against the bundle's *null*: the mean and spread of the
  cosines of unrelated query-item pairs in that channel (``service.search.calibration``
  measures them once per bundle on a fixed probe set: text→image, text→text in the joint and
  the sentence space, image→image by visual features). ``standardised = (cosine - null mean) /
  null spread``: 0 is what an unrelated item scores, 1.0 one null spread above it, 3 a match
  that unrelated pairs almost never reach. The scale depends on the bundle and channel only, not
  on the query's other hits, so a channel with no real match hands its best (irrelevant) hits
  about what they are worth, not +2 (as standardising by the query's own top hits did), and a
  score means the same in every query, page and grouping;
* the standardised score becomes a **probability of relevance**: per kind of evidence (a text
  query against a picture, against a description generated from the picture's labels, against a
  text a person wrote: :func:`evidence_kind`) a logistic curve ``RELEVANCE`` maps it to
  P(relevant), fitted on held-out data that is not the mixed-kind evaluation's
  (``models/eval/search/relevance.py``: the photo bundle's dev photos and queries for pictures and
  generated descriptions, demo scenes of another seed for given texts). A channel's cosine thus
  says how likely a match is, and a generated description (which repeats the image tower's guess)
  has a curve of its own;
* each channel votes with a weight: the caller's channel weight times the evidence of the
  item's text there (a description generated from the image tower's labels counts
  ``GENERATED_EVIDENCE``, one a person gave 1);
* an item's score is the weighted mean of its channels' probabilities: in [0, 1], and for an
  item judged on one channel the share of held-out pairs at that score that were relevant. An
  item is not penalised for a channel it lacks, and a channel blind to it (a synthetic scene's
  picture in a photo bundle: P near 0) costs it its share of the mean, not more.

Why not Qdrant's own fusion (``FusionQuery``: RRF or DBSF) as the ranking: both *sum* an item's
contributions over the prefetches, and an item missing from a prefetch (it lacks that vector, or
fell outside its top) contributes nothing there, so a one-vector item is penalised exactly as
with RRF; DBSF also normalises each prefetch by its own returned hits, which move with
``limit``. The Query API gathers the candidates (their union, with vectors, one request); this
module ranks them. Nor ``query_points_groups`` for ``group_by=video``: it ranks groups by
Qdrant's score, not this one, and leaves out every point without the group field, so images and
documents would vanish from a grouped search; grouping is done on the fused ranking
(``planner.best_per_video``). ``fused_reference`` in the congruence tests recomputes the scores
in plain numpy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from service.core.domain import FilterValue, Record, StoredHit, VectorName, VectorValue

# A null spread below this (a degenerate probe set) would blow calibrated scores up.
MIN_SPREAD = 0.02
# Each channel fetches at least this many candidates (callers fetch more for deeper pages).
SCALE_HITS = 50
# The evidence of a description written at ingest from the image tower's labels (the payload's
# ``description_generated``), relative to one a person gave: it repeats the image channel's
# guess, and is wrong as often.
GENERATED_EVIDENCE = 0.5


Evidence = Literal["picture", "generated", "text"]


@dataclass(frozen=True)
class RelevanceCurve:
    """P(relevant) = 1 / (1 + exp(-(slope * standardised + intercept)))."""

    slope: float
    intercept: float

    def probability(self, standardised: float) -> float:
        return float(self.probabilities(np.asarray(standardised, dtype=np.float64)))

    def probabilities(self, standardised: np.ndarray) -> np.ndarray:
        """:meth:`probability` of each score, in one pass over the array."""
        x = self.slope * standardised + self.intercept
        e = np.exp(-np.abs(x))  # no overflow however far below the null a score is
        out: np.ndarray = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        return out


# Fitted by ``models.eval.search.relevance`` (maximum likelihood) for the photo bundle, on its
# standardised scores (its probe-set null), from pairs in which no evaluation query takes part:
# picture and generated: the 282 dev queries x 318 dev photos of ``models/photo/dev`` (952 of
# 89,676 pairs relevant); text: 60 caption paraphrases x 60 demo scenes of seed 777, caption and
# description pairs pooled (132 of 7,200 relevant). The base rates (1 % and 2 % of pairs
# relevant) are in the intercepts: P is the share of relevant pairs at that score in collections
# like those. P = 0.5 at z = 5.0 (picture), 5.3 (generated), 8.0 (text: paraphrases of a caption
# score high, so a given text needs a higher score than a picture to say as much).
RELEVANCE: dict[Evidence, RelevanceCurve] = {
    "picture": RelevanceCurve(1.7236, -8.6118),
    "generated": RelevanceCurve(1.3799, -7.3640),
    "text": RelevanceCurve(1.3945, -11.1578),
}


@runtime_checkable
class ChannelCandidates(Protocol):
    """A store that fetches several channels' candidates in one request (the server store)."""

    def candidates(
        self,
        collection: str,
        queries: Mapping[VectorName, Sequence[float]],
        *,
        depth: int,
        filter: Mapping[str, FilterValue] | None = None,  # noqa: A002
    ) -> list[Record]:
        """The union of each channel's top ``depth`` points (by its query), with vectors."""


@runtime_checkable
class ScoredCandidates(Protocol):
    """A store that fetches several channels' candidates and scores each in every channel
    itself, so no stored vector is read back (the embedded store)."""

    def scored_candidates(
        self,
        collection: str,
        queries: Mapping[VectorName, Sequence[float]],
        *,
        depth: int,
        filter: Mapping[str, FilterValue] | None = None,  # noqa: A002
    ) -> tuple[list[Record], dict[VectorName, dict[str, float]]]:
        """The union of each channel's top ``depth`` points (by its query), and each one's
        cosine in every channel of ``queries`` it has (a multivector by its best row)."""


@dataclass(frozen=True)
class ChannelScale:
    """A channel's null: the mean and spread of unrelated query-item cosines there."""

    mean: float
    spread: float

    def standardise(self, score: float) -> float:
        return (score - self.mean) / self.spread


# Per channel, its null (``service.search.calibration.null_scales``); a channel missing here is
# taken as uncalibrated (mean 0, spread 1: the cosine itself).
NullScales = Mapping[VectorName, ChannelScale]
UNCALIBRATED = ChannelScale(0.0, 1.0)


@dataclass(frozen=True)
class ChannelScore:
    """How one hit scored in one channel (``"explain": true``)."""

    channel: VectorName
    similarity: float  # cosine; a multivector's best row (MaxSim)
    standardised: float  # (similarity - null mean) / null spread of the channel (the bundle's)
    rank: int | None  # 1 = the channel's best; None: below the depth fetched for it
    weight: float  # the channel's weight times the evidence of the item's text there
    relevance: float  # P(relevant) of the standardised score (RELEVANCE of its evidence kind)


@dataclass(frozen=True)
class Fused:
    hits: list[StoredHit]  # best first
    explain: dict[str, tuple[ChannelScore, ...]]  # per hit id, the channels it was judged on


def channel_scale(scores: Sequence[float] | np.ndarray) -> ChannelScale:
    """The mean and spread (at least ``MIN_SPREAD``) of ``scores``."""
    values = np.asarray(scores, dtype=np.float64)
    return ChannelScale(float(values.mean()), max(float(values.std()), MIN_SPREAD))


def similarity(query: np.ndarray, stored: VectorValue) -> float:
    """Cosine of ``query`` (unit) and a stored vector; a multivector's best row (MaxSim)."""
    return similarities(query, [stored])[0]


def similarities(query: np.ndarray, stored: Sequence[VectorValue]) -> list[float]:
    """:func:`similarity` of each of ``stored``, in one matrix product over all their rows (one
    per vector, a multivector's each) instead of one per candidate."""
    rows: list[Sequence[float]] = []
    owners: list[int] = []
    for i, value in enumerate(stored):
        if value and isinstance(value[0], Sequence | np.ndarray):
            rows.extend(value)  # type: ignore[arg-type]
            owners.extend([i] * len(value))
        else:
            rows.append(value)  # type: ignore[arg-type]
            owners.append(i)
    matrix = np.asarray(rows, dtype=np.float64)
    matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    best = np.full(len(stored), -np.inf)
    np.maximum.at(best, owners, matrix @ query)
    out: list[float] = best.tolist()
    return out


def evidence(channel: VectorName, payload: Mapping[str, object]) -> float:
    """How much an item's vector in ``channel`` says: a generated description less."""
    return kind_evidence(evidence_kind(channel, payload))


def kind_evidence(kind: Evidence) -> float:
    """How much a vector of this kind says (:func:`evidence`)."""
    return GENERATED_EVIDENCE if kind == "generated" else 1.0


def evidence_kind(channel: VectorName, payload: Mapping[str, object]) -> Evidence:
    """What an item's vector in ``channel`` is: a picture, a generated description, or a text a
    person gave (a caption, a given description)."""
    if channel in ("image", "visual"):
        return "picture"
    if channel == "description" and payload.get("description_generated"):
        return "generated"
    return "text"


def relevance(channel: VectorName, payload: Mapping[str, object], standardised: float) -> float:
    """P(relevant) of an item's standardised score in ``channel`` (``RELEVANCE``)."""
    return RELEVANCE[evidence_kind(channel, payload)].probability(standardised)


def fused_score(scored: Sequence[ChannelScore]) -> float:
    """The weighted mean of the channels' probabilities of relevance."""
    weight_sum = sum(s.weight for s in scored)
    return sum(s.weight * s.relevance for s in scored) / weight_sum


def channel_similarities(
    records: Sequence[Record],
    queries: Mapping[VectorName, Sequence[float]],
) -> dict[VectorName, dict[str, float]]:
    """Each candidate's cosine in every channel of ``queries`` it has a vector for (a
    multivector's best row), from the records' vectors."""
    sims: dict[VectorName, dict[str, float]] = {}
    for channel, q in queries.items():
        unit = np.asarray(q, dtype=np.float64)
        unit = unit / max(float(np.linalg.norm(unit)), 1e-12)
        having = [(r.id, value) for r in records if (value := r.vectors.get(channel))]
        if having:
            found = similarities(unit, [value for _, value in having])
            sims[channel] = dict(zip([pid for pid, _ in having], found, strict=True))
    return sims


def fuse(
    records: Sequence[Record],
    queries: Mapping[VectorName, Sequence[float]],
    weights: Mapping[VectorName, float],
    *,
    null: NullScales,
    depth: int | None = None,
    sims: Mapping[VectorName, Mapping[str, float]] | None = None,
    explain: bool = True,
) -> Fused:
    """``records`` (the candidates) ranked by their fused score, best first.

    ``sims``: each candidate's cosine per channel as the store scored it
    (:class:`ScoredCandidates`); without it they are computed from the records' vectors.
    A channel of ``queries`` with a weight of 0, or that no candidate has, is left out. A
    hit's rank in a channel is its place among the candidates by that channel's similarity,
    exact for the channel's top ``depth`` (which the candidates hold); below, None.
    ``explain``: False leaves ``Fused.explain`` empty (a search that does not show it).

    Every candidate is scored at once per channel (arrays over the candidates): a fused search
    scores up to ``depth`` x channels candidates, and an object per candidate and channel made
    ranking ~2.6 times dearer (``python -m loadtests.bench.fusion``)."""
    wanted = {c: q for c, q in queries.items() if float(weights.get(c, 1.0)) > 0}
    if sims is None:
        sims = channel_similarities(records, wanted)
    sims = {c: found for c in wanted if (found := sims.get(c))}
    n = len(records)
    ids = [r.id for r in records]
    weight_sum = np.zeros(n)
    weighted = np.zeros(n)
    columns: dict[VectorName, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    for channel, found in sims.items():
        sim = np.fromiter((found.get(pid, math.nan) for pid in ids), np.float64, n)
        present = ~np.isnan(sim)
        scale = null.get(channel, UNCALIBRATED)
        z = (sim - scale.mean) / scale.spread
        kinds = [evidence_kind(channel, r.payload) for r in records]
        prob = np.empty(n)
        weight = np.empty(n)
        base = float(weights.get(channel, 1.0))
        for kind in set(kinds):
            mask = np.fromiter((k == kind for k in kinds), bool, n)
            prob[mask] = RELEVANCE[kind].probabilities(z[mask])
            weight[mask] = base * kind_evidence(kind)
        weight[~present] = 0.0
        weight_sum += weight
        weighted += np.where(present, weight * prob, 0.0)
        columns[channel] = (sim, z, weight, prob)
    kept = [i for i in range(n) if weight_sum[i] > 0]
    score = np.divide(weighted, weight_sum, out=np.zeros(n), where=weight_sum > 0).tolist()
    kept.sort(key=lambda i: (-score[i], ids[i]))
    hits = [StoredHit(id=ids[i], score=score[i], payload=records[i].payload) for i in kept]
    if not explain:
        return Fused(hits, {})
    ranks: dict[VectorName, dict[str, int]] = {}
    for channel, found in sims.items():
        order = sorted(found, key=lambda pid: (-found[pid], pid))
        ranks[channel] = {pid: place for place, pid in enumerate(order[:depth], start=1)}
    out: dict[str, tuple[ChannelScore, ...]] = {}
    for i in kept:
        out[ids[i]] = tuple(
            ChannelScore(
                channel,
                float(sim[i]),
                float(z[i]),
                ranks[channel].get(ids[i]),
                float(weight[i]),
                float(prob[i]),
            )
            for channel, (sim, z, weight, prob) in columns.items()
            if not math.isnan(sim[i])
        )
    return Fused(hits, out)


def explain_channel(
    channel: VectorName, top: Sequence[StoredHit], null: NullScales, weight: float = 1.0
) -> dict[str, tuple[ChannelScore, ...]]:
    """The explanation of a one-channel search from its top hits (best first, from the first):
    the store's cosine, standardised by the channel's null, its probability of relevance, and
    the place in ``top``."""
    scale = null.get(channel, UNCALIBRATED)
    out: dict[str, tuple[ChannelScore, ...]] = {}
    for n, h in enumerate(top, start=1):
        z = scale.standardise(h.score)
        scored = ChannelScore(channel, h.score, z, n, weight, relevance(channel, h.payload, z))
        out[h.id] = (scored,)
    return out
