"""The parity gate itself: passes equal outputs, fails drifted ones, per precision."""

from __future__ import annotations

import numpy as np
import pytest

from models.export.parity import ParityError, compare, require_parity


def _forward(noise: float, seed: int = 0):  # type: ignore[no-untyped-def]
    def run(batch: int) -> dict[str, np.ndarray]:
        base = np.random.default_rng(batch).standard_normal((batch, 16)).astype(np.float32)
        jitter = np.random.default_rng(seed + 100 + batch).standard_normal(base.shape)
        return {"embeds": base + noise * jitter.astype(np.float32)}

    return run


def test_identical_outputs_pass_every_precision() -> None:
    for precision in ("fp32", "fp16", "int8"):
        report = require_parity(_forward(0.0), _forward(0.0), precision=precision)
        assert report.passed
        assert set(report.max_abs_diff) == {(1, "embeds"), (8, "embeds"), (32, "embeds")}


def test_fp32_fails_beyond_1e_4_but_reduced_precision_tolerates_it() -> None:
    drift = _forward(1e-3)
    with pytest.raises(ParityError, match="fp32 parity FAILED"):
        require_parity(_forward(0.0), drift, precision="fp32")
    assert compare(_forward(0.0), drift, precision="fp16").passed


def test_reduced_precision_fails_below_cosine_0_999() -> None:
    report = compare(_forward(0.0), _forward(0.2), precision="int8")
    assert not report.passed
    assert min(report.min_cosine.values()) < 0.999


def test_shape_mismatch_is_an_error() -> None:
    def wrong(batch: int) -> dict[str, np.ndarray]:
        return {"embeds": np.zeros((batch, 8), dtype=np.float32)}

    with pytest.raises(ValueError, match="shape"):
        compare(_forward(0.0), wrong, precision="fp32")
