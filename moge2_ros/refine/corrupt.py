"""A sensor-corruption simulator with exact truth, for testing and benchmarking the refinement.

:func:`corrupt_depth` turns an exact depth map (from the synthetic generator) into one that looks like a real
RGB-D / registered-depth label: a 1-3 px registration error between depth and image, edge bleeding (flying pixels
mixing foreground and background in a band around depth discontinuities), random outliers (single pixels and
blobs, like multipath or reflections), holes (random blobs and the sensor shadow beside foreground edges) and a
small multiplicative noise.  It returns which pixels are *corrupted* (relative error above
``CorruptionConfig.corrupt_rtol``), the exact truth a filter is judged against.

:func:`simulate_prediction` makes the matching "synthetic model" prediction: the exact geometry with a global
scale error (10 % by default) and a smooth low-frequency relative distortion, sharp at edges.

Depth maps are ``(H, W)`` float32 metres with NaN for invalid; the random state is a ``numpy.random.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from moge2_ros.errors import GeometryError
from moge2_ros.geometry.edges import depth_edge_mask

#: Codes of :attr:`Corrupted.cause`.
CAUSES = {"none": 0, "registration": 1, "bleeding": 2, "outlier": 3, "outlier_blob": 4}

__all__ = ["CAUSES", "CorruptionConfig", "Corrupted", "corrupt_depth", "simulate_prediction", "edge_band", "score_refinement"]


@dataclass(frozen=True)
class CorruptionConfig:
    """Parameters of :func:`corrupt_depth`.

    Attributes:
        shift_px: range ``(min, max)`` of the registration error in pixels (integer shift of the whole depth map;
            the larger axis component is drawn in this range, the other in ``[0, max]``).
        bleed_px: half-width of the flying-pixel band around depth edges.
        bleed_probability: fraction of band pixels that get a foreground/background mix.
        edge_rtol: relative depth change that makes a depth edge (3x3 window).
        outlier_fraction: fraction of valid pixels replaced by single-pixel outliers.
        outlier_blobs: number of blob outliers (a constant wrong factor over a disc of 3-15 px radius).
        outlier_factor: range ``(min, max)`` of the relative error of outliers (applied as ``1 +- e``).
        hole_fraction: target fraction of pixels dropped in random disc holes.
        shadow_px: width of the sensor shadow (no depth) on the background side of depth edges (0 = none).
        noise_rel: standard deviation of the multiplicative noise (not counted as corruption).
        corrupt_rtol: a valid pixel is corrupted when ``|d - d_true| / d_true`` exceeds this.
    """

    shift_px: tuple[int, int] = (1, 3)
    bleed_px: int = 2
    bleed_probability: float = 0.7
    edge_rtol: float = 0.05
    outlier_fraction: float = 0.01
    outlier_blobs: int = 6
    outlier_factor: tuple[float, float] = (0.15, 0.6)
    hole_fraction: float = 0.08
    shadow_px: int = 3
    noise_rel: float = 0.003
    corrupt_rtol: float = 0.03

    def __post_init__(self) -> None:
        lo, hi = self.shift_px
        if not 0 <= lo <= hi:
            raise GeometryError(f"corruption config: shift_px must be 0 <= min <= max, found {self.shift_px!r}")
        if self.bleed_px < 0 or self.shadow_px < 0 or self.outlier_blobs < 0:
            raise GeometryError("corruption config: bleed_px, shadow_px and outlier_blobs must be >= 0")
        for name in ("bleed_probability", "outlier_fraction", "hole_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise GeometryError(f"corruption config: {name} must be in [0, 1], found {getattr(self, name)!r}")
        if not 0 < self.outlier_factor[0] <= self.outlier_factor[1] < 1:
            raise GeometryError(f"corruption config: outlier_factor must satisfy 0 < min <= max < 1, found "
                                f"{self.outlier_factor!r}")
        if self.noise_rel < 0 or self.corrupt_rtol <= 0 or self.edge_rtol <= 0:
            raise GeometryError("corruption config: noise_rel >= 0, corrupt_rtol > 0 and edge_rtol > 0 expected")


@dataclass
class Corrupted:
    """Output of :func:`corrupt_depth`.

    Attributes:
        depth: ``(H, W)`` float32 corrupted depth, NaN where missing.
        corrupted: ``(H, W)`` bool, valid pixels of ``depth`` whose relative error exceeds ``corrupt_rtol``
            (or whose truth is invalid) — what a perfect filter would remove.
        holes: ``(H, W)`` bool, pixels with valid truth that have no depth after corruption.
        cause: ``(H, W)`` uint8, the last corruption that touched each corrupted pixel (:data:`CAUSES`; 0 for
            pixels that are not corrupted).
        shift: the ``(dy, dx)`` registration error applied, pixels.
    """

    depth: np.ndarray
    corrupted: np.ndarray
    holes: np.ndarray
    cause: np.ndarray
    shift: tuple[int, int]


def _check_depth(depth: np.ndarray) -> np.ndarray:
    depth = np.asarray(depth)
    if depth.ndim != 2 or depth.shape[0] < 8 or depth.shape[1] < 8:
        raise GeometryError(f"corrupt: expected an (H, W) depth map of at least 8x8, found {depth.shape}")
    return depth.astype(np.float32)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    if radius <= 0:
        return mask.copy()
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    return (F.max_pool2d(t, 2 * radius + 1, stride=1, padding=radius)[0, 0] > 0).numpy()


def _window_extreme(depth: np.ndarray, radius: int, largest: bool) -> np.ndarray:
    """Max (``largest``) or min of the valid depth over a ``(2r+1)^2`` window (NaN where none is valid)."""
    t = torch.from_numpy(np.where(np.isfinite(depth), depth if largest else -depth, -np.inf).astype(np.float32))
    out = F.max_pool2d(t[None, None], 2 * radius + 1, stride=1, padding=radius)[0, 0].numpy()
    out = out if largest else -out
    return np.where(np.isfinite(out), out, np.nan).astype(np.float32)


def edge_band(depth: np.ndarray, radius: int, rtol: float = 0.05) -> np.ndarray:
    """``(H, W)`` bool: pixels within ``radius`` px (Chebyshev) of a depth discontinuity of ``depth``
    (:func:`moge2_ros.geometry.edges.depth_edge_mask`, 3x3, relative tolerance ``rtol``)."""
    depth = np.asarray(depth, dtype=np.float32)
    edges = depth_edge_mask(torch.from_numpy(depth), rtol=rtol).numpy()
    return _dilate(edges, radius)


def _discs(shape: tuple[int, int], rng: np.random.Generator, count: int, radius: tuple[int, int]) -> list[np.ndarray]:
    height, width = shape
    ii, jj = np.ogrid[:height, :width]
    out = []
    for _ in range(count):
        ci, cj = rng.integers(0, height), rng.integers(0, width)
        ri, rj = rng.integers(radius[0], radius[1] + 1, size=2)
        out.append(((ii - ci) / ri) ** 2 + ((jj - cj) / rj) ** 2 <= 1)
    return out


def corrupt_depth(
    depth: np.ndarray, rng: np.random.Generator, config: CorruptionConfig | None = None
) -> Corrupted:
    """Corrupt an exact depth map like a real sensor label (see the module docstring).

    Args:
        depth: ``(H, W)`` exact depth in metres, NaN where there is no geometry (sky).
        rng: random state (the result is a deterministic function of its state).
        config: :class:`CorruptionConfig` (defaults when None).

    Returns:
        :class:`Corrupted`.
    """
    config = config or CorruptionConfig()
    truth = _check_depth(depth)
    height, width = truth.shape
    truth_valid = np.isfinite(truth) & (truth > 0)

    # 1. Registration error: the depth map is shifted against the image (integer pixels, NaN enters at the border).
    lo, hi = config.shift_px
    major = int(rng.integers(lo, hi + 1))
    minor = int(rng.integers(0, max(hi, 0) + 1)) if hi > 0 else 0
    dy, dx = (major, minor) if rng.random() < 0.5 else (minor, major)
    dy, dx = dy * int(rng.choice([-1, 1])), dx * int(rng.choice([-1, 1]))
    out = np.full_like(truth, np.nan)
    src = truth[max(0, -dy):height - max(0, dy), max(0, -dx):width - max(0, dx)]
    out[max(0, dy):max(0, dy) + src.shape[0], max(0, dx):max(0, dx) + src.shape[1]] = src
    cause = np.full(truth.shape, CAUSES["registration"], dtype=np.uint8)

    # 2. Edge bleeding: flying pixels mixing foreground and background near discontinuities.
    if config.bleed_px > 0:
        band = edge_band(out, config.bleed_px, config.edge_rtol) & np.isfinite(out)
        near = _window_extreme(out, config.bleed_px + 1, largest=False)
        far = _window_extreme(out, config.bleed_px + 1, largest=True)
        alpha = rng.random(out.shape).astype(np.float32)
        pick = band & (rng.random(out.shape) < config.bleed_probability)
        out = np.where(pick, alpha * near + (1 - alpha) * far, out).astype(np.float32)
        cause[pick] = CAUSES["bleeding"]

    # 3. Sensor shadow: no depth on the background just left of a foreground edge (projector offset).
    if config.shadow_px > 0:
        near_right = np.full_like(out, np.inf)
        for k in range(1, config.shadow_px + 1):
            near_right[:, :-k] = np.fmin(near_right[:, :-k], out[:, k:])
        out[np.isfinite(out) & (out > near_right * (1 + config.edge_rtol))] = np.nan

    # 4. Outliers: single pixels and blobs with a wrong relative depth.
    def factor(size: tuple[int, ...] | int) -> np.ndarray:
        e = rng.uniform(*config.outlier_factor, size=size)
        return np.where(rng.random(size) < 0.5, 1 - e, 1 + e)

    singles = rng.random(out.shape) < config.outlier_fraction
    out = np.where(singles, out * factor(out.shape), out).astype(np.float32)
    cause[singles] = CAUSES["outlier"]
    for disc in _discs(out.shape, rng, config.outlier_blobs, (3, 15)):
        out[disc] *= factor(1)[0]
        cause[disc] = CAUSES["outlier_blob"]

    # 5. Holes.
    target = config.hole_fraction * height * width
    hole = np.zeros(out.shape, dtype=bool)
    r_max = max(3, int(0.06 * math.hypot(height, width)))
    while hole.sum() < target:
        hole |= _discs(out.shape, rng, 1, (2, r_max))[0]
    out[hole] = np.nan

    # 6. Noise.
    if config.noise_rel > 0:
        out = out * (1 + config.noise_rel * rng.standard_normal(out.shape)).astype(np.float32)
    out = np.where(np.isfinite(out) & (out > 0), out, np.nan).astype(np.float32)

    valid = np.isfinite(out)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.abs(out - truth) / truth
    corrupted = valid & (~truth_valid | (rel > config.corrupt_rtol))
    cause = np.where(corrupted, cause, 0).astype(np.uint8)
    return Corrupted(out, corrupted, truth_valid & ~valid, cause, (dy, dx))


def simulate_prediction(
    depth: np.ndarray,
    rng: np.random.Generator,
    scale_error: float = 1.1,
    distortion: float = 0.03,
    grid: int = 4,
) -> np.ndarray:
    """A "synthetic-trained model" depth prediction of the same camera: exact structure, wrong metric scale.

    ``d_hat = scale_error * d_true * (1 + distortion * n(u, v))`` with ``n`` a smooth field in [-1, 1] (bilinear
    upsampling of a ``grid x grid`` random grid), so depth edges stay exactly where the truth has them.

    Args:
        depth: ``(H, W)`` exact depth, NaN where invalid (stays NaN).
        rng: random state.
        scale_error: global scale factor of the prediction (1.1 = 10 % too far).
        distortion: amplitude of the smooth relative distortion.
        grid: resolution of the random grid of the distortion.

    Returns:
        ``(H, W)`` float32 depth.
    """
    truth = _check_depth(depth)
    if not (scale_error > 0 and distortion >= 0 and grid >= 2):
        raise GeometryError(f"simulate_prediction: expected scale_error > 0, distortion >= 0, grid >= 2, found "
                            f"{scale_error}, {distortion}, {grid}")
    coarse = torch.from_numpy(rng.uniform(-1, 1, size=(1, 1, grid, grid)).astype(np.float32))
    field = F.interpolate(coarse, size=truth.shape, mode="bilinear", align_corners=True)[0, 0].numpy()
    return (scale_error * truth * (1 + distortion * field)).astype(np.float32)


def _absrel(depth: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    m = mask & np.isfinite(depth) & np.isfinite(truth) & (truth > 0)
    if not m.any():
        return float("nan")
    return float(np.mean(np.abs(depth[m] - truth[m]) / truth[m]))


def score_refinement(
    truth: np.ndarray,
    corrupted: Corrupted,
    refined: np.ndarray,
    provenance: np.ndarray,
    edge_radius: int = 3,
    gross_rtol: float = 0.1,
) -> dict[str, float]:
    """Score a refinement against the exact truth of a controlled test (fractions in [0, 1], AbsRel unitless).

    * Filter: ``removed`` = real pixels that were not kept (provenance filtered, or filled over a real value);
      ``precision = |removed & corrupted| / |removed|``, ``recall = |removed & corrupted| / |corrupted|``, and
      ``recall_gross`` for corrupted pixels with relative error above ``gross_rtol``.
    * Depth: AbsRel of the raw corrupted depth (on its valid pixels) and of the refined depth (on its valid
      pixels, and on the raw valid pixels only: the same pixel set), overall and within ``edge_radius`` px of a
      depth edge of the truth (:func:`edge_band`); ``coverage_*`` = fraction of truth-valid pixels labelled.
    * Boundary F1 (:func:`moge2_ros.eval.metrics.boundary_f1`, radius 1) of raw and refined depth against the
      truth on the truth-valid pixels.

    Args:
        truth: ``(H, W)`` exact depth (NaN invalid); corrupted: the :func:`corrupt_depth` output;
        refined: ``(H, W)`` refined depth; provenance: ``(H, W)`` uint8 codes.
    """
    from moge2_ros.data.sample import PROVENANCE
    from moge2_ros.eval.metrics import boundary_f1

    truth = np.asarray(truth, dtype=np.float32)
    raw = corrupted.depth
    raw_valid = np.isfinite(raw)
    truth_valid = np.isfinite(truth) & (truth > 0)
    removed = raw_valid & (provenance != PROVENANCE["kept"])
    bad = corrupted.corrupted
    with np.errstate(invalid="ignore", divide="ignore"):
        gross = bad & (np.abs(raw - truth) / truth > gross_rtol)
    tp = int((removed & bad).sum())
    band = edge_band(np.where(truth_valid, truth, np.nan), edge_radius)
    everywhere = np.ones_like(band)

    def f1(depth: np.ndarray) -> float:
        mask = torch.from_numpy(truth_valid)
        gt = torch.from_numpy(np.where(truth_valid, truth, 1.0).astype(np.float32))
        return boundary_f1(torch.from_numpy(depth.astype(np.float32)), gt, mask)

    return {
        "corrupted_fraction": float(bad.sum() / max(1, raw_valid.sum())),
        "removed_fraction": float(removed.sum() / max(1, raw_valid.sum())),
        "precision": tp / max(1, int(removed.sum())),
        "recall": tp / max(1, int(bad.sum())),
        "recall_gross": int((removed & gross).sum()) / max(1, int(gross.sum())),
        **{f"recall_{name}": int((removed & (corrupted.cause == code)).sum())
           / max(1, int((corrupted.cause == code).sum())) if (corrupted.cause == code).any() else float("nan")
           for name, code in CAUSES.items() if code},
        **{f"fraction_{name}": float((corrupted.cause == code).sum() / max(1, int(bad.sum())))
           for name, code in CAUSES.items() if code},
        "absrel_raw": _absrel(raw, truth, everywhere),
        "absrel_refined": _absrel(refined, truth, everywhere),
        "absrel_refined_on_raw_pixels": _absrel(refined, truth, raw_valid),
        "absrel_raw_edges": _absrel(raw, truth, band),
        "absrel_refined_edges": _absrel(refined, truth, band),
        "absrel_refined_edges_on_raw_pixels": _absrel(refined, truth, band & raw_valid),
        "coverage_raw": float((raw_valid & truth_valid).sum() / max(1, truth_valid.sum())),
        "coverage_refined": float((np.isfinite(refined) & truth_valid).sum() / max(1, truth_valid.sum())),
        "boundary_f1_raw": f1(raw),
        "boundary_f1_refined": f1(refined),
    }
