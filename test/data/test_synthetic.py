"""Tests of the procedural synthetic generator (moge2_ros.data.synthetic*): exact depth against analytic
ray-primitive intersections, normals, sky, intrinsics consistency, determinism, the make-synthetic command."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from moge2_ros.data.sample import validate_sample
from moge2_ros.data.synthetic import (
    SceneBuilder,
    SyntheticConfig,
    SyntheticDataset,
    camera_pose,
    render_scene,
)
from moge2_ros.errors import DatasetError
from moge2_ros.geometry.edges import depth_edge_mask
from moge2_ros.geometry.intrinsics import pixel_to_normalized_intrinsics
from moge2_ros.geometry.normals import normals_from_points
from moge2_ros.geometry.projection import depth_to_points, project_points

W, H = 96, 72


def _k(fx: float = 70.0, fy: float = 71.0, cx: float = 46.3, cy: float = 37.1) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def _world_rays(k: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """(H, W, 3) float64 world ray directions with unit camera-frame z (so the ray parameter is the depth)."""
    jj, ii = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    d_cam = np.stack([(jj - k[0, 2]) / k[0, 0], (ii - k[1, 2]) / k[1, 1], np.ones_like(jj)], axis=-1)
    return d_cam @ pose[:3, :3].T


def _points_world(sample, pose: np.ndarray) -> np.ndarray:
    k_n = pixel_to_normalized_intrinsics(torch.from_numpy(sample.intrinsics), W, H)
    pts = depth_to_points(torch.from_numpy(sample.depth).double(), k_n).numpy()
    return pts @ pose[:3, :3].T + pose[:3, 3]


def test_plane_depth_matches_analytic_intersection() -> None:
    normal = np.array([0.2, -0.9, 0.3])
    normal /= np.linalg.norm(normal)
    offset = -0.4
    scene = SceneBuilder().add_plane(normal, offset, pattern="checker").build(light_direction=(0.3, -1.0, 0.2))
    pose = camera_pose((0.3, -1.6, -0.5), yaw=0.3, pitch=-0.25, roll=0.05)
    k = _k()
    sample = render_scene(scene, k, pose, W, H, shadows=True)
    validate_sample(sample)

    rays = _world_rays(k, pose)
    denom = rays @ normal
    t = (offset - pose[:3, 3] @ normal) / np.where(denom < 0, denom, -1.0)
    expected_hit = (denom < -1e-9) & (t > 0)
    sure = np.abs(denom) > 1e-3  # away from the horizon, where float32 rounding could flip hit / miss
    assert expected_hit.any() and (~expected_hit).any()
    np.testing.assert_array_equal(np.isfinite(sample.depth)[sure], expected_hit[sure])
    both = expected_hit & np.isfinite(sample.depth)
    # float32 rays: exact to ~1e-5 except at grazing angles near the horizon (hundreds of metres away).
    steep = both & (np.abs(denom) > 0.02)
    assert steep.sum() > 0.3 * W * H
    np.testing.assert_allclose(sample.depth[steep], t[steep], rtol=2e-5)
    np.testing.assert_allclose(sample.depth[both], t[both], rtol=1e-3)
    np.testing.assert_array_equal(sample.sky, ~np.isfinite(sample.depth))
    # Points back-projected with K and moved to the world lie on the plane.
    residual = _points_world(sample, pose)[both] @ normal - offset
    assert np.abs(residual).max() < 1e-4 * np.nanmax(sample.depth)


def test_sphere_box_cylinder_depth_match_analytic() -> None:
    centre, radius = np.array([0.4, -1.0, 4.0]), 0.9
    scene = (SceneBuilder()
             .add_plane((0, 0, -1), -12.0)  # back wall at z = 12
             .add_sphere(centre, radius, pattern="noise")
             .add_box((-1.5, -1.0, 6.0), (0.5, 1.0, 0.5), 0.0)  # front face at z = 5.5
             .add_cylinder(3.0, 7.0, 0.4, -2.0, 0.0)  # right of the sphere, not hidden by it
             .build(light_position=(0.0, -2.5, 1.0)))
    pose = camera_pose((0.0, -1.0, 0.0))
    k = _k()
    sample = render_scene(scene, k, pose, W, H)
    rays = _world_rays(k, pose)
    origin = pose[:3, 3]

    oc = origin - centre
    a = (rays * rays).sum(-1)
    b = rays @ oc
    disc = b * b - a * (oc @ oc - radius ** 2)
    t_sphere = np.where(disc > 0, (-b - np.sqrt(np.maximum(disc, 0))) / a, np.inf)
    inside = disc > 1e-3 * a  # not grazing the silhouette
    np.testing.assert_allclose(sample.depth[inside], t_sphere[inside], rtol=2e-5)

    # Box front face (z = 5.5, x in [-2, -1], y in [-2, 0]) seen straight on: depth exactly 5.5 there.
    hx, hy = origin[0] + 5.5 * rays[..., 0], origin[1] + 5.5 * rays[..., 1]
    face = (hx > -1.98) & (hx < -1.02) & (hy > -1.98) & (hy < -0.02)
    assert face.sum() > 20
    np.testing.assert_allclose(sample.depth[face], 5.5, rtol=1e-5)
    np.testing.assert_allclose(sample.normal[face], np.tile([0.0, 0.0, -1.0], (int(face.sum()), 1)), atol=1e-5)

    # Cylinder side: |xz - axis| = r at the hit point; back wall elsewhere at z = 12.
    pts = _points_world(sample, pose)
    radial = np.hypot(pts[..., 0] - 3.0, pts[..., 2] - 7.0)
    on_cyl = (np.abs(radial - 0.4) < 1e-3) & (pts[..., 1] > -1.98) & (pts[..., 1] < -0.02)
    assert on_cyl.sum() > 60
    wall = np.isclose(sample.depth, 12.0, rtol=1e-5)
    assert wall.sum() > 0.3 * W * H
    assert not sample.sky.any()  # the wall closes the view


def test_normals_unit_facing_camera_and_match_finite_differences() -> None:
    dataset = SyntheticDataset(4, H, W, seed=11)
    for i in range(len(dataset)):
        s = dataset[i]
        valid = np.isfinite(s.depth)
        n = s.normal
        assert np.isnan(n[~valid]).all()
        np.testing.assert_allclose(np.linalg.norm(n[valid], axis=-1), 1.0, atol=1e-5)
        k_n = pixel_to_normalized_intrinsics(torch.from_numpy(s.intrinsics), W, H)
        depth = torch.from_numpy(s.depth).double()  # float64 finite differences: far ground is fine in float32 depth
        points = depth_to_points(depth, k_n)
        assert ((n[valid] * points.numpy()[valid]).sum(-1) < 0).all()  # facing the camera
        fd, fd_valid = normals_from_points(points, torch.from_numpy(valid))
        # Compare where the analytic normal field is smooth over the 3x3 neighbourhood and there is no depth jump
        # (excludes silhouettes and box / wall creases, where finite differences mix two surfaces).
        padded = np.pad(np.nan_to_num(n), ((1, 1), (1, 1), (0, 0)))
        smooth_n = np.ones((H, W), dtype=bool)
        for di in range(3):
            for dj in range(3):
                smooth_n &= (padded[di:di + H, dj:dj + W] * np.nan_to_num(n)).sum(-1) > math.cos(math.radians(5.0))
        no_jump = ~depth_edge_mask(depth, rtol=0.2, kernel_size=3, mask=torch.from_numpy(valid)).numpy()
        smooth = fd_valid.numpy() & smooth_n & no_jump
        assert smooth.sum() > 0.3 * W * H
        cos = (fd.numpy()[smooth] * n[smooth]).sum(-1)
        # (Small steps between parallel surfaces, e.g. kerb top vs road, and 1-pixel poles remain.)
        assert np.mean(cos > math.cos(math.radians(3.0))) > 0.95, s.source
        assert np.median(cos) > math.cos(math.radians(0.5)), s.source


def test_intrinsics_back_projection_and_reprojection_are_consistent() -> None:
    s = SyntheticDataset(1, H, W, seed=5)[0]
    fov = math.degrees(2 * math.atan(W / 2 / s.intrinsics[0, 0]))
    assert 40.0 <= fov <= 100.0
    assert abs(s.intrinsics[1, 1] / s.intrinsics[0, 0] - 1) <= 0.01 + 1e-12
    assert abs(s.intrinsics[0, 2] - (W - 1) / 2) <= 0.03 * W + 1e-9
    k_n = pixel_to_normalized_intrinsics(torch.from_numpy(s.intrinsics), W, H)
    points = depth_to_points(torch.from_numpy(s.depth).double(), k_n)
    uv = project_points(points, k_n).numpy()
    valid = np.isfinite(s.depth)
    jj, ii = np.meshgrid(np.arange(W), np.arange(H))
    np.testing.assert_allclose(uv[..., 0][valid] * W - 0.5, jj[valid], atol=1e-6)
    np.testing.assert_allclose(uv[..., 1][valid] * H - 0.5, ii[valid], atol=1e-6)


def test_deterministic_per_seed_and_index_and_order_independent() -> None:
    a = SyntheticDataset(5, 40, 56, seed=3)
    b = SyntheticDataset(5, 40, 56, seed=3)
    later_first = b[4], b[2]
    for i, other in ((4, later_first[0]), (2, later_first[1])):
        x = a[i]
        np.testing.assert_array_equal(x.image, other.image)
        np.testing.assert_array_equal(x.depth, other.depth)
        np.testing.assert_array_equal(x.normal, other.normal)
        np.testing.assert_array_equal(x.intrinsics, other.intrinsics)
    assert not np.array_equal(a[0].image, a[1].image)
    assert not np.array_equal(a[0].intrinsics, SyntheticDataset(5, 40, 56, seed=4)[0].intrinsics)


def test_families_sky_and_sample_validity() -> None:
    rooms = SyntheticDataset(3, 48, 64, seed=1, config=SyntheticConfig(families=["room"]))
    streets = SyntheticDataset(3, 48, 64, seed=1,
                               config=SyntheticConfig(families=("street",), shadows=False))
    for s in rooms:
        validate_sample(s)
        assert s.label_type == "A" and s.is_metric and s.meta["family"] == "room"
        assert not s.sky.any() and np.isfinite(s.depth).all()
        assert np.nanmax(s.depth) < 15.0
    sky_shares = []
    for s in streets:
        validate_sample(s)
        assert s.meta["family"] == "street"
        np.testing.assert_array_equal(s.sky, np.isnan(s.depth))
        sky_shares.append(s.sky.mean())
        # Sky is above the horizon: the lowest image row (camera pitch <= 10 deg, fov <= 100) is never sky.
        assert not s.sky[-1].any()
    assert max(sky_shares) > 0.0


def test_render_scene_rejects_bad_inputs() -> None:
    scene = SceneBuilder().add_plane((0, -1, 0), 0.0).build(light_direction=(0, -1, 0))
    pose = camera_pose((0, -1, 0))
    with pytest.raises(DatasetError, match="intrinsics"):
        render_scene(scene, _k(fx=-1.0), pose, W, H)
    bad_pose = pose.copy()
    bad_pose[:3, :3] *= 2.0
    with pytest.raises(DatasetError, match="rotation"):
        render_scene(scene, _k(), bad_pose, W, H)
    with pytest.raises(DatasetError, match="pattern"):
        SceneBuilder().add_sphere((0, 0, 3), 1.0, pattern="plaid")
    with pytest.raises(DatasetError, match="y_top"):
        SceneBuilder().add_cylinder(0, 3, 0.5, 0.0, -1.0).build(light_direction=(0, -1, 0))
    with pytest.raises(DatasetError, match="families"):
        SyntheticConfig(families=("forest",))
    with pytest.raises(DatasetError, match="family_weights"):
        SyntheticConfig(families=("room",), family_weights=(0.5, 0.5))
    with pytest.raises(DatasetError, match="count"):
        SyntheticDataset(-1, 8, 8)


def test_make_synthetic_command_writes_a_readable_folder(tmp_path, monkeypatch, capsys) -> None:
    import moge2_ros.cli as cli
    from moge2_ros.data.folder import FolderDataset

    monkeypatch.setattr(cli, "SUBCOMMAND_MODULES", ("moge2_ros.data.cli",))
    out = tmp_path / "syn"
    assert cli.main(["make-synthetic", "--output", str(out), "--count", "2", "--size", "48x32", "--seed", "7",
                     "--quiet"]) == 0
    folder = FolderDataset(out)
    reference = SyntheticDataset(2, 32, 48, seed=7)
    assert folder.stems == ["000000", "000001"]
    for got, want in zip(folder, reference):
        np.testing.assert_array_equal(got.image, want.image)
        np.testing.assert_array_equal(got.depth, want.depth)
        np.testing.assert_array_equal(got.sky, want.sky)
        np.testing.assert_array_equal(got.intrinsics, want.intrinsics)
        assert got.label_type == "A" and got.is_metric
    # A second run into the same folder is refused without --overwrite; a bad size is a usage error.
    assert cli.main(["make-synthetic", "--output", str(out), "--count", "1", "--quiet"]) == 2
    assert cli.main(["make-synthetic", "--output", str(tmp_path / "x"), "--count", "1", "--size", "48"]) == 2
    assert "WIDTHxHEIGHT" in capsys.readouterr().err
