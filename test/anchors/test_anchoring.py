"""ScaleAnchoring end to end on exact rendered scenes: each anchor source recovers the true scale, scenes without
the needed evidence fall back to the network (never a wrong scale), malformed inputs are counted, not raised."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from anchor_helpers import NET_SCALE, WRONG

from moge2_ros.anchors import (
    AnchorConfig,
    CameraHeightAnchor,
    DepthImageAnchor,
    Extrinsic,
    PointCloudAnchor,
    RangeAnchor,
    ScaleAnchoring,
)

pytestmark = pytest.mark.timeout(120)

#: sensor +x (ROS Range / base-link forward) -> camera +z, sensor +y -> camera -x, sensor +z -> camera -y
FORWARD = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


def _single(**kw) -> ScaleAnchoring:
    return ScaleAnchoring(AnchorConfig(temporal=False, **kw))


def _lidar(room, rng, n=100, noise=0.05, outliers=0.2, extrinsic=Extrinsic()):
    """n points of the true surface in the sensor frame: relative range noise uniform in +-noise, a fraction of
    gross outliers moved by a factor in [0.3, 3] along their ray."""
    idx = rng.choice(np.flatnonzero(room.mask), n, replace=False)
    p = room.points.reshape(-1, 3)[idx] * (1 + rng.uniform(-noise, noise, (n, 1)))
    bad = rng.random(n) < outliers
    p[bad] *= rng.uniform(0.3, 3.0, (int(bad.sum()), 1))
    r, t = extrinsic.matrix()
    return (p - t) @ r  # camera -> sensor frame


@pytest.mark.parametrize("seed", range(5))
def test_lidar_points_with_outliers_within_1_percent(room, seed):
    rng = np.random.default_rng(seed)
    ex = Extrinsic.from_matrix(FORWARD.T @ np.eye(3), (0.1, -0.05, 0.02))  # camera -> ... any rigid transform
    pts = _lidar(room, rng, extrinsic=ex)
    d = _single().update(room.network(seed), room.mask, room.k, NET_SCALE, [PointCloudAnchor(pts, ex)], stamp=1.0)
    assert d.source == "points" and d.reason == ""
    assert d.factor == pytest.approx(WRONG, rel=0.01)
    assert d.applied_scale == pytest.approx(NET_SCALE * WRONG, rel=0.01)
    assert d.anchor_count == 100 and 60 <= d.inliers <= 100
    assert 0 < d.log_std < 0.05 and d.residual_m < 0.2


def test_single_range_cone_within_3_percent(room):
    ex = Extrinsic.from_matrix(FORWARD, (0.05, 0.02, 0.0))
    apex, fov = np.array([0.05, 0.02, 0.0]), math.radians(15)
    q = room.points[room.mask] - apex
    dist = np.linalg.norm(q, axis=1)
    true_range = float(dist[q[:, 2] >= math.cos(fov / 2) * dist].min())  # the closest surface in the cone
    anchor = RangeAnchor(true_range, 0.05, 20.0, fov, ex)
    d = _single().update(room.network(), room.mask, room.k, NET_SCALE, [anchor], stamp=0.0)
    assert d.source == "range"
    assert d.factor == pytest.approx(WRONG, rel=0.03)


def test_range_rep117_values_are_ignored(room):
    ex = Extrinsic.from_matrix(FORWARD)
    for value in (math.inf, -math.inf, 0.01, 30.0, math.nan):
        d = _single().update(room.network(), room.mask, room.k, NET_SCALE,
                             [RangeAnchor(value, 0.05, 20.0, 0.3, ex)])
        assert d.source == "network" and d.factor == 1.0
        assert d.dropped["out_of_range"] + d.dropped["nan"] == 1


def test_range_cone_outside_the_image_falls_back(room):
    backwards = Extrinsic.from_matrix(-FORWARD)  # looking out of the back of the camera
    d = _single().update(room.network(), room.mask, room.k, NET_SCALE, [RangeAnchor(2.0, 0.05, 20.0, 0.3, backwards)])
    assert d.source == "network" and d.factor == 1.0 and "cone" in d.reason


def test_camera_height_with_visible_floor_within_2_percent(room):
    d = _single().update(room.network(), room.mask, room.k, NET_SCALE, [CameraHeightAnchor(1.2, (0.0, -1.0, 0.0))])
    assert d.source == "ground", d.reason
    assert d.factor == pytest.approx(WRONG, rel=0.02)


def test_camera_height_uses_given_normals(room):
    pred = room.network(noise=0.0)
    normals = np.where(np.abs(room.points[..., 1:2] - 1.2) < 1e-6, (0.0, -1.0, 0.0), (0.0, 0.0, -1.0))
    d = _single().update(pred, room.mask, room.k, NET_SCALE, [CameraHeightAnchor(1.2)], normals=normals)
    assert d.source == "ground" and d.factor == pytest.approx(WRONG, rel=1e-3)
    # all normals claiming "up": walls and spheres join the candidates, the floor is not the dominant plane
    d = _single().update(pred, room.mask, room.k, NET_SCALE, [CameraHeightAnchor(1.2)],
                         normals=np.broadcast_to(np.array([0.0, -1.0, 0.0]), pred.shape))
    assert d.source == "network" and "floor not flat" in d.reason


def test_camera_height_without_floor_falls_back(wall):
    d = _single().update(wall.network(), wall.mask, wall.k, NET_SCALE, [CameraHeightAnchor(1.2)])
    assert d.source == "network" and d.factor == 1.0 and d.applied_scale == NET_SCALE
    assert "floor not visible" in d.reason


def test_implausible_corrections_are_refused(room):
    # a height that would change the network's scale 60x (a wrong parameter, a cloud in millimetres)
    d = _single().update(room.network(), room.mask, room.k, NET_SCALE, [CameraHeightAnchor(100.0)])
    assert d.source == "network" and d.factor == 1.0 and "implausible" in d.reason


def test_depth_image_of_another_size_with_holes(room):
    rng = np.random.default_rng(3)
    gt = room.depth.astype(np.float32)
    small = gt[::2, ::2].copy()  # half resolution, registered
    small[rng.random(small.shape) < 0.7] = np.nan
    small[rng.random(small.shape) < 0.1] = 0.0
    mm = np.where(np.isfinite(small), small * 1000, 0).astype(np.uint16)
    for depth in (small, mm):
        d = _single().update(room.network(), room.mask, room.k, NET_SCALE, [DepthImageAnchor(depth)])
        assert d.source == "depth" and d.factor == pytest.approx(WRONG, rel=0.005)


def test_scale_shift_mode_recovers_a_depth_offset(room):
    rng = np.random.default_rng(4)
    pred = room.network(noise=0.002)
    depth = room.depth + 0.3  # the sensor measures 30 cm more everywhere
    depth = np.where(rng.random(depth.shape) < 0.05, depth, np.nan)
    d = _single(mode="scale_shift").update(pred, room.mask, room.k, NET_SCALE, [DepthImageAnchor(depth)])
    assert d.source == "depth"
    assert d.factor == pytest.approx(WRONG, rel=0.01) and d.shift_m == pytest.approx(0.3, abs=0.02)


def test_complete_mode_fills_holes_from_network_gradients(room):
    rng = np.random.default_rng(5)
    depth = room.depth.astype(np.float32).copy()
    holes = rng.random(depth.shape) < 0.7
    depth[holes] = np.nan
    d = _single(mode="complete").update(room.network(noise=0.0), room.mask, room.k, NET_SCALE,
                                        [DepthImageAnchor(depth)])
    assert d.completed_depth is not None and d.completed_depth.shape == depth.shape
    filled = holes & np.isfinite(d.completed_depth)
    assert filled.mean() > 0.6
    rel = np.abs(d.completed_depth[filled] / room.depth[filled] - 1)
    assert np.median(rel) < 1e-3  # exact gradients of the true shape: the completion is the truth


def test_sources_are_fused_and_torch_inputs_accepted(room):
    rng = np.random.default_rng(6)
    pred = torch.from_numpy(room.network())
    anchors = [PointCloudAnchor(_lidar(room, rng, n=300, outliers=0.0)), CameraHeightAnchor(1.2)]
    d = _single().update(pred, torch.from_numpy(room.mask), torch.from_numpy(room.k), torch.tensor(NET_SCALE),
                         anchors)
    assert d.source == "points+ground" and len(d.fits) == 2
    assert d.factor == pytest.approx(WRONG, rel=0.01)
    assert d.anchor_log_std < min(f.log_std for f in d.fits)


def test_malformed_inputs_are_counted_never_raised(room):
    rng = np.random.default_rng(7)
    an = _single()
    good = _lidar(room, rng, outliers=0.0)
    nan_pts = good.copy()
    nan_pts[:10] = np.nan
    behind = good.copy()
    behind[:, 2] *= -1
    millions = np.repeat(good, 30_000, axis=0)  # 3 M points, subsampled
    cases = [
        ([PointCloudAnchor(np.zeros((0, 3)))], "empty"),
        ([PointCloudAnchor(np.zeros((5, 2)))], "invalid"),
        ([PointCloudAnchor(np.array([["a", "b", "c"]]))], "invalid"),
        ([PointCloudAnchor(good, Extrinsic(quaternion=(0.0, 0.0, 0.0, 2.0)))], "invalid"),
        ([PointCloudAnchor(good, Extrinsic(quaternion=(0.0, 0.0, math.nan, 1.0)))], "invalid"),
        ([PointCloudAnchor(good, Extrinsic(translation=(0.0, math.inf, 0.0)))], "invalid"),
        ([PointCloudAnchor(behind)], "behind"),
        ([PointCloudAnchor(good + np.array([1e3, 0.0, 0.0]))], "outside"),
        ([PointCloudAnchor(good, stamp=5.0)], "stale"),
        ([PointCloudAnchor(good, stamp="yesterday")], "stale"),
        ([DepthImageAnchor(np.full((4, 4), np.nan))], "nan"),
        ([DepthImageAnchor(np.zeros((4, 4, 3)))], "invalid"),
        ([DepthImageAnchor(np.zeros((4, 4), dtype=np.int8))], "invalid"),
        ([RangeAnchor(1.0, 2.0, 1.0, 0.3)], "invalid"),
        ([RangeAnchor(1.0, 0.1, 5.0, 4.0)], "invalid"),
        ([CameraHeightAnchor(-1.0)], "invalid"),
        ([CameraHeightAnchor(1.0, (0.0, 0.0, 0.0))], "invalid"),
        (["not an anchor"], "invalid"),
        ([RangeAnchor("far", 0.1, 5.0, 0.3)], "invalid"),
        ([CameraHeightAnchor(1.2, ("up", 0, 0))], "invalid"),
        ([PointCloudAnchor(good, Extrinsic(quaternion=("a", 0, 0, 1)))], "invalid"),
    ]
    for anchors, counter in cases:
        d = an.update(room.network(), room.mask, room.k, NET_SCALE, anchors, stamp=1.0)
        assert d.source == "network" and d.factor == 1.0, (counter, d)
        assert d.dropped[counter] >= 1 and d.reason, (counter, d)
    # partly bad clouds still work
    d = an.update(room.network(), room.mask, room.k, NET_SCALE, [PointCloudAnchor(nan_pts)], stamp=1.0)
    assert d.source == "points" and d.dropped["nan"] == 10
    d = an.update(room.network(), room.mask, room.k, NET_SCALE, [PointCloudAnchor(millions)], stamp=1.0)
    assert d.source == "points" and d.dropped["subsampled"] == millions.shape[0] - 200_000
    assert d.factor == pytest.approx(WRONG, rel=0.01)
    # a slightly denormalised quaternion is accepted
    q = np.array([0.0, 0.0, 0.0, 1.0005])
    d = an.update(room.network(), room.mask, room.k, NET_SCALE, [PointCloudAnchor(good, Extrinsic(quaternion=q))])
    assert d.source == "points"
    assert an.totals["frames"] == len(cases) + 3 and an.totals["invalid"] >= 10


@pytest.mark.parametrize("bad", ["points", "mask", "k", "scale"])
def test_bad_prediction_inputs_fall_back(room, bad):
    args = dict(points=room.network(), mask=room.mask, intrinsics=room.k, network_scale=NET_SCALE)
    args[{"points": "points", "mask": "mask", "k": "intrinsics", "scale": "network_scale"}[bad]] = {
        "points": np.zeros((4, 4)), "mask": np.ones((3, 3), bool), "k": np.zeros((3, 3)), "scale": math.nan}[bad]
    if bad == "points":
        d = _single().update(anchors=[CameraHeightAnchor(1.2)], **{**args, "points": [["x"]]})
        assert d.source == "network" and d.reason
    d = _single().update(anchors=[CameraHeightAnchor(1.2)], **args)
    assert d.source == "network" and d.factor == 1.0 and d.reason


def test_too_few_anchors_or_inliers_fall_back(room):
    rng = np.random.default_rng(8)
    few = _lidar(room, rng, n=5, outliers=0.0)
    d = _single().update(room.network(), room.mask, room.k, NET_SCALE, [PointCloudAnchor(few)])
    assert d.source == "network" and "anchors" in d.reason
    junk = _lidar(room, rng, n=200, outliers=0.0) * rng.uniform(0.5, 2.0, (200, 1))  # no consistent scale
    d = _single().update(room.network(), room.mask, room.k, NET_SCALE, [PointCloudAnchor(junk)])
    assert d.source == "network" and "inliers" in d.reason and d.factor == 1.0


def test_temporal_filter_holds_the_anchored_scale_when_anchors_stop(room):
    rng = np.random.default_rng(9)
    an = ScaleAnchoring(AnchorConfig())
    for i in range(10):
        d = an.update(room.network(i), room.mask, room.k, NET_SCALE, [PointCloudAnchor(_lidar(room, rng))],
                      stamp=i / 30)
        assert d.source == "points"
    assert d.factor == pytest.approx(WRONG, rel=0.01)
    d = an.update(room.network(), room.mask, room.k, NET_SCALE, [], stamp=11 / 30)
    assert d.source == "network" and d.factor == pytest.approx(WRONG, rel=0.01)  # the filter remembers
    # a new image size is a new camera: the filter restarts
    small = room.network()[::2, ::2]
    d = an.update(small, room.mask[::2, ::2], room.k / 2, NET_SCALE, [], stamp=12 / 30)
    assert d.factor == pytest.approx(1.0)
    # so does a new K (a zoom) at the same size
    for i in range(3):
        d = an.update(room.network(i), room.mask, room.k, NET_SCALE, [PointCloudAnchor(_lidar(room, rng))],
                      stamp=(13 + i) / 30)
    assert d.factor == pytest.approx(WRONG, rel=0.01)
    zoom = room.k.copy()
    zoom[0, 0] *= 1.05
    zoom[1, 1] *= 1.05
    d = an.update(room.network(), room.mask, zoom, NET_SCALE, [], stamp=17 / 30)
    assert d.factor == pytest.approx(1.0)
