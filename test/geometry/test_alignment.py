"""Tests of moge2_ros.geometry.alignment: official vectors plus brute-force checks of every solver."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from moge2_ros.errors import GeometryError
from moge2_ros.geometry import (
    align,
    align_affine_lstsq,
    align_depth_affine,
    align_depth_scale,
    align_points_scale,
    align_points_scale_xyz_shift,
    align_points_scale_z_shift,
    align_points_xyz_shift,
    align_points_z_shift,
)

ALIGN_CASES = ["align_points_scale_z_shift_trunc_None", "align_points_scale_z_shift_trunc_1.0"]


@pytest.fixture(scope="module")
def small(reference_dir):
    ref = reference_dir
    return json.loads((ref / "public_small.json").read_text())["cases"], np.load(ref / "public_small.npz")


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _objective(a, x, y, w, trunc):
    """sum_i min(trunc, w_i |a x_i - y_i|) in float64 for candidate(s) a (broadcast over a leading dim)."""
    err = w * np.abs(np.asarray(a, np.float64)[..., None] * x - y)
    if trunc is not None:
        err = np.minimum(err, trunc)
    return err.sum(-1)


# ----------------------------------------------------------------------------------------------------------------
# official vectors
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parity
def test_all_align_cases_are_covered(small):
    cases, _ = small
    assert sorted(n for n in cases if n.startswith("align")) == sorted(ALIGN_CASES)


@pytest.mark.parity
@pytest.mark.parametrize("name", ALIGN_CASES)
def test_align_points_scale_z_shift_matches_official(small, name):
    cases, arrays = small
    case = cases[name]
    args = {k: torch.from_numpy(arrays[v["array"]]) for k, v in case["inputs"].items()}
    trunc = None if name.endswith("None") else 1.0
    assert case["call"].endswith(f"trunc={trunc})")
    scale, shift = align_points_scale_z_shift(args["points_src"], args["points_tgt"], args["weight"], trunc)
    want_scale = arrays[case["outputs"]["scale"]["array"]]
    want_shift = arrays[case["outputs"]["shift"]["array"]]
    assert scale.shape == want_scale.shape and shift.shape == want_shift.shape
    np.testing.assert_allclose(scale.numpy(), want_scale, rtol=1e-6, atol=0)
    np.testing.assert_allclose(shift.numpy(), want_shift, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(shift[..., :2].numpy(), 0.0)


# ----------------------------------------------------------------------------------------------------------------
# align (1-D): brute force over all candidates y_i / x_i
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("trunc", [None, 0.3])
def test_align_is_the_global_minimiser(trunc):
    rng = _rng(0)
    x = rng.normal(size=(3, 4, 25)).astype(np.float32)
    y = (1.7 * x + rng.normal(scale=0.3, size=x.shape) + (rng.random(x.shape) < 0.2) * 5).astype(np.float32)
    w = rng.random(x.shape).astype(np.float32)
    a, loss, index = align(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(w), trunc)
    assert a.shape == loss.shape == index.shape == (3, 4)
    x64, y64, w64 = (v.astype(np.float64) for v in (x, y, w))
    for i, j in itertools.product(range(3), range(4)):
        cands = y64[i, j] / x64[i, j]
        best = _objective(cands, x64[i, j], y64[i, j], w64[i, j], trunc).min()
        # a dense grid never beats the candidate minimum (piecewise linear objective)
        grid = np.linspace(cands.min() - 1, cands.max() + 1, 20001)
        assert _objective(grid, x64[i, j], y64[i, j], w64[i, j], trunc).min() >= best * (1 - 1e-9)
        got = _objective(a[i, j].item(), x64[i, j], y64[i, j], w64[i, j], trunc)
        assert got <= best * (1 + 1e-5) + 1e-6
        assert abs(loss[i, j].item() - got) <= 1e-4 * max(1.0, got)
        k = index[i, j].item()
        assert a[i, j].item() == pytest.approx(y[i, j, k] / x[i, j, k], rel=1e-6)


def test_align_scalar_trunc_tensor_and_depth_scale():
    rng = _rng(1)
    x = torch.from_numpy(rng.random((2, 30)).astype(np.float32) + 0.5)
    y = 2.5 * x + torch.from_numpy(rng.normal(scale=0.05, size=(2, 30)).astype(np.float32))
    w = torch.ones_like(x)
    a_float = align(x, y, w, 0.2)[0]
    a_tensor = align(x, y, w, torch.full((2, 30), 0.2))[0]
    np.testing.assert_array_equal(a_float.numpy(), a_tensor.numpy())
    np.testing.assert_array_equal(align_depth_scale(x, y, w, 0.2).numpy(), a_float.numpy())
    np.testing.assert_allclose(align_depth_scale(x, y, None).numpy(), [2.5, 2.5], rtol=0.02)
    with pytest.raises(GeometryError):
        align(x[:, :0], y[:, :0], w[:, :0])


# ----------------------------------------------------------------------------------------------------------------
# anchored scale + shift problems: brute force over (anchor, candidate) pairs
# ----------------------------------------------------------------------------------------------------------------


def _depth_affine_bruteforce(src, tgt, w, trunc):
    best = np.inf
    n = src.shape[0]
    for i, j in itertools.product(range(n), range(n)):
        if w[i] <= 0 or src[j] == src[i]:
            continue
        scale = (tgt[j] - tgt[i]) / (src[j] - src[i])
        shift = tgt[i] - scale * src[i]
        err = w * np.abs(scale * src + shift - tgt)
        best = min(best, (np.minimum(err, trunc) if trunc is not None else err).sum())
    return best


@pytest.mark.parametrize("trunc", [None, 0.5])
def test_align_depth_affine_bruteforce(trunc):
    rng = _rng(2)
    src = rng.random((3, 14)) * 3 + 1
    tgt = 0.8 * src - 0.4 + rng.normal(scale=0.05, size=src.shape) + (rng.random(src.shape) < 0.25) * 3
    w = rng.random(src.shape)
    w[1, :5] = 0  # zero weights: never anchors, ignored in the loss
    t = lambda v: torch.from_numpy(v.astype(np.float32))  # noqa: E731
    scale, shift = align_depth_affine(t(src), t(tgt), t(w), trunc)
    assert scale.shape == shift.shape == (3,)
    s32, g32, w32 = (v.astype(np.float32).astype(np.float64) for v in (src, tgt, w))
    for b in range(3):
        err = w32[b] * np.abs(scale[b].item() * s32[b] + shift[b].item() - g32[b])
        got = (np.minimum(err, trunc) if trunc is not None else err).sum()
        best = _depth_affine_bruteforce(s32[b], g32[b], w32[b], trunc)
        assert got <= best * (1 + 1e-5) + 1e-5, (b, got, best)
    # rows without positive weight give zeros
    scale0, shift0 = align_depth_affine(t(src[:1]), t(tgt[:1]), torch.zeros(1, 14), trunc)
    assert scale0.item() == 0.0 and shift0.item() == 0.0


def _points_bruteforce(src, tgt, w, trunc, z_only):
    n = src.shape[0]
    best = np.inf
    for i in range(n):
        if w[i] <= 0:
            continue
        anchor_s = src[i] * (np.array([0, 0, 1.0]) if z_only else 1.0)
        anchor_t = tgt[i] * (np.array([0, 0, 1.0]) if z_only else 1.0)
        for j, c in itertools.product(range(n), range(3)):
            ds = src[j, c] - anchor_s[c]
            if ds == 0:
                continue
            scale = (tgt[j, c] - anchor_t[c]) / ds
            shift = anchor_t - scale * anchor_s
            err = w[:, None] * np.abs(scale * src + shift - tgt)
            best = min(best, (np.minimum(err, trunc) if trunc is not None else err).sum())
    return best


@pytest.mark.parametrize("z_only", [True, False])
@pytest.mark.parametrize("trunc", [None, 0.4])
def test_align_points_scale_shift_bruteforce(z_only, trunc):
    rng = _rng(3)
    src = rng.normal(size=(2, 9, 3))
    src[..., 2] += 4
    offset = np.array([0.0, 0.0, 0.7]) if z_only else np.array([0.3, -0.2, 0.7])
    tgt = 1.3 * src + offset + rng.normal(scale=0.05, size=src.shape) + (rng.random(src.shape) < 0.15) * 2
    w = rng.random((2, 9))
    fn = align_points_scale_z_shift if z_only else align_points_scale_xyz_shift
    t = lambda v: torch.from_numpy(v.astype(np.float32))  # noqa: E731
    scale, shift = fn(t(src), t(tgt), t(w), trunc)
    assert scale.shape == (2,) and shift.shape == (2, 3)
    if z_only:
        np.testing.assert_array_equal(shift[:, :2].numpy(), 0.0)
    s32, g32, w32 = (v.astype(np.float32).astype(np.float64) for v in (src, tgt, w))
    for b in range(2):
        err = w32[b][:, None] * np.abs(scale[b].item() * s32[b] + shift[b].numpy().astype(np.float64) - g32[b])
        got = (np.minimum(err, trunc) if trunc is not None else err).sum()
        best = _points_bruteforce(s32[b], g32[b], w32[b], trunc, z_only)
        assert got <= best * (1 + 1e-5) + 1e-5, (b, got, best)


def test_align_points_batched_equals_loop():
    rng = _rng(4)
    src = torch.from_numpy(rng.normal(size=(2, 3, 20, 3)).astype(np.float32))
    tgt = 0.7 * src + torch.from_numpy(rng.normal(scale=0.1, size=src.shape).astype(np.float32))
    w = torch.from_numpy(rng.random((2, 3, 20)).astype(np.float32))
    for fn in (align_points_scale_z_shift, align_points_scale_xyz_shift):
        scale, shift = fn(src, tgt, w, 0.5)
        for i, j in itertools.product(range(2), range(3)):
            s_ij, t_ij = fn(src[i, j], tgt[i, j], w[i, j], 0.5)
            assert s_ij.item() == scale[i, j].item()
            np.testing.assert_array_equal(t_ij.numpy(), shift[i, j].numpy())


def test_align_points_scale_and_shift_only_solvers():
    rng = _rng(5)
    src = rng.normal(size=(2, 15, 3)).astype(np.float32)
    tgt = (src * 1.0 + np.array([0.2, -0.1, 0.5]) + rng.normal(scale=0.02, size=src.shape)).astype(np.float32)
    w = rng.random((2, 15)).astype(np.float32)
    ts, tt, tw = (torch.from_numpy(v) for v in (src, tgt, w))
    # scale only == align on the flattened coordinates (brute force over candidates)
    scale = align_points_scale(ts, tt, tw)
    for b in range(2):
        x, y, ww = src[b].reshape(-1), tgt[b].reshape(-1), np.repeat(w[b], 3)
        best = _objective(y / x, x, y, ww, None).min()
        assert _objective(scale[b].item(), x, y, ww, None) <= best * (1 + 1e-6)
    # z shift only: weighted median of tgt_z - src_z
    dz = align_points_z_shift(ts, tt, tw)
    assert dz.shape == (2, 3)
    np.testing.assert_array_equal(dz[:, :2].numpy(), 0.0)
    for b in range(2):
        diff = (tgt[b, :, 2] - src[b, :, 2]).astype(np.float64)
        best = (w[b][:, None] * np.abs(diff[:, None] - diff[None, :])).sum(0).min()
        assert (w[b] * np.abs(dz[b, 2].item() - diff)).sum() <= best * (1 + 1e-6) + 1e-7
    # xyz shift: per coordinate
    dxyz = align_points_xyz_shift(ts, tt, tw, 0.1)
    assert dxyz.shape == (2, 3)
    for b, c in itertools.product(range(2), range(3)):
        diff = (tgt[b, :, c] - src[b, :, c]).astype(np.float64)
        obj = lambda d: np.minimum(w[b] * np.abs(d - diff), 0.1).sum()  # noqa: E731
        best = min(obj(d) for d in diff)
        assert obj(dxyz[b, c].item()) <= best * (1 + 1e-6) + 1e-7
    np.testing.assert_allclose(dxyz.numpy().mean(0), [0.2, -0.1, 0.5], atol=0.02)


def test_align_affine_lstsq_matches_numpy():
    rng = _rng(6)
    x = rng.random((3, 40))
    y = 2 * x + 1 + rng.normal(scale=0.1, size=x.shape)
    w = rng.random((3, 40))
    a, b = align_affine_lstsq(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(w))
    for i in range(3):
        lhs = np.stack([np.sqrt(w[i]) * x[i], np.ones(40)], -1)
        sol = np.linalg.lstsq(lhs, np.sqrt(w[i]) * y[i], rcond=None)[0]
        np.testing.assert_allclose([a[i].item(), b[i].item()], sol, rtol=1e-9)
    a1, b1 = align_affine_lstsq(torch.from_numpy(x), torch.from_numpy(y))
    np.testing.assert_allclose(a1.numpy(), 2, atol=0.15)
    np.testing.assert_allclose(b1.numpy(), 1, atol=0.15)


def test_align_affine_lstsq_keeps_small_columns_on_many_points():
    """307,200 float32 disparities 30x too small: the fit must still find scale 30, shift 0 (the CPU's default
    rank-revealing driver used to drop the column and return scale 0.003)."""
    gen = torch.Generator().manual_seed(0)
    depth = 0.5 + 9.5 * torch.rand(480 * 640, generator=gen)
    for scale in (0.37, 30.0, 1000.0):
        a, b = align_affine_lstsq(1 / (depth * scale), 1 / depth)
        assert a.dtype == torch.float32
        assert a.item() == pytest.approx(scale, rel=1e-5)
        assert abs(b.item()) < 1e-6


def test_alignment_shape_errors():
    p = torch.zeros(2, 5, 3)
    with pytest.raises(GeometryError, match="weight"):
        align_points_scale_z_shift(p, p, torch.ones(2, 4))
    with pytest.raises(GeometryError, match=r"\(\.\.\., N, 3\)"):
        align_points_scale_xyz_shift(torch.zeros(2, 5, 2), torch.zeros(2, 5, 2), None)
    with pytest.raises(GeometryError):
        align_depth_affine(torch.zeros(2, 5), torch.zeros(2, 6), torch.ones(2, 5))
    with pytest.raises(GeometryError):
        align(torch.zeros(2, 5), torch.zeros(3, 4), None)
