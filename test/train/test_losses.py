"""Tests of moge2_ros.train.losses and moge2_ros.geometry.resize.

Expected values are computed independently here (numpy, float64 unless the definition is float32) from the
official definitions (microsoft/MoGe ``moge/train/losses.py``, utils3d ``masked_nearest_resize`` / ``angle_between``
at the commit MoGe pins), on small inputs whose answer is known in closed form.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from moge2_ros.errors import GeometryError
from moge2_ros.geometry.alignment import align_points_scale_z_shift
from moge2_ros.geometry.resize import masked_nearest_resize
from moge2_ros.train import (
    LOSS_SET_LABELS,
    OFFICIAL_LOSS_SETS,
    LossError,
    LossSet,
    LossTerm,
    affine_invariant_global_loss,
    affine_invariant_local_loss,
    anchor_sampling_weight,
    angle_between,
    compute_instance_losses,
    edge_loss,
    loss_set_for_label,
    mask_bce_loss,
    metric_scale_loss,
    normal_loss,
    normal_map_loss,
    sample_patch_anchors,
    scale_loss_target,
)

DEG = math.pi / 180


def _smooth_np(err: np.ndarray, beta: float) -> np.ndarray:
    if beta == 0:
        return err
    return np.where(err < beta, 0.5 * err**2 / beta, err - 0.5 * beta)


def _plane(height: int, width: int, depth: float = 2.0, tilt: float = 0.0) -> np.ndarray:
    """Point map of a (tilted) plane seen by a pinhole camera with focal 1 (pixel pitch 0.05)."""
    v, u = np.meshgrid((np.arange(height) - height / 2) * 0.05, (np.arange(width) - width / 2) * 0.05, indexing="ij")
    z = depth + tilt * u
    return np.stack([u * z, v * z, z], axis=-1)


def _affine_pair(height: int, width: int, seed: int, scale: float = 2.0, shift: float = 0.5):
    """(pred, gt) with gt = scale * pred + (0, 0, shift) exactly (in float64, then float32)."""
    rng = np.random.default_rng(seed)
    gt = _plane(height, width) + rng.uniform(-0.05, 0.05, (height, width, 3))
    gt[..., 2] += rng.uniform(0.0, 0.1, (height, width))
    pred = (gt - np.array([0.0, 0.0, shift])) / scale
    return pred.astype(np.float32), gt.astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# masked_nearest_resize
# ----------------------------------------------------------------------------------------------------------------


def _resize_reference(mask: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Loop implementation of the pinned utils3d semantics (NOTES.md section 10) for one (H, W) mask.

    The float32 target centres are taken from torch.linspace like utils3d's uv_map; window placement, distances,
    tie-breaking and the no-valid rule are computed here independently.
    """
    height, width = mask.shape
    th, tw = size

    def axis(src: int, tgt: int):
        f = max(1.0, src / tgt)
        uv = torch.linspace(0.5 / tgt, 1 - 0.5 / tgt, tgt, dtype=torch.float32).numpy()
        centre = uv * np.float32(src)
        start = np.round(centre - np.float32(f / 2)).astype(int)  # numpy rounds half to even too
        return centre, start, math.ceil(f)

    cy, sy, kh = axis(height, th)
    cx, sx, kw = axis(width, tw)
    rows = np.zeros((th, tw), int)
    cols = np.zeros((th, tw), int)
    out_mask = np.zeros((th, tw), bool)
    for ti in range(th):
        for tj in range(tw):
            best, best_d = None, np.float32(np.inf)
            first = (sy[ti], sx[tj])
            for a in range(kh):
                for b in range(kw):
                    r, c = sy[ti] + a, sx[tj] + b
                    if not (0 <= r < height and 0 <= c < width and mask[r, c]):
                        continue
                    d = (np.float32(c + 0.5) - cx[tj]) ** 2 + (np.float32(r + 0.5) - cy[ti]) ** 2
                    if d < best_d:  # strict: the first of equal distances wins
                        best, best_d = (r, c), d
            if best is None:
                r, c = first
                best = (r, c) if (0 <= r < height and 0 <= c < width) else (0, 0)
            else:
                out_mask[ti, tj] = True
            rows[ti, tj], cols[ti, tj] = best
    return rows, cols, out_mask


@pytest.mark.parametrize(
    "shape,size",
    [((12, 16), (4, 4)), ((13, 17), (5, 3)), ((7, 9), (2, 2)), ((6, 5), (11, 8)), ((9, 9), (9, 9)), ((5, 40), (3, 7))],
)
def test_masked_nearest_resize_matches_loop_reference(shape, size):
    rng = np.random.default_rng(sum(shape) + 7 * sum(size))
    masks = rng.random((2, *shape)) < 0.35
    values = rng.normal(size=(2, *shape, 3)).astype(np.float32)
    out, out_mask, (bi, ri, ci) = masked_nearest_resize(
        torch.from_numpy(values), mask=torch.from_numpy(masks), size=size, return_index=True
    )
    assert out.shape == (2, *size, 3) and out_mask.shape == (2, *size) and out_mask.dtype == torch.bool
    for b in range(2):
        rows, cols, want_mask = _resize_reference(masks[b], size)
        np.testing.assert_array_equal(ri[b].numpy(), rows)
        np.testing.assert_array_equal(ci[b].numpy(), cols)
        np.testing.assert_array_equal(out_mask[b].numpy(), want_mask)
        np.testing.assert_array_equal(out[b].numpy(), values[b][rows, cols])
    assert bi.shape == (2, 1, 1)


