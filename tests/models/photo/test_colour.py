"""The colour head: Lab conversion, colour naming of plain pictures, the colour-word table."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch

from models.photo.colour import (
    COLOUR_TEMPLATE,
    COLOUR_TERMS,
    PROTOTYPES,
    ColourNames,
    colour_embeddings,
    srgb_to_lab,
)
from models.photo.tower import LITE_MEAN, LITE_STD


def _plain(rgb: tuple[int, int, int], size: int = 224) -> torch.Tensor:
    """One picture of a single colour, normalised as the tower's input is."""
    pixels = torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, size, size)
    mean, std = torch.tensor(LITE_MEAN).view(1, 3, 1, 1), torch.tensor(LITE_STD).view(1, 3, 1, 1)
    return (pixels / 255 - mean) / std


def test_lab_of_white_black_and_red() -> None:
    lab = srgb_to_lab(torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    assert torch.allclose(lab[0], torch.tensor([100.0, 0.0, 0.0]), atol=0.05)
    assert torch.allclose(lab[1], torch.zeros(3), atol=1e-4)
    # CIE Lab of sRGB red (255, 0, 0): about (53.2, 80.1, 67.2).
    assert torch.allclose(lab[2], torch.tensor([53.24, 80.09, 67.20]), atol=0.1)


def test_every_term_has_prototypes() -> None:
    assert set(PROTOTYPES) == set(COLOUR_TERMS) and len(COLOUR_TERMS) == 11


@pytest.mark.parametrize(
    ("rgb", "term"),
    [
        ((220, 20, 20), "red"),
        ((240, 130, 20), "orange"),
        ((250, 225, 30), "yellow"),
        ((30, 140, 40), "green"),
        ((30, 60, 200), "blue"),
        ((110, 40, 140), "purple"),
        ((245, 140, 180), "pink"),
        ((90, 60, 30), "brown"),
        ((5, 5, 5), "black"),
        ((128, 128, 128), "grey"),
    ],
)
def test_a_plain_picture_is_named_by_its_colour(rgb: tuple[int, int, int], term: str) -> None:
    shares = ColourNames(224, LITE_MEAN, LITE_STD)(_plain(rgb))
    assert shares.shape == (1, len(COLOUR_TERMS))
    assert COLOUR_TERMS[int(shares.argmax())] == term
    assert torch.allclose(shares.sum(dim=-1), torch.ones(1))


def test_shares_are_area_weighted_and_any_size_works() -> None:
    head = ColourNames(260, LITE_MEAN, LITE_STD)  # lite2's size: a 65-cell grid
    pixels = _plain((30, 60, 200), 260).clone()
    pixels[:, :, :, :65] = _plain((220, 20, 20), 260)[:, :, :, :65]  # a red quarter
    shares = head(pixels)[0]
    red, blue = shares[COLOUR_TERMS.index("red")], shares[COLOUR_TERMS.index("blue")]
    assert 0.15 < red < 0.3 < blue


def test_out_of_range_pixels_are_clamped() -> None:
    shares = ColourNames(224, LITE_MEAN, LITE_STD)(torch.randn(2, 3, 224, 224) * 5)
    assert torch.isfinite(shares).all()
    assert torch.allclose(shares.sum(dim=-1), torch.ones(2))


def test_colour_embeddings_are_centred_unit_rows() -> None:
    asked: list[str] = []

    def encode(texts: Sequence[str]) -> np.ndarray:
        asked.extend(texts)
        return np.random.default_rng(0).standard_normal((len(texts), 8)) * 3

    table = colour_embeddings(encode)
    assert asked == [COLOUR_TEMPLATE.format(c=c) for c in COLOUR_TERMS]
    assert table.shape == (len(COLOUR_TERMS), 8) and table.dtype == np.float32
    assert np.allclose(table.sum(axis=0), 0, atol=1e-5)
    raw = np.random.default_rng(0).standard_normal((len(COLOUR_TERMS), 8))
    unit = raw / np.linalg.norm(raw, axis=-1, keepdims=True)
    assert np.allclose(table, unit - unit.mean(axis=0), atol=1e-6)
