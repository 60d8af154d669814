"""Video segments: cutting sampled frames into segments, pooling their vectors, thumbnails.

Pure logic over (time, image) samples and damaged time spans: ``indexer/pipeline/video.py``
keeps the FFmpeg side and re-exports what callers need. Times are exact fractions.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

import numpy as np
from PIL import Image

from service.core.errors import invalid

Mode = Literal["fixed", "shots"]

# Shot cut: total-variation distance between soft-binned 8x8x8 RGB histograms of consecutive
# samples. Histograms ignore motion inside a shot (vital at 1 sample/s); soft (trilinear)
# binning keeps compression noise near a bin edge from looking like a cut. In the benchmark's
# panning scenes, samples 1 s apart differ by 0.03-0.11 inside a shot and by 0.39-0.78 across a
# cut. 0.3 errs towards cutting: an extra cut only splits a segment, a missed one pools two
# scenes into one vector. Fades are not detected: MAX_SHOT_S caps how long a segment can run.
SHOT_THRESHOLD = 0.3
MAX_SHOT_S = 20.0
THUMBNAIL_SIDE = 256
_BINS = 8


@dataclass(frozen=True, eq=False)
class Segment:
    index: int
    t_start: float
    t_end: float
    frames: list[Image.Image]  # RGB, the sampled frames in time order
    keyframe: Image.Image  # the middle sampled frame
    frame_times: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class SegmentError:
    index: int | None
    t_start: float | None
    reason: str
    t_end: float | None = None


@dataclass
class _Open:
    index: int
    t_start: Fraction
    failure: str | None = None
    frames: list[Image.Image] = field(default_factory=list)
    times: list[Fraction] = field(default_factory=list)


def check_params(
    segment_s: float, sample_fps: float, mode: str, threshold: float, max_shot_s: float
) -> None:
    if mode not in ("fixed", "shots"):
        raise invalid(f"unknown segment mode {mode!r}; use 'fixed' or 'shots'")
    # Bounds keep the work per video finite: no 1 ms segments, no sampling past the frame rate.
    if not (0.5 <= segment_s <= 600 and 0.5 <= max_shot_s <= 600):
        raise invalid("segment lengths must be between 0.5 and 600 seconds")
    if not 0 < sample_fps <= 30:
        raise invalid("sample_fps must be above 0 and at most 30")
    if not 0 < threshold <= 1:
        raise invalid("shot_threshold must be in (0, 1]")


class Segmenter:
    """Owns the sampling schedule; ``fill`` samples, ``hole`` marks damage, ``drain`` emits.

    Fixed mode: segment ``k`` is [k*segment, (k+1)*segment), sampled from its own start, so
    every segment has at least one sample whatever the rate. Shot mode: one global grid; a
    sample far enough from the previous one (or a segment at ``max_shot``) starts a new segment.
    A damaged span fails every segment it touches (fixed) or the shot it cuts short (shots).
    """

    def __init__(
        self, mode: Mode, segment: Fraction, step: Fraction, threshold: float, max_shot: Fraction
    ) -> None:
        self.mode, self.segment, self.step = mode, segment, step
        self.threshold, self.max_shot = threshold, max_shot
        self.next_s = Fraction(0)  # the next sample time
        self._out: list[Segment | SegmentError] = []
        self._cur: _Open | None = None
        self._shots = 0  # shot indexes used so far
        self._resume: Fraction | None = None  # shots: where the shot after a hole starts
        self._hist: np.ndarray | None = None
        self._fail_through, self._fail_reason = -1, ""  # fixed: segments up to this one fail

    def drain(self) -> list[Segment | SegmentError]:
        out, self._out = self._out, []
        return out

    def _advance(self) -> None:
        s = self.next_s + self.step
        if self.mode == "fixed":
            s = min(s, (self.next_s // self.segment + 1) * self.segment)
        self.next_s = s

    def fill(self, until: Fraction, image: Callable[[], Image.Image]) -> None:
        """Sample every scheduled time before ``until`` from the frame on screen then."""
        while self.next_s < until:
            self._sample(self.next_s, image())
            self._advance()

    def _emit(self, seg: _Open, t_end: Fraction) -> None:
        if seg.failure is not None:
            self._out.append(SegmentError(seg.index, float(seg.t_start), seg.failure, float(t_end)))
            return
        keyframe = seg.frames[len(seg.frames) // 2]
        times = [float(t) for t in seg.times]
        start, end = float(seg.t_start), float(t_end)
        self._out.append(Segment(seg.index, start, end, seg.frames, keyframe, times))

    def _sample(self, s: Fraction, image: Image.Image) -> None:
        cur = self._cur
        if self.mode == "fixed":
            index = int(s // self.segment)
            if cur is None or cur.index != index:
                first = 0 if cur is None else cur.index + 1
                if cur is not None:
                    self._emit(cur, first * self.segment)
                for k in range(first, index):  # skipped whole: a hole covered them
                    reason = self._fail_reason if k <= self._fail_through else "no frames"
                    end = float((k + 1) * self.segment)
                    self._out.append(SegmentError(k, float(k * self.segment), reason, end))
                failure = self._fail_reason if index <= self._fail_through else None
                cur = _Open(index, index * self.segment, failure)
        else:
            hist = histogram(image)
            if cur is not None and (
                (self._hist is not None and distance(hist, self._hist) > self.threshold)
                or s - cur.t_start >= self.max_shot
            ):
                self._emit(cur, s)
                cur = None
            if cur is None:
                cur = _Open(self._shots, s if self._resume is None else self._resume)
                self._shots, self._resume = self._shots + 1, None
            self._hist = hist
        self._cur = cur
        if cur.failure is None:  # a failed segment keeps no frames: nobody will embed them
            cur.frames.append(image)
            cur.times.append(s)

    def hole(self, t0: Fraction, t1: Fraction, reason: str) -> None:
        """Nothing trustworthy could be decoded in [t0, t1)."""
        while self.next_s < t1:  # no samples from a span nobody can see
            self._advance()
        cur = self._cur
        if self.mode == "fixed":
            self._fail_through = max(self._fail_through, math.ceil(t1 / self.segment) - 1)
            self._fail_reason = reason
            if cur is not None and (cur.index + 1) * self.segment > t0:
                cur.failure = reason
                cur.frames.clear()
            return
        if cur is not None:
            cur.failure = reason
            self._emit(cur, t1)
        else:
            self._out.append(SegmentError(self._shots, float(t0), reason, float(t1)))
            self._shots += 1
        # The next sample starts a new shot, covering the time since the hole ended.
        self._cur, self._hist, self._resume = None, None, t1

    def finish(self, end: Fraction, failure: str | None, total: Fraction | None) -> None:
        """Close the open segment at ``end``; with a failure, report what is missing after it."""
        cur = self._cur
        if self.mode == "fixed":
            nominal = (cur.index + 1) * self.segment if cur else Fraction(0)
            if cur is not None and (failure is None or nominal <= end):
                self._emit(cur, min(nominal, end))
                rest = (cur.index + 1, nominal)
            else:  # the open segment was cut short: it fails with the rest
                rest = (cur.index, cur.t_start) if cur else (0, Fraction(0))
        elif cur is not None and failure is None:
            self._emit(cur, end)
            rest = (self._shots, end)
        else:
            rest = (cur.index, cur.t_start) if cur else (self._shots, end)
        self._cur = None
        if failure is not None and (total is None or rest[1] < total):
            t_end = None if total is None else float(total)
            self._out.append(SegmentError(rest[0], float(rest[1]), failure, t_end))


def histogram(image: Image.Image) -> np.ndarray:
    """Soft-binned joint RGB histogram of about 16k pixels, summing to 1."""
    arr = np.asarray(image)
    stride = max(1, round(math.sqrt(arr.shape[0] * arr.shape[1] / 16384)))
    pos = arr[::stride, ::stride].reshape(-1, 3).astype(np.float32) * ((_BINS - 1) / 255)
    lo = np.minimum(pos.astype(np.intp), _BINS - 2)
    up = pos - lo  # each pixel's vote for the upper of its two nearest bins, per channel
    hist = np.zeros(_BINS**3)
    for corner in itertools.product((0, 1), repeat=3):
        idx = np.zeros(len(pos), dtype=np.intp)
        weight = np.ones(len(pos), dtype=np.float32)
        for channel, bit in enumerate(corner):
            idx = idx * _BINS + lo[:, channel] + bit
            weight *= up[:, channel] if bit else 1 - up[:, channel]
        hist += np.bincount(idx, weights=weight, minlength=_BINS**3)
    return hist / hist.sum()


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Total variation: 0 for the same colours, 1 for disjoint ones."""
    return 0.5 * float(np.abs(a - b).sum())


def pool_frames(vectors: np.ndarray) -> np.ndarray:
    """A segment's ``image`` vector: the mean of its L2-normalised frame embeddings, re-normalised.

    Why the mean: for a unit query q, q . mean(v) = mean(q . v), so the pooled vector ranks
    segments by their average frame similarity, and re-normalising only divides by the mean
    vector's length, which favours segments whose frames agree. It needs no training, costs one
    vector per point, and is the strong parameter-free baseline for CLIP video retrieval
    (CLIP4Clip's "meanP"). A zero mean (frames that cancel out) falls back to the middle frame.
    """
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise ValueError(f"pool_frames needs an [n >= 1, dim] matrix, got shape {matrix.shape}")
    unit = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    mean = unit.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    if norm < 1e-6:
        return unit[len(unit) // 2]
    return (mean / norm).astype(np.float32)


def thumbnail_jpeg(image: Image.Image) -> bytes:
    """A keyframe as a JPEG of at most THUMBNAIL_SIDE px a side (``indexer.pipeline.thumbnails``
    places and writes it)."""
    thumb = image.convert("RGB")  # convert() copies, so thumbnail() never touches the caller's
    thumb.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    thumb.save(buf, format="JPEG", quality=85)
    return buf.getvalue()