def test_masked_nearest_resize_hand_checked_ties_and_empty_windows():
    # 4x4 -> 2x2: windows are the 2x2 blocks; the four pixel centres of a block are equidistant from its centre, so
    # the first valid pixel in row-major order wins.
    mask = torch.tensor(
        [
            [0, 1, 0, 0],
            [1, 1, 0, 0],
            [0, 0, 0, 0],
            [0, 0, 0, 1],
        ],
        dtype=torch.bool,
    )
    values = torch.arange(16.0).reshape(4, 4)
    out, out_mask, (rows, cols) = masked_nearest_resize(values, mask=mask, size=(2, 2), return_index=True)
    assert out_mask.tolist() == [[True, False], [False, True]]
    assert rows.tolist() == [[0, 0], [2, 3]] and cols.tolist() == [[1, 2], [0, 3]]  # empty windows: first pixel
    assert out.tolist() == [[1.0, 2.0], [8.0, 15.0]]

    # 5 -> 2 along each axis: f = 2.5, k = 3; centres 1.25 and 3.75, window starts round(0) = 0 and
    # round(2.5) = 2 (half to even).  Second target window rows/cols 2..4; pixel 3 (centre 3.5) is nearest.
    mask = torch.zeros(5, 5, dtype=torch.bool)
    mask[2, 2] = mask[3, 3] = mask[4, 4] = True  # distances^2 from (3.75, 3.75): 2 * 1.25^2, 2 * 0.25^2, 2 * 0.75^2
    mask[1, 1] = True  # outside the second window; in the first one (rows 0..2) with distance 2 * 0.25^2
    out_mask, (rows, cols) = masked_nearest_resize(mask=mask, size=(2, 2), return_index=True)
    assert out_mask.tolist() == [[True, True], [True, True]]
    assert rows.tolist() == [[1, 2], [2, 3]] and cols.tolist() == [[1, 2], [2, 3]]

    # Upsampling never invents values: invalid sources stay invalid.
    mask = torch.tensor([[True, False]])
    out_mask, (rows, cols) = masked_nearest_resize(mask=mask, size=(2, 4), return_index=True)
    assert out_mask.tolist() == [[True, True, False, False]] * 2
    assert cols.tolist() == [[0, 0, 1, 1]] * 2 and rows.tolist() == [[0, 0, 0, 0]] * 2


def test_masked_nearest_resize_shapes_and_errors():
    mask = torch.ones(3, 2, 6, 8, dtype=torch.bool)
    a, b, m = masked_nearest_resize(torch.zeros(3, 2, 6, 8), torch.zeros(3, 2, 6, 8, 4, 5), mask=mask, size=(3, 4))
    assert a.shape == (3, 2, 3, 4) and b.shape == (3, 2, 3, 4, 4, 5) and m.shape == (3, 2, 3, 4) and m.all()
    with pytest.raises(GeometryError, match="mask's shape"):
        masked_nearest_resize(torch.zeros(6, 7), mask=torch.ones(6, 8, dtype=torch.bool), size=(2, 2))
    with pytest.raises(GeometryError, match="size"):
        masked_nearest_resize(mask=torch.ones(6, 8, dtype=torch.bool), size=(0, 2))


# ----------------------------------------------------------------------------------------------------------------
# global loss
# ----------------------------------------------------------------------------------------------------------------


def test_global_loss_exact_affine_is_zero():
    pred, gt = _affine_pair(10, 12, seed=0, scale=2.0, shift=0.5)
    loss, misc, scale = affine_invariant_global_loss(torch.from_numpy(pred), torch.from_numpy(gt), align_resolution=6)
    assert loss.shape == () and scale.shape == ()
    assert float(loss) < 1e-6
    assert float(scale) == pytest.approx(2.0, rel=1e-5)
    assert misc["delta"] == pytest.approx(1.0, abs=1e-6) and misc["truncated_error"] < 1e-5


@pytest.mark.parametrize("beta", [0.0, 0.05])
def test_global_loss_single_outlier_gives_its_truncated_contribution(beta):
    height, width = 8, 9
    pred, gt = _affine_pair(height, width, seed=1, scale=2.0, shift=0.5)
    gt[1, 2] = np.inf  # invalid pixel: excluded everywhere
    d = np.array([0.3, -0.2, 0.5])
    gt[3, 4] += d  # one outlier; the robust alignment must ignore it
    loss, misc, scale = affine_invariant_global_loss(
        torch.from_numpy(pred), torch.from_numpy(gt), align_resolution=8, beta=beta
    )
    assert float(scale) == pytest.approx(2.0, rel=1e-5)
    # Only the outlier contributes: smooth(|d| * w) with w = 1 / g_z (clamp at 10x the mean weight inactive).
    z = float(gt[3, 4, 2])
    want = _smooth_np(np.abs(d) / z, beta).sum() / (height * width * 3)
    assert float(loss) == pytest.approx(want, rel=1e-4, abs=1e-6)
    n_valid = height * width - 1
    err = np.linalg.norm(d) / z
    assert misc["truncated_error"] == pytest.approx(min(err, 1.0) / n_valid, rel=1e-3)
    assert misc["delta"] == pytest.approx(1.0, abs=1e-5)  # err < 1 for the outlier too

    # The same pixel excluded through `mask` (instead of inf) removes its contribution.
    mask = torch.ones(height, width, dtype=torch.bool)
    mask[3, 4] = False
    loss_masked, _, _ = affine_invariant_global_loss(
        torch.from_numpy(pred), torch.from_numpy(gt), mask, align_resolution=8, beta=beta
    )
    assert float(loss_masked) < 1e-6


