"""The dev study of views and colour (models/photo/dev/extras.py) on synthetic arrays."""

from __future__ import annotations

import numpy as np
import torch

from models.photo.colour import COLOUR_TERMS
from models.photo.dev.devset import DevPhoto, DevQuery
from models.photo.dev.extras import (
    ViewMix,
    colour_accuracy,
    image_embeds,
    measure,
    near_duplicate_r_at_1,
)
from models.photo.tower import mix_views

N, C, D = 4, 6, 5


def _feats() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    shares = rng.dirichlet(np.ones(len(COLOUR_TERMS)), N).astype(np.float32)
    return {
        "logits1": rng.standard_normal((N, C)).astype(np.float32),
        "logits5": rng.standard_normal((N, 5, C)).astype(np.float32) * 3,
        "shares1": shares,
        "shares5": shares[::-1].copy(),
    }


def test_view_mixes_are_distributions_and_gated_is_the_graphs() -> None:
    feats = _feats()
    for mix in (ViewMix("one"), ViewMix("mean"), ViewMix("max"), ViewMix("gated", 0.5, 1.0)):
        probs = mix.log_probs(feats).exp()
        assert probs.shape == (N, C)
        assert torch.allclose(probs.sum(dim=-1), torch.ones(N), atol=1e-5)
    p = torch.from_numpy(feats["logits5"]).softmax(dim=-1)
    want = mix_views(p[:, 0], p[:, 1:].transpose(0, 1), 0.5, 1.0)
    assert torch.allclose(ViewMix("gated", 0.5, 1.0).log_probs(feats).exp(), want)
    assert ViewMix("one").shares(feats) is feats["shares1"]
    assert ViewMix("max").shares(feats) is feats["shares5"]


def test_image_embeds_with_and_without_colour() -> None:
    feats = _feats()
    table = torch.nn.functional.normalize(torch.randn(C, D), dim=-1)
    colours = np.random.default_rng(1).standard_normal((len(COLOUR_TERMS), D)).astype(np.float32)
    log_probs = ViewMix("one").log_probs(feats)
    plain = image_embeds(log_probs, table, feats["shares1"], colours, 0.0, top_k=3, temperature=2)
    mixed = image_embeds(log_probs, table, feats["shares1"], colours, 0.3, top_k=3, temperature=2)
    want = plain + 0.3 * feats["shares1"] @ colours
    want /= np.linalg.norm(want, axis=-1, keepdims=True)
    assert np.allclose(mixed, want, atol=1e-6)


def test_measure_groups_and_criterion() -> None:
    sims = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
    rel = np.array([[True, False], [True, False], [False, True]])
    queries = [DevQuery(g, g, frozenset({g})) for g in ("object", "colour", "scene")]
    m = measure("x", sims, rel, queries)
    assert list(m.first) == [1, 2, 2]
    assert m.groups["object"].r_at_1 == 1.0 and m.groups["colour"].r_at_1 == 0.0
    assert m.groups["all"].mean_rank == 5 / 3
    assert "category" not in m.groups  # no category query here


def test_near_duplicates_and_colour_accuracy() -> None:
    originals = np.eye(3)
    copies = originals + 0.1 * np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]])
    assert near_duplicate_r_at_1(originals, copies) == 1.0
    assert near_duplicate_r_at_1(originals, copies[[1, 0, 2]]) == 1 / 3
    photos = [
        DevPhoto("p", "a", frozenset({"apple", "red"}), "apple"),
        DevPhoto("p", "b", frozenset({"car", "blue"}), "car"),
        DevPhoto("p", "c", frozenset({"cup"}), "cup"),
    ]
    shares = np.full((3, len(COLOUR_TERMS)), 0.05)
    shares[0, COLOUR_TERMS.index("red")] = 0.5
    shares[1, COLOUR_TERMS.index("white")] = 0.5
    count, top, rank = colour_accuracy(photos, shares)
    assert (count, top, rank) == (2, 0.5, 1.5)
