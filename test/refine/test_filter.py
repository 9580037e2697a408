"""Tests of the mismatch filter (moge2_ros.refine.filter) on exact synthetic geometry with injected errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moge2_ros.errors import GeometryError
from moge2_ros.geometry.intrinsics import gt_focal_from_intrinsics, pixel_to_normalized_intrinsics
from moge2_ros.geometry.projection import depth_to_points
from moge2_ros.refine.corrupt import simulate_prediction
from moge2_ros.refine.filter import FilterConfig, mismatch_filter

H, W = 96, 128


def _room() -> tuple[np.ndarray, np.ndarray]:
    """Depth of a slanted floor / back wall with a box in front (metres), and its pixel intrinsics."""
    f = 110.0
    k = np.array([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1]])
    ii, jj = np.mgrid[0:H, 0:W].astype(np.float64)
    depth = 4.0 + 0.01 * jj  # back wall, slightly slanted
    floor = ii > 60
    depth = np.where(floor, np.minimum(depth, 1.2 * f / np.maximum(ii - (H - 1) / 2, 1)), depth)
    box = (ii > 30) & (ii < 70) & (jj > 40) & (jj < 80)
    depth = np.where(box, 2.0, depth)
    return depth.astype(np.float32), k


def _run(real: np.ndarray, pred_depth: np.ndarray, k: np.ndarray, config: FilterConfig | None = None):
    k_norm = pixel_to_normalized_intrinsics(torch.tensor(k, dtype=torch.float32), W, H)
    real_valid = torch.from_numpy(np.isfinite(real))
    real_points = depth_to_points(torch.from_numpy(np.nan_to_num(real, nan=1.0)), k_norm)
    pred_points = depth_to_points(torch.from_numpy(pred_depth), k_norm)
    return mismatch_filter(real_points, real_valid, pred_points, torch.ones(H, W, dtype=torch.bool),
                           float(gt_focal_from_intrinsics(k_norm)), config)


def test_consistent_label_is_kept_despite_scale_error() -> None:
    """A clean label and a model with a 10 % global scale error (plus a smooth 3 % distortion): almost nothing
    is removed (the per-neighbourhood alignment absorbs scale and shift)."""
    truth, k = _room()
    pred = simulate_prediction(truth, np.random.default_rng(0), scale_error=1.1, distortion=0.03)
    result = _run(truth, pred, k)
    assert result.removed.float().mean() < 0.01
    assert result.global_scale == pytest.approx(1.1, rel=0.05)
    assert result.patches[0] > 0 and result.patches[1] > 0  # level 64 spheres are ~2 px wide at 128x96


def test_outliers_and_edge_bleeding_are_removed() -> None:
    truth, k = _room()
    rng = np.random.default_rng(1)
    real = truth.copy()
    bad = np.zeros_like(real, dtype=bool)
    # Single-pixel outliers (+-30 %).
    singles = rng.random(real.shape) < 0.02
    real[singles] *= np.where(rng.random(int(singles.sum())) < 0.5, 0.7, 1.3).astype(np.float32)
    bad |= singles
    # A blob of wrong depth on the wall (multipath-like, 25 % too near).
    ii, jj = np.ogrid[:H, :W]
    blob = (ii - 15) ** 2 + (jj - 100) ** 2 < 36
    real[blob] *= 0.75
    bad |= blob
    # Flying pixels: the box's left edge bleeds into the wall over 2 px (halfway depths).
    bleed = (ii > 30) & (ii < 70) & (jj >= 38) & (jj <= 40)
    bleed = np.broadcast_to(bleed, real.shape)
    real[bleed] = 0.5 * (2.0 + truth[bleed])
    bad |= bleed
    pred = simulate_prediction(truth, rng, scale_error=0.9)
    removed = _run(real, pred, k).removed.numpy()
    precision = (removed & bad).sum() / removed.sum()
    recall = (removed & bad).sum() / bad.sum()
    assert precision > 0.8, precision
    assert recall > 0.85, recall
    assert (removed[blob]).mean() > 0.8
    assert (removed[bleed]).mean() > 0.8


def test_votes_and_result_shapes() -> None:
    truth, k = _room()
    real = truth.copy()
    real[:, :10] = np.nan
    result = _run(real, truth, k, FilterConfig(levels=(8.0, 32.0), align_points=(24, 16), threshold=(0.5, 1.0)))
    assert result.flags.shape == result.coverage.shape == (2, H, W)
    assert not result.removed[:, :10].any()
    assert int(result.coverage[:, :, :10].sum()) == 0
    assert bool((result.flags <= result.coverage).all())


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"levels": ()}, "levels"),
        ({"levels": (4.0, -1.0)}, "levels"),
        ({"align_points": (32, 24)}, "align_points"),
        ({"threshold": (1.0,)}, "threshold"),
        ({"vote_fraction": 0.0}, "vote_fraction"),
        ({"max_scale_ratio": 0.5}, "max_scale_ratio"),
        ({"min_points": 1}, "min_points"),
    ],
)
def test_config_validation(kwargs: dict, needle: str) -> None:
    with pytest.raises(GeometryError, match=needle):
        FilterConfig(**kwargs)


def test_bad_inputs() -> None:
    points = torch.ones(8, 8, 3)
    valid = torch.ones(8, 8, dtype=torch.bool)
    with pytest.raises(GeometryError, match="pred_points"):
        mismatch_filter(points, valid, torch.ones(8, 9, 3), valid, 1.0)
    with pytest.raises(GeometryError, match="real_valid"):
        mismatch_filter(points, valid[:4], points, valid, 1.0)
    with pytest.raises(GeometryError, match="focal"):
        mismatch_filter(points, valid, points, valid, 0.0)
