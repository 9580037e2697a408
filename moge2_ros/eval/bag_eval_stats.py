"""Statistics of ``bag-eval`` that go beyond the per-frame official metrics: the per-frame metric-scale factor,
frame-to-frame flicker, error-vs-range accumulation, error histograms and the drift of the scale over time.

All depth values in metres; "log ratio" = ``log(pred / gt)`` per pixel (0 = exact, > 0 = predicted too far).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["RangeAccumulator", "HistogramAccumulator", "frame_scale", "flicker", "median_log_change", "scale_drift",
           "nice_range_edges"]


def frame_scale(pred: np.ndarray, gt: np.ndarray) -> float:
    """The frame's metric-scale error factor ``median(gt / pred)`` over paired valid pixels (1 = metric scale
    right; 1.1 = the prediction is 10 % too small).  ``pred``, ``gt``: ``(N,)`` positive depths; NaN if empty."""
    if pred.size == 0:
        return float("nan")
    return float(np.median(gt.astype(np.float64) / pred.astype(np.float64)))


def flicker(log_ratio_now: np.ndarray, log_ratio_before: np.ndarray) -> float:
    """Depth flicker between two frames: ``median |r_t - r_{t-1}|`` of the per-pixel log ratios ``(H, W)``
    (NaN where invalid) over pixels valid in both frames.  Comparing errors (not raw depths) cancels the scene's
    own depth change as far as the ground truth follows it; a static camera makes it exact.  NaN if no overlap."""
    both = np.isfinite(log_ratio_now) & np.isfinite(log_ratio_before)
    if not both.any():
        return float("nan")
    return float(np.median(np.abs(log_ratio_now[both] - log_ratio_before[both])))


def median_log_change(values: np.ndarray) -> float:
    """Frame-to-frame flicker of a positive series ``(N,)`` (a scale per frame): ``median |log(v_t / v_t-1)|`` over
    consecutive pairs where both are finite and > 0 (0.01 = 1 % per frame); NaN with fewer than one pair."""
    v = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        logs = np.where(np.isfinite(v) & (v > 0), np.log(np.where(v > 0, v, 1.0)), np.nan)
    steps = np.abs(np.diff(logs))
    steps = steps[np.isfinite(steps)]
    return float(np.median(steps)) if steps.size else float("nan")


def scale_drift(times_s: np.ndarray, scales: np.ndarray) -> dict[str, float]:
    """Drift of the per-frame scale factor over time: least-squares line ``scale(t) = a + b t``.

    Returns:
        ``scale_drift_per_min`` (``b`` in 1/min relative to the mean scale) and ``scale_drift`` (the relative
        change of the fitted line over the evaluated span, ``b (t_end - t_start) / mean``); NaN with < 2 frames.
    """
    ok = np.isfinite(times_s) & np.isfinite(scales)
    t, s = times_s[ok].astype(np.float64), scales[ok].astype(np.float64)
    if t.size < 2 or np.ptp(t) == 0:
        return {"scale_drift": float("nan"), "scale_drift_per_min": float("nan")}
    slope = float(np.polyfit(t, s, 1)[0])
    mean = float(s.mean())
    return {"scale_drift": slope * float(np.ptp(t)) / mean, "scale_drift_per_min": slope * 60.0 / mean}


@dataclass
class RangeAccumulator:
    """AbsRel and signed log ratio as functions of the ground-truth depth, accumulated over frames in fine bins
    (``step`` metres up to ``max_range``; farther pixels go into the last bin)."""

    step: float = 0.1
    max_range: float = 300.0
    counts: np.ndarray = field(init=False)
    abs_rel: np.ndarray = field(init=False)
    log_ratio: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n = int(math.ceil(self.max_range / self.step))
        self.counts = np.zeros(n, np.int64)
        self.abs_rel = np.zeros(n, np.float64)
        self.log_ratio = np.zeros(n, np.float64)

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add paired valid ``(N,)`` depths."""
        index = np.minimum((gt / self.step).astype(np.int64), len(self.counts) - 1)
        n = len(self.counts)
        self.counts += np.bincount(index, minlength=n)
        self.abs_rel += np.bincount(index, np.abs(pred - gt) / gt, minlength=n)
        self.log_ratio += np.bincount(index, np.log(pred / gt), minlength=n)

    def binned(self, bins: int = 12) -> dict[str, list[float]]:
        """Merge into about ``bins`` round-width bins spanning the 0.5 %-99.5 % range of the pixels: ``edges``
        (metres), mean ``abs_rel``, mean ``log_ratio`` and pixel ``count`` per bin (NaN where empty)."""
        total = self.counts.sum()
        if total == 0:
            return {"edges": [], "abs_rel": [], "log_ratio": [], "count": []}
        cdf = np.cumsum(self.counts) / total
        lo = float(np.searchsorted(cdf, 0.005) * self.step)
        hi = float((np.searchsorted(cdf, 0.995) + 1) * self.step)
        edges = nice_range_edges(lo, hi, bins, self.step)
        fine_edges = np.arange(len(self.counts) + 1) * self.step
        which = np.clip(np.searchsorted(edges, fine_edges[:-1] + self.step / 2, side="right") - 1, 0, len(edges) - 2)
        out_c = np.bincount(which, self.counts, minlength=len(edges) - 1)
        out_a = np.bincount(which, self.abs_rel, minlength=len(edges) - 1)
        out_l = np.bincount(which, self.log_ratio, minlength=len(edges) - 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            abs_rel = np.where(out_c > 0, out_a / out_c, np.nan)
            log_ratio = np.where(out_c > 0, out_l / out_c, np.nan)
        return {"edges": [float(e) for e in edges], "abs_rel": abs_rel.tolist(), "log_ratio": log_ratio.tolist(),
                "count": [int(c) for c in out_c]}


def nice_range_edges(lo: float, hi: float, bins: int, step: float) -> np.ndarray:
    """About ``bins`` equal bins of a round width (a multiple of ``step``) covering ``[lo, hi]``; the first edge
    is 0 or a multiple of the width."""
    width = max(step, (hi - lo) / max(1, bins))
    mag = 10 ** math.floor(math.log10(width))
    width = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= width - 1e-12)
    width = max(step, round(width / step) * step)
    start = math.floor(lo / width) * width
    n = max(1, math.ceil((hi - start) / width - 1e-9))
    return start + width * np.arange(n + 1)


@dataclass
class HistogramAccumulator:
    """Histogram of values in fixed bins ``[lo, hi]`` (values beyond go into the end bins)."""

    lo: float
    hi: float
    bins: int = 60
    counts: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.counts = np.zeros(self.bins, np.int64)

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, self.bins + 1)

    def add(self, values: np.ndarray) -> None:
        values = values[np.isfinite(values)]
        index = np.clip(((values - self.lo) / (self.hi - self.lo) * self.bins).astype(np.int64), 0, self.bins - 1)
        self.counts += np.bincount(index, minlength=self.bins)

    def fractions(self) -> list[float]:
        total = self.counts.sum()
        return (self.counts / total).tolist() if total else [0.0] * self.bins