def test_global_loss_weight_clamped_at_ten_times_mean():
    height, width = 6, 6
    pred, gt = _affine_pair(height, width, seed=2, scale=1.0, shift=0.0)
    gt[2, 2, 2] = 1e-3  # tiny depth ...
    pred[2, 2] = gt[2, 2]  # ... consistent with the alignment
    d = np.array([0.05, 0.0, 0.0])
    gt[2, 2] += d  # error at the tiny depth (truncated in the alignment): 1 / z would dominate without the clamp
    loss, _, scale = affine_invariant_global_loss(torch.from_numpy(pred), torch.from_numpy(gt), align_resolution=6)
    assert float(scale) == pytest.approx(1.0, rel=1e-5)
    w = 1.0 / np.maximum(gt[..., 2].astype(np.float64), 1e-5)
    cap = 10.0 * w.mean() / (1 + 1e-7)
    assert w[2, 2] > cap  # the clamp is active
    want = np.abs(d).sum() * cap / (height * width * 3)
    assert float(loss) == pytest.approx(want, rel=1e-4)


def test_global_loss_negative_scale_is_invalid():
    pred, gt = _affine_pair(6, 7, seed=3, scale=-2.0, shift=4.0)  # only a negative scale fits
    loss, misc, scale = affine_invariant_global_loss(torch.from_numpy(pred), torch.from_numpy(gt), align_resolution=7)
    assert float(scale) == 0.0 and float(loss) == 0.0


def test_global_loss_batched_equals_per_instance_and_has_gradient():
    pairs = [_affine_pair(8, 10, seed=s, scale=1.5 + s) for s in (4, 5)]
    rng = np.random.default_rng(0)
    preds = torch.from_numpy(np.stack([p for p, _ in pairs]) + rng.normal(0, 0.02, (2, 8, 10, 3)).astype(np.float32))
    gts = torch.from_numpy(np.stack([g for _, g in pairs]))
    preds.requires_grad_(True)
    loss, _, scale = affine_invariant_global_loss(preds, gts, align_resolution=5)
    assert loss.shape == (2,) and scale.shape == (2,) and not scale.requires_grad
    for b in range(2):
        loss_b, _, scale_b = affine_invariant_global_loss(preds[b], gts[b], align_resolution=5)
        torch.testing.assert_close(loss[b], loss_b)
        torch.testing.assert_close(scale[b], scale_b)
    loss.sum().backward()
    assert preds.grad is not None and torch.isfinite(preds.grad).all() and preds.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------------------------
# local loss
# ----------------------------------------------------------------------------------------------------------------


def test_anchor_sampling_weight_matches_reference_with_seeded_draws():
    height, width, radius, num_test = 9, 11, 2, 64
    rng = np.random.default_rng(10)
    points = rng.normal(size=(1, height, width, 3)).astype(np.float32)
    mask = rng.random((1, height, width)) < 0.8
    radius_3d = np.full((1, height, width), 1.2, np.float32)
    got = anchor_sampling_weight(
        torch.from_numpy(points), torch.from_numpy(mask), radius, torch.from_numpy(radius_3d),
        num_test=num_test, generator=torch.Generator().manual_seed(123),
    )
    g = torch.Generator().manual_seed(123)
    di = torch.randint(-radius, radius + 1, (height, width, num_test), generator=g).numpy()
    dj = torch.randint(-radius, radius + 1, (height, width, num_test), generator=g).numpy()
    p = points[0].astype(np.float64)
    want = np.zeros((height, width))
    for i in range(height):
        for j in range(width):
            if not mask[0, i, j]:
                continue
            count = 0
            for t in range(num_test):
                r, c = i + di[i, j, t], j + dj[i, j, t]
                if 0 <= r < height and 0 <= c < width and mask[0, r, c]:
                    count += np.linalg.norm(p[r, c] - p[i, j]) <= radius_3d[0, i, j]
            want[i, j] = 1.0 / max(count, 1)
    want /= want.sum() + 1e-7
    np.testing.assert_allclose(got[0].numpy(), want, rtol=1e-5, atol=1e-9)


