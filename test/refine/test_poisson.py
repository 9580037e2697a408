"""Tests of the log-depth Poisson completion (moge2_ros.refine.poisson): exactness, solver agreement, anchors."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from moge2_ros.errors import GeometryError
from moge2_ros.refine.poisson import poisson_system, solve_log_depth_poisson


def _scene(height: int, width: int) -> np.ndarray:
    """A smooth surface with a depth step (metres)."""
    ii, jj = np.mgrid[0:height, 0:width].astype(np.float64)
    depth = 2.0 + 0.4 * np.sin(ii / 9.0) + 0.3 * np.cos(jj / 13.0) + 1.5 * (jj > width / 2)
    return depth.astype(np.float32)


def _blobs(height: int, width: int, fraction: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ii, jj = np.ogrid[:height, :width]
    mask = np.zeros((height, width), dtype=bool)
    while mask.mean() < fraction:
        ci, cj, r = rng.integers(0, height), rng.integers(0, width), rng.integers(2, 9)
        mask |= (ii - ci) ** 2 + (jj - cj) ** 2 < r * r
    return mask


@pytest.mark.parametrize("solver", ["scipy", "torch"])
def test_exact_recovery_with_scaled_guide(solver: str) -> None:
    """Guide = truth x 1.1: log-gradients equal the truth's, so the fill reproduces the truth exactly and the
    known pixels are untouched."""
    truth = _scene(48, 64)
    unknown = _blobs(48, 64, 0.3, seed=1)
    known = np.where(unknown, np.nan, truth).astype(np.float32)
    result = solve_log_depth_poisson(known, 1.1 * truth, solver=solver)
    depth = result.depth.numpy()
    assert result.solver == solver
    assert result.filled.numpy().tolist() == unknown.tolist()
    assert not result.unanchored.any()
    np.testing.assert_array_equal(depth[~unknown], truth[~unknown])
    np.testing.assert_allclose(depth[unknown], truth[unknown], rtol=1e-4)
    assert result.residual < 1e-5


def test_solvers_agree_with_an_inconsistent_guide() -> None:
    """With a guide whose gradients do not match the boundary, the least-squares solutions still agree."""
    truth = _scene(40, 56)
    rng = np.random.default_rng(0)
    guide = truth * np.exp(0.05 * rng.standard_normal(truth.shape)).astype(np.float32)
    unknown = _blobs(40, 56, 0.35, seed=2)
    known = np.where(unknown, np.nan, truth)
    a = solve_log_depth_poisson(known, guide, solver="scipy").depth.numpy()
    b = solve_log_depth_poisson(known, guide, solver="torch", tol=1e-9).depth.numpy()
    assert np.isfinite(a[unknown]).all()
    np.testing.assert_allclose(b, a, rtol=1e-5)
    # The fill is not the truth here (noisy guide), but stays close to it.
    assert np.mean(np.abs(a[unknown] - truth[unknown]) / truth[unknown]) < 0.05


def test_operator_is_symmetric_positive_definite() -> None:
    truth = _scene(24, 30)
    unknown = _blobs(24, 30, 0.4, seed=3)
    system = poisson_system(np.where(unknown, np.nan, truth), truth)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(24, 30, generator=gen, dtype=torch.float64) * system.unknown
    y = torch.randn(24, 30, generator=gen, dtype=torch.float64) * system.unknown
    assert torch.allclose((system.apply(x) * y).sum(), (x * system.apply(y)).sum())
    assert float((system.apply(x) * x).sum()) > 0


@pytest.mark.parametrize("solver", ["scipy", "torch"])
def test_regions_without_anchor_stay_invalid(solver: str) -> None:
    """An unknown region cut off from every known pixel (by pixels without a guide) is not filled."""
    truth = _scene(30, 40)
    guide = truth.copy()
    guide[5:15, 5:15] = np.nan  # a ring without guide ...
    guide[7:13, 7:13] = truth[7:13, 7:13]  # ... around an island that has one
    known = truth.copy()
    known[7:13, 7:13] = np.nan  # the island has no real depth
    known[20:25, 20:30] = np.nan  # an ordinary, anchored hole
    result = solve_log_depth_poisson(known, guide, solver=solver)
    depth, unanchored = result.depth.numpy(), result.unanchored.numpy()
    assert unanchored[7:13, 7:13].all() and unanchored.sum() == 36
    assert np.isnan(depth[7:13, 7:13]).all()
    np.testing.assert_allclose(depth[20:25, 20:30], truth[20:25, 20:30], rtol=1e-4)


def test_unknown_mask_limits_the_fill() -> None:
    truth = _scene(20, 20)
    known = truth.copy()
    known[2:6, 2:6] = np.nan
    known[12:16, 12:16] = np.nan
    request = np.zeros_like(known, dtype=bool)
    request[2:6, 2:6] = True
    depth = solve_log_depth_poisson(known, truth, request, solver="scipy").depth.numpy()
    assert np.isfinite(depth[2:6, 2:6]).all()
    assert np.isnan(depth[12:16, 12:16]).all()


def test_bad_arguments() -> None:
    with pytest.raises(GeometryError, match="known_depth"):
        solve_log_depth_poisson(np.ones((4, 5)), np.ones((5, 5)))
    with pytest.raises(GeometryError, match="solver"):
        solve_log_depth_poisson(np.ones((5, 5)), np.ones((5, 5)), solver="magic")  # type: ignore[arg-type]
    with pytest.raises(GeometryError, match="shape"):
        solve_log_depth_poisson(np.ones((5, 5)), np.ones((5, 5, 1)))


@pytest.mark.slow
def test_640x480_with_30_percent_unknowns_takes_seconds() -> None:
    """The issue's bound: a 640x480 solve with 30 % unknowns in a few seconds on this CPU with the default CPU
    solver (scipy; generous bound, the machine is shared; docs/REFINEMENT.md has the measured numbers).  The torch
    CG path is the GPU solver; its CPU time is documented, not asserted."""
    truth = np.tile(_scene(48, 64), (10, 10))
    rng = np.random.default_rng(0)
    ii, jj = np.ogrid[:480, :640]
    unknown = np.zeros((480, 640), dtype=bool)
    while unknown.mean() < 0.3:
        ci, cj, r = rng.integers(0, 480), rng.integers(0, 640), rng.integers(5, 61)
        unknown |= (ii - ci) ** 2 + (jj - cj) ** 2 < r * r
    known = np.where(unknown, np.nan, truth)
    for solver in ("scipy",):
        start = time.perf_counter()
        result = solve_log_depth_poisson(known, 1.1 * truth, solver=solver)
        seconds = time.perf_counter() - start
        assert seconds < 10.0, f"{solver}: {seconds:.1f} s"
        np.testing.assert_allclose(result.depth.numpy()[unknown], truth[unknown], rtol=1e-3)


@pytest.mark.gpu
def test_torch_solver_on_cuda_matches_scipy() -> None:
    truth = _scene(96, 128)
    unknown = _blobs(96, 128, 0.3, seed=4)
    rng = np.random.default_rng(1)
    guide = (truth * np.exp(0.03 * rng.standard_normal(truth.shape))).astype(np.float32)
    known = np.where(unknown, np.nan, truth).astype(np.float32)
    ref = solve_log_depth_poisson(known, guide, solver="scipy").depth.numpy()
    result = solve_log_depth_poisson(torch.from_numpy(known).cuda(), torch.from_numpy(guide).cuda(), tol=1e-7)
    assert result.solver == "torch" and result.depth.is_cuda
    np.testing.assert_allclose(result.depth.cpu().numpy(), ref, rtol=1e-4)
