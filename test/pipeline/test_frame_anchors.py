"""Metric anchoring through the frame pipeline (what the node and bag-infer run): sensor readings given with a frame
set its published scale, every metric output (depth, points, geometry) follows it, the geometry says where the scale
came from, anchors in the raw camera frame are moved into a rectified camera's frame, and configuration changes keep
or restart the filter as documented.

The "sensors" are the model's own geometry of the frame, scaled by a known factor and moved into another frame:
whatever the (untrained) model predicts, an anchored scale must reproduce that factor."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from moge2_ros.anchors import AnchorConfig, DepthImageAnchor, Extrinsic, FitOptions, PointCloudAnchor, RangeAnchor
from moge2_ros.errors import InputError
from moge2_ros.io import msg_codec as codec
from moge2_ros.pipeline import FrameConfig, FramePipeline

W, H = 80, 60
K = [60.0, 0.0, 40.5, 0.0, 62.0, 29.0, 0.0, 0.0, 1.0]
ALL = ("depth", "camera_info", "points", "geometry")
#: sensor frame -> camera optical frame: 90 degrees about the camera's y axis, and a lever arm
ROT = (0.0, math.sqrt(0.5), 0.0, math.sqrt(0.5))
LEVER = (0.1, -0.05, 0.2)


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    from moge2_ros.data.example import render_example_scene

    return render_example_scene(W, H, 70.0).rgb


def pinhole(d: list[float] | None = None) -> Any:
    box = SimpleNamespace(x_offset=0, y_offset=0, width=0, height=0, do_rectify=False)
    p = [K[0], 0.0, K[2], 0.0, 0.0, K[4], K[5], 0.0, 0.0, 0.0, 1.0, 0.0]
    return SimpleNamespace(width=W, height=H, distortion_model="plumb_bob", d=d or [0.0] * 5, k=K,
                           r=list(np.eye(3).ravel()), p=p, binning_x=0, binning_y=0, roi=box)


def depth_of(frame: Any) -> np.ndarray:
    return np.frombuffer(frame.depth.data, dtype="<f4").reshape(frame.height, frame.width)


def points_of(frame: Any) -> np.ndarray:
    offsets = dict(frame.cloud.fields)
    values = np.frombuffer(bytes(frame.cloud.data), dtype="<f4").reshape(frame.cloud.height, frame.cloud.width, -1)
    return np.stack([values[..., offsets[n] // 4] for n in ("x", "y", "z")], axis=-1)


def in_sensor_frame(points_cam: np.ndarray, extrinsic: Extrinsic) -> np.ndarray:
    """Camera-frame points expressed in the sensor frame of ``extrinsic`` (sensor -> camera)."""
    r, t = extrinsic.matrix()
    return (points_cam - t) @ r  # R^T (p - t), as rows


def anchored(config: FrameConfig | None = None, **anchor_options: Any) -> FrameConfig:
    base = config or FrameConfig()
    from dataclasses import replace

    return replace(base, anchors=AnchorConfig(temporal=False, **anchor_options))


def test_anchoring_off_reports_the_network_scale(predictor: Any, rgb: np.ndarray) -> None:
    out = FramePipeline(predictor).process(rgb, ALL, camera_info=pinhole())
    assert out.scale is None
    g = out.geometry
    assert g.scale_source == "network" and g.network_scale == pytest.approx(g.metric_scale)
    assert math.isnan(g.scale_log_std) and g.anchor_count == 0


def test_cloud_in_another_frame_sets_the_scale_of_every_output(predictor: Any, rgb: np.ndarray) -> None:
    plain = FramePipeline(predictor).process(rgb, ALL, camera_info=pinhole())
    truth = 1.7
    xyz = points_of(plain).reshape(-1, 3)
    xyz = xyz[np.isfinite(xyz).all(axis=1)]
    ext = Extrinsic(LEVER, ROT)
    cloud = PointCloudAnchor(in_sensor_frame(truth * xyz[::3], ext), ext, stamp=10.0)
    out = FramePipeline(predictor, anchored()).process(rgb, ALL, camera_info=pinhole(), anchors=[cloud],
                                                       stamp=10.02, camera_id="cam")
    d = out.scale
    assert d is not None and d.source == "points" and d.reason == ""
    assert d.factor == pytest.approx(truth, rel=1e-3)
    g = out.geometry
    assert g.scale_source == "points" and g.metric_scale == pytest.approx(truth * plain.geometry.metric_scale, rel=1e-3)
    assert g.network_scale == pytest.approx(plain.geometry.metric_scale, rel=1e-6)
    assert g.anchor_count == xyz[::3].shape[0] and g.anchor_inliers == g.anchor_count
    assert 0 < g.scale_log_std < 0.05 and g.anchor_residual_m < 1e-3
    a, b = depth_of(out), depth_of(plain)
    valid = np.isfinite(b)
    np.testing.assert_allclose(a[valid], truth * b[valid], rtol=2e-3)
    np.testing.assert_allclose(points_of(out)[valid], truth * points_of(plain)[valid], rtol=2e-3, atol=1e-6)


def test_bad_and_stale_readings_keep_the_network_scale(predictor: Any, rgb: np.ndarray) -> None:
    plain = FramePipeline(predictor).process(rgb, ALL, camera_info=pinhole())
    bad = [PointCloudAnchor(np.full((50, 3), np.nan)), PointCloudAnchor(np.ones((5, 2))),
           PointCloudAnchor(np.ones((50, 3)), Extrinsic((0, 0, 0), (0, 0, 0, 3.0))),
           PointCloudAnchor(np.ones((50, 3)) * [0, 0, 2.0], stamp=5.0)]
    out = FramePipeline(predictor, anchored()).process(rgb, ALL, camera_info=pinhole(), anchors=bad, stamp=9.0)
    assert out.geometry.scale_source == "network"
    assert out.geometry.metric_scale == pytest.approx(plain.geometry.metric_scale, rel=1e-6)
    assert out.scale.dropped["nan"] == 50 and out.scale.dropped["invalid"] == 2 and out.scale.dropped["stale"] == 1
    assert "stale" in out.scale.reason and "quaternion" in out.scale.reason


def test_range_cone_in_a_forward_rangefinder_frame(predictor: Any, rgb: np.ndarray) -> None:
    plain = FramePipeline(predictor).process(rgb, ALL, camera_info=pinhole())
    pts = points_of(plain)
    cone = np.deg2rad(8.0)
    rays = pts / np.linalg.norm(pts, axis=-1, keepdims=True)
    inside = np.isfinite(pts).all(axis=-1) & (rays[..., 2] > math.cos(cone / 2))
    nearest = float(np.linalg.norm(pts[inside], axis=-1).min())
    truth = 0.6
    forward = Extrinsic((0.0, 0.0, 0.0), (0.0, -math.sqrt(0.5), 0.0, math.sqrt(0.5)))  # sensor +x = camera +z
    reading = RangeAnchor(truth * nearest, 0.05, 20.0, cone, forward)
    out = FramePipeline(predictor, anchored()).process(rgb, ALL, camera_info=pinhole(), anchors=[reading])
    assert out.geometry.scale_source == "range", out.scale.reason
    assert out.scale.factor == pytest.approx(truth, rel=0.03)


def test_depth_anchor_of_a_distorted_camera_is_used_on_the_rectified_view(predictor: Any, rgb: np.ndarray) -> None:
    distorted = pinhole([-0.2, 0.05, 0.0, 0.0, 0.0])
    raw = FramePipeline(predictor, FrameConfig(output_grid="raw")).process(rgb, ALL, camera_info=distorted)
    truth = 1.5
    sensor = truth * depth_of(raw)  # registered to the raw (distorted) image, NaN holes where invalid
    sensor = np.where(np.isfinite(sensor), sensor, 0.0).astype(np.float32)
    for grid in ("rectified", "raw"):
        cfg = anchored(FrameConfig(output_grid=grid), fit=FitOptions(trunc=0.05, inlier_threshold=0.05))
        out = FramePipeline(predictor, cfg).process(rgb, ALL, camera_info=distorted,
                                                    anchors=[DepthImageAnchor(sensor)])
        assert out.rectified and out.geometry.scale_source == "depth", grid
        # nearest resampling raw -> rectified moves samples by up to half a pixel: a few tenths of a percent
        assert out.scale.factor == pytest.approx(truth, rel=0.01), grid


def test_scale_shift_and_complete_modes(predictor: Any, rgb: np.ndarray) -> None:
    plain = FramePipeline(predictor).process(rgb, ALL, camera_info=pinhole())
    base = depth_of(plain)
    sensor = 1.3 * base + 0.25
    out = FramePipeline(predictor, anchored(mode="scale_shift")).process(
        rgb, ALL, camera_info=pinhole(), anchors=[DepthImageAnchor(np.nan_to_num(sensor).astype(np.float32))])
    assert out.scale.shift_m != 0.0
    valid = np.isfinite(base) & np.isfinite(depth_of(out))
    err_shift = np.median(np.abs(depth_of(out)[valid] - sensor[valid]) / sensor[valid])
    only_scale = FramePipeline(predictor, anchored()).process(
        rgb, ALL, camera_info=pinhole(), anchors=[DepthImageAnchor(np.nan_to_num(sensor).astype(np.float32))])
    err_scale = np.median(np.abs(depth_of(only_scale)[valid] - sensor[valid]) / sensor[valid])
    assert err_shift < 0.5 * err_scale
    xyz = points_of(out)
    ok = np.isfinite(xyz).all(axis=-1)
    np.testing.assert_allclose(xyz[..., 2][ok], depth_of(out)[ok], rtol=1e-5)  # points moved along their rays

    holes = 1.4 * base
    holes[::2, :] = np.nan  # a depth camera with every other row missing
    done = FramePipeline(predictor, anchored(mode="complete")).process(
        rgb, ALL, camera_info=pinhole(), anchors=[DepthImageAnchor(np.nan_to_num(holes).astype(np.float32))])
    filled = depth_of(done)
    given = np.isfinite(holes)
    np.testing.assert_allclose(filled[given], holes[given], rtol=1e-5)  # the sensor's depth where it has depth
    gaps = np.isfinite(base) & ~given
    assert np.isfinite(filled[gaps]).mean() > 0.9  # and the holes filled ...
    assert np.median(np.abs(filled[gaps] / (1.4 * base[gaps]) - 1)) < 0.02  # ... consistently with the sensor


def test_camera_height_is_validated_and_added_per_frame() -> None:
    with pytest.raises(InputError, match="camera_height"):
        FrameConfig(camera_height_m=-1.0)
    with pytest.raises(InputError, match="camera_up"):
        FrameConfig(camera_height_m=1.2, camera_up=(0.0, 0.0, 0.0))
    cfg = FrameConfig(camera_height_m=1.2, camera_up=(0.0, -2.0, 0.0))
    extra = cfg.anchor_list([])
    assert len(extra) == 1 and extra[0].kind == "ground" and extra[0].height == 1.2


def test_configure_keeps_the_filter_for_thresholds_and_restarts_it_for_the_mode(predictor: Any,
                                                                                 rgb: np.ndarray) -> None:
    cfg = FrameConfig(anchors=AnchorConfig())
    pipe = FramePipeline(predictor, cfg)
    first = pipe._anchoring
    from dataclasses import replace

    pipe.configure(replace(cfg, anchors=AnchorConfig(max_age_s=0.5)))
    assert pipe._anchoring is first and first.config.max_age_s == 0.5
    pipe.configure(replace(cfg, anchors=AnchorConfig(mode="scale_shift")))
    assert pipe._anchoring is not first
    pipe.configure(replace(cfg, anchors=None))
    assert pipe._anchoring is None
    out = pipe.process(rgb, ("geometry",), camera_info=pinhole())
    assert out.scale is None and out.geometry.scale_source == "network"


def test_geometry_fields_reach_the_rclpy_message() -> None:
    pytest.importorskip("moge2_ros_msgs")
    from moge2_ros_msgs.msg import MonocularGeometry
    from std_msgs.msg import Header

    from moge2_ros.ros import conversions as conv

    fields = codec.GeometryFields(
        camera_info=codec.encode_camera_info(np.array(K).reshape(3, 3), W, H), intrinsics_estimated=False,
        metric_scale=2.0, fov_x_deg=60.0, fov_y_deg=45.0, num_tokens=64, inference_ms=1.0, model_id="m",
        valid_fraction=1.0, scale_source="points+range", network_scale=1.5, scale_log_std=0.01, anchor_count=120,
        anchor_inliers=100, anchor_residual_m=0.02)
    msg = conv.geometry_msg(MonocularGeometry, Header(frame_id="cam"), fields)
    assert (msg.scale_source, msg.anchor_count, msg.anchor_inliers) == ("points+range", 120, 100)
    assert msg.network_scale == pytest.approx(1.5) and msg.anchor_residual_m == pytest.approx(0.02)