def test_patch_anchor_sampling_is_seeded_and_follows_official_rng_order():
    height, width, level, num_patches = 12, 14, 4, 10
    rng = np.random.default_rng(11)
    gt = torch.from_numpy(rng.normal(size=(2, height, width, 3)).astype(np.float32))
    gt[..., 2] = gt[..., 2].abs() + 1
    mask = torch.from_numpy(rng.random((2, height, width)) < 0.7)
    focal = torch.tensor([0.6, 0.9])
    r, b, i, j = sample_patch_anchors(gt, mask, focal, level, num_patches, torch.Generator().manual_seed(5))
    assert r == math.ceil(0.5 / level * math.hypot(height, width))
    assert b.shape == i.shape == j.shape == (2 * num_patches,)
    assert mask[b, i, j].all()  # anchors are valid pixels
    # Same seed -> same anchors; the draws are randint, randint, multinomial in that order.
    g = torch.Generator().manual_seed(5)
    weights = anchor_sampling_weight(gt, mask, r, 0.5 / level / focal[:, None, None] * gt[..., 2], generator=g)
    where = torch.where(mask)
    sel = torch.multinomial(weights[where], 2 * num_patches, replacement=True, generator=g)
    assert torch.equal(b, where[0][sel]) and torch.equal(i, where[1][sel]) and torch.equal(j, where[2][sel])
    # The global RNG path (generator=None) is the same stream as a generator with the same seed.
    torch.manual_seed(5)
    _, b2, i2, j2 = sample_patch_anchors(gt, mask, focal, level, num_patches)
    assert torch.equal(b, b2) and torch.equal(i, i2) and torch.equal(j, j2)


def _noisy_pair(height: int, width: int, seed: int):
    rng = np.random.default_rng(seed)
    gt = _plane(height, width, tilt=0.5)
    pred = gt / 3 + rng.normal(0, 0.01, gt.shape)
    return torch.from_numpy(pred.astype(np.float32)), torch.from_numpy(gt.astype(np.float32))


def test_local_loss_reproducible_with_generator():
    pred, gt = _noisy_pair(16, 18, seed=12)
    kwargs = dict(level=4, align_resolution=6, num_patches=6)
    a = affine_invariant_local_loss(pred, gt, None, 0.3, 3.0, generator=torch.Generator().manual_seed(1), **kwargs)
    b = affine_invariant_local_loss(pred, gt, None, 0.3, 3.0, generator=torch.Generator().manual_seed(1), **kwargs)
    c = affine_invariant_local_loss(pred, gt, None, 0.3, 3.0, generator=torch.Generator().manual_seed(2), **kwargs)
    assert a[1] and set(a[1]) == {"truncated_error", "delta"}
    assert torch.equal(a[0], b[0]) and a[1] == b[1]
    assert not torch.equal(a[0], c[0])
    torch.manual_seed(1)
    d = affine_invariant_local_loss(pred, gt, None, 0.3, 3.0, **kwargs)
    assert torch.equal(a[0], d[0])


def test_local_loss_exact_affine_is_zero():
    height, width = 14, 16
    pred, gt = _affine_pair(height, width, seed=13, scale=2.0, shift=0.5)
    loss, misc = affine_invariant_local_loss(
        torch.from_numpy(pred), torch.from_numpy(gt), None, 0.3, 2.0, level=4, align_resolution=6, num_patches=8,
        generator=torch.Generator().manual_seed(0),
    )
    assert misc and float(loss) < 1e-6 and misc["delta"] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("global_scale,tiny_depth", [(2.0, False), (None, False), (2.0, True)])
def test_local_loss_single_outlier_with_patches_covering_the_image(global_scale, tiny_depth):
    # level 0.25 and focal 0.01 make radius_2d = ceil(2 * diagonal) and a 3-D radius far larger than the scene, so
    # every patch is the whole image (plus out-of-image window pixels that count as zero): the expected loss does
    # not depend on the random anchors.
    height, width, num_patches = 10, 12, 5
    pred, gt = _affine_pair(height, width, seed=14, scale=2.0, shift=0.5)
    if tiny_depth:  # depth below 0.1 x the harmonic mean: the weight 1 / max(z, 0.1 hm) is clamped
        gt[4, 5, 2] = 0.05
        pred[4, 5] = (gt[4, 5] - np.array([0.0, 0.0, 0.5])) / 2.0
    d = np.array([0.02, 0.01, -0.03 * (not tiny_depth)])
    gt[4, 5] += d
    loss, misc = affine_invariant_local_loss(
        torch.from_numpy(pred), torch.from_numpy(gt), None, 0.01, global_scale, level=0.25, align_resolution=8,
        num_patches=num_patches, generator=torch.Generator().manual_seed(3),
    )
    radius = math.ceil(0.5 / 0.25 * math.hypot(height, width))
    window = (2 * radius + 1) ** 2
    z = gt[..., 2].astype(np.float64)
    harmonic = 1 / ((1 / (z + 1e-7)).mean() / (1 + 1e-7) + 1e-7)
    weight = 1 / max(z[4, 5], 0.1 * harmonic)
    assert (z[4, 5] < 0.1 * harmonic) == tiny_depth
    want = np.abs(d).sum() * weight / (window * 3)  # per patch; sum over patches / num_patches
    assert float(loss) == pytest.approx(want, rel=1e-3)
    assert misc["delta"] == pytest.approx(1.0, abs=1e-4)  # weighted mean with eps over a sparse window


