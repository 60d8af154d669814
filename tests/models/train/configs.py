"""Tower sizes small enough for a training test to run a few steps in seconds."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from models.train.towers import TowerConfig

TINY = TowerConfig(
    image_size=32,
    widths=(8, 16),
    reduce=8,
    embed_dim=16,
    head_hidden=32,
    image_hidden=32,
    conj_stage=2,
)
