"""Anchor sources: the extrinsic's quaternion checks, projection with one (the nearest) sample per pixel, the
point cap, depth resampling (float metres / uint16 mm)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from moge2_ros.anchors import AnchorError, DepthImageAnchor, DropCounts, Extrinsic, PointCloudAnchor

pytestmark = pytest.mark.timeout(60)

K = np.array([[100.0, 0.0, 31.5], [0.0, 100.0, 23.5], [0.0, 0.0, 1.0]])


def test_extrinsic_quaternion_round_trip_and_checks():
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.standard_normal(4)
        q /= np.linalg.norm(q)
        r, _ = Extrinsic(quaternion=tuple(q)).matrix()
        assert np.allclose(r @ r.T, np.eye(3), atol=1e-12) and np.linalg.det(r) == pytest.approx(1.0)
        back = np.array(Extrinsic.from_matrix(r).quaternion)
        assert np.allclose(back, q, atol=1e-9) or np.allclose(back, -q, atol=1e-9)
    # 90 deg about z: x -> y
    r, _ = Extrinsic(quaternion=(0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4))).matrix()
    assert np.allclose(r @ [1, 0, 0], [0, 1, 0])
    Extrinsic(quaternion=(0.0, 0.0, 0.0, 1.0009)).matrix()  # within 1e-3: normalised
    for bad in [(0.0, 0.0, 0.0, 1.002), (0.0, 0.0, 0.0, 0.0), (math.nan, 0, 0, 1), (0.0, 0.0, 1.0)]:
        with pytest.raises(AnchorError):
            Extrinsic(quaternion=bad).matrix()


def test_points_project_nearest_per_pixel_and_count_drops():
    pts = np.array([
        [0.0, 0.0, 2.0],  # centre-ish pixel
        [0.0, 0.0, 1.0],  # same pixel, nearer: wins
        [0.0, 0.0, -1.0],  # behind
        [math.nan, 0.0, 1.0],  # NaN
        [5.0, 0.0, 1.0],  # outside
        [0.1, 0.05, 1.0],  # pixel (41.5 -> 42 rounding: floor(x + 0.5)), (28.5 -> 29)
    ])
    drops = DropCounts()
    s = PointCloudAnchor(pts).samples(K, 64, 48, drops)
    assert drops.as_dict() == dict(stale=0, empty=0, nan=1, behind=1, outside=1, out_of_range=0, invalid=0,
                                   subsampled=0)
    got = sorted(zip(s.u.tolist(), s.v.tolist(), s.z.tolist()))
    assert got == [(32, 24, 1.0), (42, 29, 1.0)]


def test_points_translation_and_cap():
    pts = np.tile([[0.0, 0.0, 1.0]], (1000, 1)) + np.linspace(0, 0.1, 1000)[:, None] * [1, 0, 0]
    drops = DropCounts()
    s = PointCloudAnchor(pts, Extrinsic(translation=(0.0, 0.0, 1.0)), max_points=100).samples(K, 64, 48, drops)
    assert drops.subsampled == 900 and np.all(s.z == 2.0)


def test_depth_image_resampling():
    d = np.arange(12, dtype=np.float32).reshape(3, 4) + 1
    d[0, 0] = np.nan
    d[2, 3] = 0.0
    drops = DropCounts()
    grid = DepthImageAnchor(d).resampled(8, 6, drops)
    assert grid.shape == (6, 8)
    assert np.isnan(grid[0, 0]) and np.isnan(grid[1, 1]) and grid[0, 2] == 2.0 and np.isnan(grid[5, 7])
    assert drops.nan == 4 and drops.out_of_range == 4
    mm = DepthImageAnchor(np.full((2, 2), 1500, np.uint16)).resampled(4, 4)
    assert np.all(mm == 1.5)