def test_local_loss_patch_validity_against_global_scale():
    pred, gt = _affine_pair(10, 12, seed=15, scale=2.0, shift=0.5)
    pred, gt = torch.from_numpy(pred), torch.from_numpy(gt)
    gt[4, 5, 0] += 0.05
    kw = dict(level=0.25, align_resolution=6, num_patches=4)
    kept, _ = affine_invariant_local_loss(pred, gt, None, 1.0, 2.0, generator=torch.Generator().manual_seed(0), **kw)
    assert float(kept) > 0
    # s_local / s_global = 0.02 is outside (0.1, 10): every patch is rejected; a non-positive global scale too.
    for bad in (100.0, 0.0):
        loss, misc = affine_invariant_local_loss(
            pred, gt, None, 1.0, bad, generator=torch.Generator().manual_seed(0), **kw
        )
        assert float(loss) == 0.0 and misc["delta"] == 0.0


def test_local_loss_empty_patches():
    # 16x16, level 16: radius_2d = ceil(0.5 / 16 * 22.6) = 1 -> 3x3 = 9 < 32 points per patch: all dropped.
    pred, gt = _noisy_pair(16, 16, seed=16)
    loss, misc = affine_invariant_local_loss(pred, gt, None, 0.8, 3.0, level=16, align_resolution=4, num_patches=8)
    assert misc == {} and loss.shape == () and loss.dtype == pred.dtype and float(loss) == 0.0
    # Batched: one zero per instance.  No valid pixel at all: same result, nothing drawn.
    loss, misc = affine_invariant_local_loss(
        pred.expand(2, -1, -1, -1), gt.expand(2, -1, -1, -1), None, 0.8, None, level=16, align_resolution=4
    )
    assert misc == {} and loss.shape == (2,) and not loss.any()
    loss, misc = affine_invariant_local_loss(pred, torch.full_like(gt, torch.inf), None, 0.8, None, level=4)
    assert misc == {} and float(loss) == 0.0


# ----------------------------------------------------------------------------------------------------------------
# edge / normal / normal map / mask / metric scale
# ----------------------------------------------------------------------------------------------------------------


def _angle_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1) + 1e-12, (a * b).sum(-1))


def test_edge_and_normal_loss_known_angles():
    height, width, theta = 6, 8, 30 * DEG
    gt = _plane(height, width, tilt=0.0)  # fronto-parallel plane z = 2
    u = gt[..., 0] / gt[..., 2]
    v = gt[..., 1] / gt[..., 2]
    # Predicted plane rotated by theta about the vertical axis: z = 2 + tan(theta) x, points on the same rays.
    z = 2.0 / (1 - math.tan(theta) * u)
    pred = np.stack([u * z, v * z, z], axis=-1)
    p, g = torch.from_numpy(pred), torch.from_numpy(gt)

    # Normals of every 2x2 block differ by exactly theta: loss = 4 * smooth(theta) / (4 max(H, W)).
    loss, misc = normal_loss(p, g)
    assert misc == {} and loss.shape == ()
    assert float(loss) == pytest.approx((theta - 1.5 * DEG) / max(height, width), rel=1e-6)

    # Identical maps: every angle is clamped up to the minimum and smoothed quadratically.
    loss, _ = normal_loss(g, g)
    assert float(loss) == pytest.approx(0.5 * DEG**2 / (3 * DEG) / max(height, width), rel=1e-5)
    loss, _ = edge_loss(g, g)
    assert float(loss) == pytest.approx(0.5 * (0.1 * DEG) ** 2 / (3 * DEG) / max(height, width), rel=1e-4)

    # Edge loss: vertical differences keep their direction (angle -> 0.1 deg); horizontal ones turn by theta'
    # (per position); computed here from the definition.
    rows_pred, rows_gt = pred[:-1] - pred[1:], gt[:-1] - gt[1:]
    cols_pred, cols_gt = pred[:, :-1] - pred[:, 1:], gt[:, :-1] - gt[:, 1:]
    a_rows = _smooth_np(np.clip(_angle_np(rows_pred, rows_gt), 0.1 * DEG, 90 * DEG), 3 * DEG)
    a_cols = _smooth_np(np.clip(_angle_np(cols_pred, cols_gt), 0.1 * DEG, 90 * DEG), 3 * DEG)
    assert np.all(a_cols > 20 * DEG)
    want = (a_rows.mean() + a_cols.mean()) / (2 * max(height, width))
    loss, _ = edge_loss(p, g)
    assert float(loss) == pytest.approx(want, rel=1e-6)


def _normal_loss_np(pred: np.ndarray, gt: np.ndarray) -> float:
    valid = np.isfinite(gt).all(-1)
    gt = np.where(valid[..., None], gt, 1.0)

    def corners(p):
        lu, ru, ld, rd = p[:-1, :-1], p[:-1, 1:], p[1:, :-1], p[1:, 1:]
        return [np.cross(ru - rd, ld - rd), np.cross(lu - ru, rd - ru), np.cross(ld - lu, ru - lu),
                np.cross(rd - ld, lu - ld)]

    m = [valid[:-1, :-1], valid[:-1, 1:], valid[1:, :-1], valid[1:, 1:]]  # lu, ru, ld, rd
    masks = [m[1] & m[2] & m[3], m[0] & m[3] & m[1], m[2] & m[1] & m[0], m[3] & m[0] & m[2]]
    total = 0.0
    for a, b, mk in zip(corners(pred), corners(gt), masks):
        total = total + mk * _smooth_np(np.clip(_angle_np(a, b), DEG, 90 * DEG), 3 * DEG)
    return float(np.mean(total) / (4 * max(pred.shape[:2])))


