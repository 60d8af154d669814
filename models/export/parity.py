"""Parity between a reference forward (PyTorch) and an exported graph (ONNX Runtime, TensorRT).

Every export checks batch sizes 1, 8 and 32 and refuses to write a bundle that fails:
fp32 graphs must match within ``max abs diff <= 1e-4``; reduced-precision graphs (fp16, int8)
must keep every row's cosine similarity to the reference ``>= 0.999``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Precision = Literal["fp32", "fp16", "int8"]
PARITY_BATCHES: tuple[int, ...] = (1, 8, 32)
FP32_MAX_ABS_DIFF = 1e-4
REDUCED_MIN_COSINE = 0.999

Forward = Callable[[int], Mapping[str, np.ndarray]]


class ParityError(RuntimeError):
    """The exported graph does not reproduce the reference: no bundle is written."""

    def __init__(self, report: ParityReport) -> None:
        super().__init__(report.summary())
        self.report = report


@dataclass
class ParityReport:
    precision: Precision
    # (batch, output) -> max abs diff, and min row cosine
    max_abs_diff: dict[tuple[int, str], float] = field(default_factory=dict)
    min_cosine: dict[tuple[int, str], float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        if self.precision == "fp32":
            return all(v <= FP32_MAX_ABS_DIFF for v in self.max_abs_diff.values())
        return all(v >= REDUCED_MIN_COSINE for v in self.min_cosine.values())

    def summary(self) -> str:
        worst_diff = max(self.max_abs_diff.values(), default=0.0)
        worst_cos = min(self.min_cosine.values(), default=1.0)
        verdict = "passed" if self.passed else "FAILED"
        limit = (
            f"max abs diff <= {FP32_MAX_ABS_DIFF:g}"
            if self.precision == "fp32"
            else f"min cosine >= {REDUCED_MIN_COSINE}"
        )
        batches = sorted({b for b, _ in self.max_abs_diff})
        return (
            f"{self.precision} parity {verdict} ({limit}): worst max abs diff {worst_diff:.3g}, "
            f"worst row cosine {worst_cos:.6f} over batches {batches}"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "precision": self.precision,
            "passed": self.passed,
            "max_abs_diff": {f"{b}/{o}": v for (b, o), v in self.max_abs_diff.items()},
            "min_cosine": {f"{b}/{o}": v for (b, o), v in self.min_cosine.items()},
        }


def _row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(a.shape[0], -1).astype(np.float64)
    b = b.reshape(b.shape[0], -1).astype(np.float64)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(denom, 1e-12)


def compare(
    reference: Forward,
    candidate: Forward,
    *,
    precision: Precision,
    batches: tuple[int, ...] = PARITY_BATCHES,
) -> ParityReport:
    """Run both forwards on the same inputs for each batch size (the callables build the
    inputs from the batch size, deterministically) and compare every output they share."""
    report = ParityReport(precision=precision)
    for batch in batches:
        ref, got = reference(batch), candidate(batch)
        shared = sorted(set(ref) & set(got))
        if not shared:
            raise ValueError(f"reference and candidate share no output names: {sorted(ref)}")
        for name in shared:
            r, g = np.asarray(ref[name]), np.asarray(got[name])
            if r.shape != g.shape:
                raise ValueError(f"{name} at batch {batch}: shape {g.shape} != {r.shape}")
            report.max_abs_diff[(batch, name)] = float(np.max(np.abs(r - g))) if r.size else 0.0
            report.min_cosine[(batch, name)] = float(np.min(_row_cosine(r, g))) if r.size else 1.0
    return report


def require_parity(reference: Forward, candidate: Forward, *, precision: Precision) -> ParityReport:
    """:func:`compare`, raising :class:`ParityError` when the report fails."""
    report = compare(reference, candidate, precision=precision)
    if not report.passed:
        raise ParityError(report)
    return report
