"""Tests of intrinsics, projection, normals and depth-edge helpers of moge2_ros.geometry, including the
official infer() post-processing chain rebuilt from these functions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from moge2_ros.errors import GeometryError
from moge2_ros.geometry import (
    depth_edge_mask,
    depth_to_points,
    focal_to_normalized_intrinsics,
    fov_x_to_focal,
    gt_focal_from_intrinsics,
    intrinsics_from_focal_center,
    intrinsics_to_fov,
    normalized_to_pixel_intrinsics,
    normals_from_points,
    pixel_center_grid,
    pixel_to_normalized_intrinsics,
    points_to_depth,
    project_points,
    recover_focal_shift,
    validate_intrinsics,
)

# ----------------------------------------------------------------------------------------------------------------
# official infer() post-processing from forward outputs
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parity
@pytest.mark.parametrize(
    "key,image,fov", [("i_fovnone", "i", None), ("i_fov60", "i", 60.0), ("ii_fovnone", "ii", None)]
)
def test_infer_postprocessing_chain(reference_dir, key, image, fov):
    """forward outputs -> focal/shift -> intrinsics -> depth -> force-projected points, as MoGeModel.infer."""
    ref = reference_dir
    points = torch.from_numpy(np.load(ref / f"fwd_{image}_points.npy"))
    prob = torch.from_numpy(np.load(ref / f"fwd_{image}_mask.npy"))
    metric_scale = torch.from_numpy(np.load(ref / f"fwd_{image}_metric_scale.npy"))
    height, width = points.shape[1:3]
    ar = width / height
    mask = prob > 0.5
    if fov is None:
        focal, shift = recover_focal_shift(points, mask)
    else:
        focal, shift = recover_focal_shift(points, mask, focal=fov_x_to_focal(fov, ar, points.shape[:1]))
    intrinsics = focal_to_normalized_intrinsics(focal, ar)
    depth = points[..., 2] + shift[:, None, None]
    mask = mask & (depth > 0)
    cam_points = depth_to_points(depth, intrinsics) * metric_scale[:, None, None, None]
    depth = depth * metric_scale[:, None, None]

    want_mask = np.load(ref / f"infer_{key}_mask.npy")
    want_depth = np.load(ref / f"infer_{key}_depth.npy")
    want_points = np.load(ref / f"infer_{key}_points.npy")
    np.testing.assert_array_equal(intrinsics[0].numpy(), np.load(ref / f"infer_{key}_intrinsics.npy"))
    np.testing.assert_array_equal(mask[0].numpy(), want_mask)
    np.testing.assert_array_equal(depth[0].numpy()[want_mask], want_depth[want_mask])
    assert np.isposinf(want_depth[~want_mask]).all() and np.isposinf(want_points[~want_mask]).all()
    # utils3d multiplies by the inverse 4x4 intrinsics; the closed form agrees to float32 rounding.
    got = cam_points[0].numpy()[want_mask]
    want = want_points[want_mask]
    assert np.abs(got - want).max() <= 2e-6 * np.abs(want).max()
    np.testing.assert_array_equal(got[:, 2], want[:, 2])


# ----------------------------------------------------------------------------------------------------------------
# intrinsics
# ----------------------------------------------------------------------------------------------------------------


def test_intrinsics_from_focal_center_broadcast():
    k = intrinsics_from_focal_center(torch.tensor([1.0, 2.0]), 3.0, 0.5, torch.tensor([[0.25], [0.75]]))
    assert k.shape == (2, 2, 3, 3)
    np.testing.assert_array_equal(k[1, 0].numpy(), [[1.0, 0, 0.5], [0, 3.0, 0.75], [0, 0, 1]])
    assert intrinsics_from_focal_center(1.0, 1.0, 0.5, 0.5).dtype == torch.float32
    assert intrinsics_from_focal_center(torch.tensor(1.0, dtype=torch.float64), 1, 0, 0).dtype == torch.float64


def test_pixel_normalized_round_trip_and_half_pixel_convention():
    t = torch.tensor
    k_n = intrinsics_from_focal_center(t([0.8, 1.1]), t([1.05, 1.4]), t([0.5, 0.4]), t([0.5, 0.6])).double()
    k_px = normalized_to_pixel_intrinsics(k_n, 640, 480)
    np.testing.assert_allclose(k_px[0].numpy(), [[512, 0, 319.5], [0, 504, 239.5], [0, 0, 1]])
    np.testing.assert_allclose(k_px[1, 0, 2].item(), 0.4 * 640 - 0.5)
    back = pixel_to_normalized_intrinsics(k_px, 640, 480)
    np.testing.assert_allclose(back.numpy(), k_n.numpy(), rtol=1e-15, atol=1e-15)
    # The centre of pixel column j projects to u = (j + 0.5) / W (normalised) and to j (pixel convention).
    pts = torch.tensor([[0.3, -0.2, 2.0], [-1.0, 0.5, 4.0]], dtype=torch.float64)
    uv = project_points(pts, k_n[1])
    px = (k_px[1] @ pts.T).T
    px = px[:, :2] / px[:, 2:]
    np.testing.assert_allclose(px.numpy(), (uv * torch.tensor([640.0, 480.0]) - 0.5).numpy(), rtol=1e-12)
    with pytest.raises(GeometryError):
        normalized_to_pixel_intrinsics(k_n, 0, 480)


def test_intrinsics_to_fov():
    k = intrinsics_from_focal_center(torch.tensor([0.5, 1.0]), torch.tensor([0.5, 0.25]), 0.5, 0.5)
    fov_x, fov_y = intrinsics_to_fov(k)
    np.testing.assert_allclose(fov_x.numpy(), [math.pi / 2, 2 * math.atan(0.5)], rtol=1e-6)
    np.testing.assert_allclose(fov_y.numpy(), [math.pi / 2, 2 * math.atan(2.0)], rtol=1e-6)
    # focal <-> fov round trip through the half-diagonal focal
    ar = 16 / 9
    k2 = focal_to_normalized_intrinsics(fov_x_to_focal(70.0, ar, ()), ar)
    assert math.degrees(intrinsics_to_fov(k2)[0].item()) == pytest.approx(70.0, abs=1e-4)


def test_gt_focal_from_intrinsics_is_focal_over_diagonal():
    width, height, f_px = 640, 480, 500.0
    k = torch.tensor([[f_px / width, 0, 0.5], [0, f_px / height, 0.5], [0, 0, 1]], dtype=torch.float64)
    assert float(gt_focal_from_intrinsics(k)) == pytest.approx(f_px / math.hypot(width, height), rel=1e-12)


def test_gt_focal_from_intrinsics_rejects_a_non_matrix():
    with pytest.raises(GeometryError, match="3, 3"):
        gt_focal_from_intrinsics(torch.ones(3, 4))


def test_validate_intrinsics():
    good = intrinsics_from_focal_center(torch.tensor([1.0, 2.0]), 1.5, 0.5, 0.5)
    assert validate_intrinsics(good) is good
    bad = good.clone()
    bad[1, 0, 0] = float("nan")
    with pytest.raises(GeometryError, match="finite"):
        validate_intrinsics(bad)
    bad = good.clone()
    bad[0, 1, 1] = -1.0
    with pytest.raises(GeometryError, match="positive"):
        validate_intrinsics(bad)
    bad = good.clone()
    bad[0, 2, 2] = 2.0
    with pytest.raises(GeometryError, match="bottom row"):
        validate_intrinsics(bad)
    with pytest.raises(GeometryError, match=r"\(\.\.\., 3, 3\)"):
        validate_intrinsics(torch.eye(4))
    with pytest.raises(GeometryError):
        validate_intrinsics(torch.eye(3, dtype=torch.int64))


# ----------------------------------------------------------------------------------------------------------------
# projection
# ----------------------------------------------------------------------------------------------------------------


def test_depth_points_projection_round_trip():
    gen = torch.Generator().manual_seed(0)
    depth = 1 + 4 * torch.rand(2, 12, 16, generator=gen, dtype=torch.float64)
    t = torch.tensor
    k = intrinsics_from_focal_center(t([0.9, 1.3]), t([1.2, 1.0]), t([0.45, 0.55]), t([0.52, 0.47])).double()
    k[1, 0, 1] = 0.05  # skew
    pts = depth_to_points(depth, k)
    assert pts.shape == (2, 12, 16, 3)
    np.testing.assert_array_equal(points_to_depth(pts).numpy(), depth.numpy())
    uv = project_points(pts, k)
    centres = pixel_center_grid(16, 12, dtype=torch.float64).expand(2, -1, -1, -1)
    np.testing.assert_allclose(uv.numpy(), centres.numpy(), atol=1e-12)
    # (..., N, 3) layout with per-batch intrinsics
    uv_flat = project_points(pts.reshape(2, -1, 3), k)
    np.testing.assert_allclose(uv_flat.reshape(2, 12, 16, 2).numpy(), uv.numpy(), atol=1e-15)
    # shared intrinsics broadcast over a batch
    pts_shared = depth_to_points(depth, k[0])
    np.testing.assert_allclose(pts_shared[0].numpy(), pts[0].numpy())


def test_depth_to_points_matches_inverse_matrix_form():
    depth = torch.linspace(0.5, 7.0, 20 * 30).reshape(20, 30)
    k = intrinsics_from_focal_center(0.83, 1.1, 0.47, 0.53)
    pts = depth_to_points(depth, k)
    uv = pixel_center_grid(30, 20)
    k4 = torch.eye(4)
    k4[:3, :3] = k
    homo = torch.stack([uv[..., 0] * depth, uv[..., 1] * depth, depth, torch.ones_like(depth)], -1)
    ref = (homo @ torch.linalg.inv(k4).T)[..., :3]
    assert (pts - ref).abs().max().item() <= 1e-6 * depth.max().item()


def test_projection_shape_errors():
    with pytest.raises(GeometryError, match="depth"):
        depth_to_points(torch.zeros(5), torch.eye(3))
    with pytest.raises(GeometryError, match="intrinsics"):
        depth_to_points(torch.zeros(4, 5), torch.eye(3)[:, :2])
    with pytest.raises(GeometryError):
        depth_to_points(torch.zeros(2, 4, 5), torch.eye(3).expand(3, 3, 3))
    with pytest.raises(GeometryError, match="points"):
        project_points(torch.zeros(4, 2), torch.eye(3))
    with pytest.raises(GeometryError):
        project_points(torch.zeros(2, 3), torch.eye(3).expand(2, 3, 3))
    with pytest.raises(GeometryError):
        points_to_depth(torch.zeros(4, 4))


# ----------------------------------------------------------------------------------------------------------------
# normals
# ----------------------------------------------------------------------------------------------------------------


def _plane_points(normal: torch.Tensor, offset: float, height: int = 20, width: int = 24) -> torch.Tensor:
    """Points of the plane n . p = offset seen through a camera (depth = offset / (n . ray))."""
    k = intrinsics_from_focal_center(0.9, 1.1, 0.48, 0.52).double()
    uv = pixel_center_grid(width, height, dtype=torch.float64)
    rays = torch.stack([(uv[..., 0] - 0.48) / 0.9, (uv[..., 1] - 0.52) / 1.1, torch.ones_like(uv[..., 0])], -1)
    depth = offset / (rays @ normal)
    return depth_to_points(depth, k)


def test_normals_of_plane():
    n = torch.tensor([0.3, -0.4, -0.866], dtype=torch.float64)
    n = n / n.norm()
    pts = _plane_points(n, offset=-2.0)  # n . p = -2 < 0: n faces the camera
    normals, valid = normals_from_points(pts)
    assert valid.all()
    np.testing.assert_allclose(normals.reshape(-1, 3).numpy(), n.expand(20 * 24, 3).numpy(), atol=1e-9)
    # the opposite orientation of the same plane gives the same camera-facing normals
    normals2, _ = normals_from_points(_plane_points(-n, offset=2.0))
    np.testing.assert_allclose(normals2.numpy(), normals.numpy(), atol=1e-9)
    # batched + float32
    batch = torch.stack([pts, pts]).float()
    nb, vb = normals_from_points(batch)
    assert nb.shape == (2, 20, 24, 3) and vb.shape == (2, 20, 24)
    np.testing.assert_allclose(nb[1].numpy(), normals.numpy(), atol=1e-4)


def test_normals_mask_and_nonfinite():
    pts = _plane_points(torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64), offset=-3.0)
    pts[5, 5] = float("inf")
    mask = torch.ones(20, 24, dtype=torch.bool)
    mask[10:, :] = False
    mask[0, 0] = False
    normals, valid = normals_from_points(pts, mask)
    assert not valid[5, 5] and not valid[10:].any() and not valid[0, 0]
    assert (normals[~valid] == 0).all()
    # neighbours of the bad pixel still have other valid pairs
    assert valid[4, 5] and valid[5, 4] and valid[9, 3]
    np.testing.assert_allclose(normals[valid].numpy(), np.tile([0.0, 0.0, -1.0], (int(valid.sum()), 1)), atol=1e-12)
    # an isolated pixel has no valid pair
    lone = torch.zeros(20, 24, dtype=torch.bool)
    lone[7, 7] = True
    assert not normals_from_points(pts, lone)[1].any()
    with pytest.raises(GeometryError):
        normals_from_points(pts[..., :2])
    with pytest.raises(GeometryError):
        normals_from_points(pts, mask[:, :5])


# ----------------------------------------------------------------------------------------------------------------
# depth edges
# ----------------------------------------------------------------------------------------------------------------


def test_depth_edge_mask_step_and_slope():
    height, width = 16, 20
    slope = torch.linspace(2.0, 2.5, width).expand(height, width).clone()  # 0.026 m per pixel, ~1% per pixel
    step = slope.clone()
    step[:, 10:] += 1.5
    depth = torch.stack([slope, step])
    edges = depth_edge_mask(depth, rtol=0.05)
    assert edges.dtype == torch.bool and edges.shape == (2, height, width)
    assert not edges[0].any()
    assert edges[1, :, 9].all() and edges[1, :, 10].all()
    assert not edges[1, :, :8].any() and not edges[1, :, 12:].any()
    # a wider window flags a wider band
    wide = depth_edge_mask(step, rtol=0.08, kernel_size=5)
    assert wide[:, 8:12].all() and not wide[:, :7].any() and not wide[:, 13:].any()


def test_depth_edge_mask_invalid_pixels():
    depth = torch.full((10, 10), 3.0)
    depth[4, 4] = float("nan")
    depth[2, 7] = float("inf")
    mask = torch.ones(10, 10, dtype=torch.bool)
    mask[:, 0] = False
    depth[:, 0] = 100.0  # masked out: must not create edges
    edges = depth_edge_mask(depth, rtol=0.01, mask=mask)
    assert not edges.any()
    with pytest.raises(GeometryError, match="kernel_size"):
        depth_edge_mask(depth, 0.1, kernel_size=4)
    with pytest.raises(GeometryError, match="mask"):
        depth_edge_mask(depth, 0.1, mask=mask[:5])
    with pytest.raises(GeometryError, match="depth"):
        depth_edge_mask(torch.zeros(5), 0.1)


def test_depth_edge_mask_equals_max_pool_definition():
    """Random depths with NaN, +-inf, zeros and a random mask: equal to the definition written with max_pool2d."""
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(3)
    depth = torch.rand(2, 37, 53, generator=gen) * 4 + 0.5
    depth[torch.rand(depth.shape, generator=gen) < 0.05] = float("nan")
    depth[torch.rand(depth.shape, generator=gen) < 0.02] = float("inf")
    depth[torch.rand(depth.shape, generator=gen) < 0.02] = float("-inf")
    depth[torch.rand(depth.shape, generator=gen) < 0.02] = 0.0
    mask = torch.rand(depth.shape, generator=gen) > 0.1
    for k in (1, 3, 5):
        for m in (None, mask):
            valid = torch.isfinite(depth) if m is None else torch.isfinite(depth) & m
            hi = F.max_pool2d(torch.where(valid, depth, -torch.inf)[:, None], k, 1, k // 2)[:, 0]
            lo = -F.max_pool2d(torch.where(valid, -depth, -torch.inf)[:, None], k, 1, k // 2)[:, 0]
            expected = ((hi - lo) / depth).nan_to_num(nan=0.0) > 0.04
            expected &= valid
            got = depth_edge_mask(depth, 0.04, kernel_size=k, mask=m)
            assert torch.equal(got, expected), (k, m is None)


def test_metric_geometry_masks_by_nan_and_keeps_official_values():
    from moge2_ros.geometry.postprocess import metric_geometry, recover_geometry

    gen = torch.Generator().manual_seed(0)
    points = torch.randn(2, 24, 32, 3, generator=gen)
    points[..., 2] = points[..., 2].abs() + 2.0
    mask_prob = torch.rand(2, 24, 32, generator=gen)
    scale = torch.tensor([0.7, 3.1])
    official = recover_geometry(points, mask_prob, scale)
    from moge2_ros.geometry.postprocess import recover_camera

    camera = recover_camera(points, mask_prob)
    valid = camera.mask & (torch.rand(2, 24, 32, generator=gen) > 0.3)
    pts, depth = metric_geometry(camera.depth, camera.intrinsics, scale, valid=valid)
    assert torch.equal(pts[valid], official.points[valid])  # bit for bit, not just close
    assert torch.equal(depth[valid], official.depth[valid])
    assert torch.isnan(pts[~valid]).all() and torch.isnan(depth[~valid]).all()
    # without a mask nothing is NaN and the values are the official ones
    pts_all, depth_all = metric_geometry(camera.depth, camera.intrinsics, scale)
    assert torch.equal(pts_all, official.points) and torch.equal(depth_all, official.depth)