def _edge_loss_np(pred: np.ndarray, gt: np.ndarray) -> float:
    valid = np.isfinite(gt).all(-1)
    gt = np.where(valid[..., None], gt, 1.0)
    out = 0.0
    vertical = ((slice(None, -1),), (slice(1, None),))
    horizontal = ((slice(None), slice(None, -1)), (slice(None), slice(1, None)))
    for sl_a, sl_b in (vertical, horizontal):
        m = valid[sl_a] & valid[sl_b]
        ang = _angle_np(pred[sl_a] - pred[sl_b], gt[sl_a] - gt[sl_b])
        out += (m * _smooth_np(np.clip(ang, 0.1 * DEG, 90 * DEG), 3 * DEG)).mean()
    return out / (2 * max(pred.shape[:2]))


def test_edge_and_normal_loss_random_against_reference():
    rng = np.random.default_rng(20)
    gt = _plane(7, 9, tilt=0.3) + rng.normal(0, 0.02, (7, 9, 3))
    gt[2, 3] = np.inf
    gt[5, 0, 1] = np.inf
    pred = gt.copy()
    pred[np.isinf(pred)] = 7.0
    pred = pred * 0.5 + rng.normal(0, 0.03, pred.shape)
    p, g = torch.from_numpy(pred), torch.from_numpy(gt)
    assert float(normal_loss(p, g)[0]) == pytest.approx(_normal_loss_np(pred, gt), rel=1e-9)
    assert float(edge_loss(p, g)[0]) == pytest.approx(_edge_loss_np(pred, gt), rel=1e-9)
    # A mask excludes exactly like inf does.
    mask = torch.ones(7, 9, dtype=torch.bool)
    mask[1, 1] = False
    g2 = g.clone()
    g2[1, 1] = torch.inf
    torch.testing.assert_close(edge_loss(p, g, mask)[0], edge_loss(p, g2)[0])
    torch.testing.assert_close(normal_loss(p, g, mask)[0], normal_loss(p, g2)[0])
    # Batched: edge loss per instance, normal loss a single mean.
    pb, gb = torch.stack([p, p * 2]), torch.stack([g, g])
    assert edge_loss(pb, gb)[0].shape == (2,) and normal_loss(pb, gb)[0].shape == ()


def test_angle_between_and_normal_map_loss_known_vectors():
    pred = torch.tensor([[[1.0, 0, 0], [1, 0, 0], [0, 0, 2], [0, 3, 0], [1, 1, 1]]])
    gt = torch.tensor([[[0.0, 1, 0], [5, 5, 0], [0, 0, 1], [0, -1, 0], [torch.inf, 0, 0]]])
    ang = angle_between(pred, gt)
    np.testing.assert_allclose(ang[0, :4].numpy(), [math.pi / 2, math.pi / 4, 0.0, math.pi], atol=1e-6)
    assert 0 < float(ang[0, 2]) <= 1e-7  # atan2(0 + 1e-8, 1)
    loss, misc = normal_map_loss(pred, gt)
    want = ((math.pi / 2) ** 2 + (math.pi / 4) ** 2 + 1e-16 + math.pi**2 + 0.0) / 5  # inf ground truth counts 0
    assert misc == {} and loss.shape == () and float(loss) == pytest.approx(want, rel=1e-5)
    # sin is the smaller rejection norm: accurate for nearly parallel vectors where acos(dot) is not.
    a = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    b = torch.tensor([1.0, 1e-5, 0.0], dtype=torch.float64)
    assert float(angle_between(a, b)) == pytest.approx(math.atan2(1e-5, 1.0) + 1e-8, rel=1e-6)


def test_mask_bce_loss_formula():
    rng = np.random.default_rng(30)
    prob = rng.uniform(0.01, 0.99, (2, 5, 6)).astype(np.float32)
    prob[0, 0, 0], prob[0, 0, 1] = 0.0, 1.0  # log clamps at -100
    pos = rng.random((2, 5, 6)) < 0.4
    neg = ~pos & (rng.random((2, 5, 6)) < 0.5)
    pos[0, 0, 0] = True
    neg[0, 0, 1] = True
    pos[0, 0, 1] = False
    p = prob.astype(np.float64)
    bce = -(pos * np.maximum(np.log(p, where=p > 0, out=np.full_like(p, -np.inf)), -100)
            + (~pos) * np.maximum(np.log(1 - p, where=p < 1, out=np.full_like(p, -np.inf)), -100))
    want = ((pos | neg) * bce).mean(axis=(-2, -1))
    loss, misc = mask_bce_loss(torch.from_numpy(prob), torch.from_numpy(pos), torch.from_numpy(neg))
    assert misc == {} and loss.shape == (2,)
    np.testing.assert_allclose(loss.numpy(), want, rtol=1e-5)
    assert float(mask_bce_loss(torch.from_numpy(prob), torch.from_numpy(pos), torch.from_numpy(neg))[0][0]) > 100 / 30


def test_metric_scale_loss_formula_and_gradient():
    pred = torch.tensor([2.0, 0.5, 1.0, 3.0], dtype=torch.float64, requires_grad=True)
    gt = torch.tensor([1.0, 0.5, 0.0, -1.0], dtype=torch.float64)
    loss, misc = metric_scale_loss(pred, gt)
    assert misc == {}
    torch.testing.assert_close(loss, torch.tensor([math.log(2.0) ** 2, 0.0, 0.0, 0.0], dtype=torch.float64))
    loss.sum().backward()
    torch.testing.assert_close(pred.grad, torch.tensor([2 * math.log(2.0) / 2.0, 0, 0, 0], dtype=torch.float64))


def test_metric_scale_loss_stops_gradient_to_points():
    pred, gt = _affine_pair(8, 8, seed=40, scale=2.0, shift=0.5)
    pred_points = torch.from_numpy(pred).requires_grad_(True)
    pred_scale = torch.tensor(1.3, requires_grad=True)
    _, _, s_star = affine_invariant_global_loss(pred_points, torch.from_numpy(gt), align_resolution=8)
    target = scale_loss_target(s_star)
    assert not target.requires_grad and float(target) == pytest.approx(2.0, rel=1e-5)
    loss, _ = metric_scale_loss(pred_scale, target)
    loss.backward()
    assert pred_scale.grad is not None and float(pred_scale.grad) == pytest.approx(
        2 * (math.log(1.3) - math.log(float(s_star))) / 1.3, rel=1e-5
    )
    assert pred_points.grad is None or not pred_points.grad.any()

    # Even a scale that still carries the points' graph does not pass gradient through metric_scale_loss.
    s_live, _ = align_points_scale_z_shift(
        pred_points.reshape(-1, 3), torch.from_numpy(gt).reshape(-1, 3), torch.ones(64), trunc=1.0
    )
    assert s_live.requires_grad
    pred_scale.grad = None
    loss, _ = metric_scale_loss(pred_scale, s_live)
    loss.backward()
    assert pred_scale.grad is not None and (pred_points.grad is None or not pred_points.grad.any())

    # Non-metric instances have no target.
    assert float(scale_loss_target(s_star, False)) == 0.0
    assert scale_loss_target(torch.tensor([2.0, 3.0]), torch.tensor([True, False])).tolist() == [2.0, 0.0]


def test_losses_reject_bad_shapes():
    with pytest.raises(LossError, match="differ in shape"):
        affine_invariant_global_loss(torch.zeros(4, 4, 3), torch.zeros(4, 5, 3))
    with pytest.raises(LossError, match="mask"):
        affine_invariant_global_loss(torch.zeros(4, 4, 3), torch.ones(4, 4, 3), torch.ones(4, 5, dtype=torch.bool))
    with pytest.raises(LossError, match="level"):
        affine_invariant_local_loss(torch.zeros(4, 4, 3), torch.ones(4, 4, 3), None, 1.0, None, level=0)
    with pytest.raises(LossError, match="gt_mask_neg"):
        mask_bce_loss(torch.zeros(3, 3), torch.zeros(3, 3, dtype=torch.bool), torch.zeros(3, 4, dtype=torch.bool))


# ----------------------------------------------------------------------------------------------------------------
# loss sets
# ----------------------------------------------------------------------------------------------------------------

# The "loss" section of microsoft/MoGe configs/train/v2.json (data transcribed for the comparison).
OFFICIAL_V2_LOSS_CONFIG = {
    "invalid": {},
    "A": {
        "global": {"function": "affine_invariant_global_loss", "weight": 1.0, "params": {"align_resolution": 48}},
        "patch_4": {"function": "affine_invariant_local_loss", "weight": 1.0,
                    "params": {"level": 4, "align_resolution": 24, "num_patches": 16}},
        "patch_16": {"function": "affine_invariant_local_loss", "weight": 1.0,
                     "params": {"level": 16, "align_resolution": 12, "num_patches": 256}},
        "patch_64": {"function": "affine_invariant_local_loss", "weight": 1.0,
                     "params": {"level": 64, "align_resolution": 6, "num_patches": 4096}},
        "normal": {"function": "edge_loss", "weight": 1.0},
        "normal_map": {"function": "normal_map_loss", "weight": 0.1},
        "metric_scale": {"function": "metric_scale_loss", "weight": 0.1},
        "mask": {"function": "mask_bce_loss", "weight": 0.1},
    },
    "B": {
        "global": {"function": "affine_invariant_global_loss", "weight": 1.0, "params": {"align_resolution": 48}},
        "patch_4": {"function": "affine_invariant_local_loss", "weight": 1.0,
                    "params": {"level": 4, "align_resolution": 24, "num_patches": 16}},
        "patch_16": {"function": "affine_invariant_local_loss", "weight": 1.0,
                     "params": {"level": 16, "align_resolution": 12, "num_patches": 256}},
        "metric_scale": {"function": "metric_scale_loss", "weight": 0.1},
        "normal": {"function": "edge_loss", "weight": 1.0},
        "normal_map": {"function": "normal_map_loss", "weight": 0.1},
        "mask": {"function": "mask_bce_loss", "weight": 0.1},
    },
    "C": {
        "global": {"function": "affine_invariant_global_loss", "weight": 1.0, "params": {"align_resolution": 48}},
        "patch_4": {"function": "affine_invariant_local_loss", "weight": 1.0,
                    "params": {"level": 4, "align_resolution": 24, "num_patches": 16}},
        "metric_scale": {"function": "metric_scale_loss", "weight": 0.1},
        "mask": {"function": "mask_bce_loss", "weight": 0.1},
    },
}


def test_official_loss_sets_match_the_v2_recipe():
    assert set(OFFICIAL_LOSS_SETS) == set(LOSS_SET_LABELS) == set(OFFICIAL_V2_LOSS_CONFIG)
    for label, config in OFFICIAL_V2_LOSS_CONFIG.items():
        assert loss_set_for_label(label) == LossSet.from_dict(config)
        assert loss_set_for_label(label).to_dict() == config
    with pytest.raises(LossError, match="label type"):
        loss_set_for_label("D")


def test_loss_set_validation():
    with pytest.raises(LossError, match="unknown function"):
        LossTerm("x", "chamfer_loss", 1.0)
    with pytest.raises(LossError, match="no parameter"):
        LossTerm("x", "edge_loss", 1.0, {"level": 4})
    with pytest.raises(LossError, match="level"):
        LossTerm("x", "affine_invariant_local_loss", 1.0, {"num_patches": 4})
    with pytest.raises(LossError, match="before it"):
        LossSet.from_dict({"metric_scale": {"function": "metric_scale_loss", "weight": 0.1}})
    with pytest.raises(LossError, match="after the global"):
        LossSet.from_dict({
            "patch": {"function": "affine_invariant_local_loss", "weight": 1.0, "params": {"level": 4}},
            "global": {"function": "affine_invariant_global_loss", "weight": 1.0},
        })
    with pytest.raises(LossError, match="malformed"):
        LossSet.from_dict({"global": {"weight": 1.0}})


def test_compute_instance_losses_dispatch_and_stop_gradient():
    height, width = 12, 12
    pred_np, gt_np = _affine_pair(height, width, seed=50, scale=2.0, shift=0.5)
    rng = np.random.default_rng(51)
    pred_points = torch.from_numpy(pred_np + rng.normal(0, 0.01, pred_np.shape).astype(np.float32))
    gt = torch.from_numpy(gt_np)
    pred_points.requires_grad_(True)
    pred_scale = torch.tensor(1.5, requires_grad=True)
    pred_mask = torch.full((height, width), 0.7, requires_grad=True)
    pos = torch.ones(height, width, dtype=torch.bool)
    neg = torch.zeros(height, width, dtype=torch.bool)
    loss_set = LossSet.from_dict({
        "global": {"function": "affine_invariant_global_loss", "weight": 1.0, "params": {"align_resolution": 6}},
        "patch": {"function": "affine_invariant_local_loss", "weight": 0.5,
                  "params": {"level": 4, "align_resolution": 4, "num_patches": 4}},
        "normal": {"function": "edge_loss", "weight": 1.0},
        "normal_map": {"function": "normal_map_loss", "weight": 0.1},
        "metric_scale": {"function": "metric_scale_loss", "weight": 0.1},
        "mask": {"function": "mask_bce_loss", "weight": 0.1},
    })
    common = dict(pred_points=pred_points, gt_points=gt, gt_focal=0.8, pred_metric_scale=pred_scale,
                  pred_mask=pred_mask, gt_mask_pos=pos, gt_mask_neg=neg)
    total, losses, misc = compute_instance_losses(
        loss_set, is_metric=True, generator=torch.Generator().manual_seed(0), **common
    )
    # No normal head -> the normal-map term is skipped.
    assert set(losses) == {"global", "patch", "normal", "metric_scale", "mask"}
    weights = {"global": 1.0, "patch": 0.5, "normal": 1.0, "metric_scale": 0.1, "mask": 0.1}
    torch.testing.assert_close(total, sum(weights[k] * v for k, v in losses.items()))
    _, _, s_star = affine_invariant_global_loss(pred_points, gt, align_resolution=6)
    torch.testing.assert_close(losses["metric_scale"], (torch.log(pred_scale) - torch.log(s_star)) ** 2)
    assert set(misc["global"]) == {"truncated_error", "delta"}

    # Not metric -> no metric term.
    _, losses_nm, _ = compute_instance_losses(loss_set, is_metric=False, **common)
    assert "metric_scale" not in losses_nm

    # The metric term alone reaches the scale head only.
    metric_only = LossSet.from_dict({
        "global": {"function": "affine_invariant_global_loss", "weight": 0.0, "params": {"align_resolution": 6}},
        "metric_scale": {"function": "metric_scale_loss", "weight": 1.0},
    })
    total, _, _ = compute_instance_losses(metric_only, is_metric=True, **common)
    total.backward()
    assert pred_scale.grad is not None and float(pred_scale.grad) != 0.0
    assert pred_points.grad is None or not pred_points.grad.any()

    with pytest.raises(LossError, match="gt_normal"):
        compute_instance_losses(loss_set, pred_normal=torch.ones(height, width, 3), **common)
