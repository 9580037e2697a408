"""Real cameras through the frame pipeline (what the node and bag-infer run): a pinhole CameraInfo is an exact
no-op, a distorted one is rectified and every output is consistent with the published camera (rectified grid: K'
= P[:3, :3]; raw grid: the input CameraInfo through its lens), binning and ROI follow image_geometry, the maps
follow a CameraInfo that changes, and a refused CameraInfo falls back to the last good one of the image size."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest

from moge2_ros.io import msg_codec as codec
from moge2_ros.pipeline import FrameConfig, FramePipeline

W, H = 80, 60
K = [60.0, 0.0, 40.5, 0.0, 62.0, 29.0, 0.0, 0.0, 1.0]
P = [52.0, 0.0, 39.5, 0.0, 0.0, 52.0, 29.5, 0.0, 0.0, 0.0, 1.0, 0.0]
D = [-0.25, 0.08, 1e-3, -2e-3, -0.01]
FISHEYE = [0.08, -0.02, 0.005, -0.001]
ALL = ("depth", "camera_info", "points", "normals", "mask", "colorized", "geometry")


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    from moge2_ros.data.example import render_example_scene

    return render_example_scene(W, H, 70.0).rgb


def info(model: str = "plumb_bob", d: Any = D, k: Any = K, p: Any = P, r: Any = None, width: int = W,
         height: int = H, binning: tuple[int, int] = (0, 0), roi: tuple[int, int, int, int] = (0, 0, 0, 0)) -> Any:
    box = SimpleNamespace(x_offset=roi[0], y_offset=roi[1], width=roi[2], height=roi[3], do_rectify=False)
    return SimpleNamespace(width=width, height=height, distortion_model=model, d=list(d), k=list(k),
                           r=list(np.eye(3).ravel() if r is None else r), p=list(p), binning_x=binning[0],
                           binning_y=binning[1], roi=box)


def cloud_xyz(cloud: codec.CloudFields) -> np.ndarray:
    """``(H, W, 3)`` x, y, z of an organized cloud (FLOAT32 fields)."""
    offsets = dict(cloud.fields)
    values = np.frombuffer(bytes(cloud.data), dtype="<f4").reshape(cloud.height, cloud.width, cloud.point_step // 4)
    return np.stack([values[..., offsets[n] // 4] for n in ("x", "y", "z")], axis=-1)


def depth_of(frame: Any) -> np.ndarray:
    return np.frombuffer(frame.depth.data, dtype="<f4").reshape(frame.height, frame.width)


def test_pinhole_camera_info_is_an_exact_no_op(predictor: Any, rgb: np.ndarray) -> None:
    """D zero, R identity, P = [K | 0]: the outputs are those of K alone (today's path), bytes equal; no maps."""
    k = np.array(K).reshape(3, 3)
    pinhole = info(d=[0.0] * 5, p=np.hstack([k, np.zeros((3, 1))]).ravel())
    k_only = SimpleNamespace(width=W, height=H, binning_x=0, binning_y=0, k=K,
                             roi=SimpleNamespace(x_offset=0, y_offset=0, width=0, height=0))
    pipe = FramePipeline(predictor, FrameConfig(cloud_normals=True))
    a = pipe.process(rgb, ALL, camera_info=pinhole)
    b = FramePipeline(predictor, FrameConfig(cloud_normals=True)).process(rgb, ALL, camera_info=k_only)
    assert not a.rectified and pipe.rectifiers.computed == 0 and a.intrinsics_error is None
    for name in ("depth", "normals", "mask", "colorized"):
        assert getattr(a, name).data == getattr(b, name).data, name
    assert a.cloud.data == b.cloud.data
    np.testing.assert_array_equal(a.k, k)
    geo = predictor.predict(rgb, intrinsics=k)
    assert a.depth.data == codec.encode_depth(geo.depth[0].numpy()).data


@pytest.mark.parametrize(("model", "d"), [("plumb_bob", D), ("equidistant", FISHEYE)])
def test_rectified_outputs_are_consistent_with_the_published_camera(predictor: Any, rgb: np.ndarray, model: str,
                                                                    d: Any) -> None:
    pipe = FramePipeline(predictor)
    out = pipe.process(rgb, ALL, camera_info=info(model, d))
    assert out.rectified and out.intrinsics_error is None and not out.intrinsics_estimated
    ci = out.camera_info
    assert (ci.width, ci.height, ci.binning_x, ci.binning_y, ci.roi) == (W, H, 0, 0, (0, 0, 0, 0))
    np.testing.assert_array_equal(ci.k.reshape(3, 3), np.array(P).reshape(3, 4)[:, :3])
    np.testing.assert_array_equal(ci.d, np.zeros(5))
    np.testing.assert_array_equal(ci.r.reshape(3, 3), np.eye(3))
    np.testing.assert_array_equal(ci.p.reshape(3, 4)[:, 3], 0.0)
    assert out.geometry.camera_info == ci and out.geometry.intrinsics_estimated is False
    # every published point projects through depth/camera_info onto its own depth pixel, at that depth
    depth, xyz = depth_of(out), cloud_xyz(out.cloud)
    valid = np.isfinite(depth)
    assert valid.mean() > 0.5
    kk = ci.k.reshape(3, 3)
    v, u = np.mgrid[0:H, 0:W]
    x, y, z = (xyz[..., i][valid] for i in range(3))
    np.testing.assert_allclose(z, depth[valid], rtol=1e-6)
    np.testing.assert_allclose(kk[0, 0] * x / z + kk[0, 2], u[valid], atol=2e-3)
    np.testing.assert_allclose(kk[1, 1] * y / z + kk[1, 2], v[valid], atol=2e-3)


@pytest.mark.parametrize(("model", "d"), [("plumb_bob", D), ("equidistant", FISHEYE)])
def test_raw_grid_outputs_project_through_the_input_camera(predictor: Any, rgb: np.ndarray, model: str,
                                                           d: Any) -> None:
    msg = info(model, d)
    out = FramePipeline(predictor, FrameConfig(output_grid="raw")).process(rgb, ALL, camera_info=msg)
    assert out.rectified and (out.width, out.height) == (W, H)
    ci = out.camera_info
    assert ci.distortion_model == model
    for name in ("d", "k", "r", "p"):
        np.testing.assert_array_equal(getattr(ci, name), getattr(msg, name))
    depth, xyz = depth_of(out), cloud_xyz(out.cloud)
    valid = np.isfinite(depth)
    assert 0.5 < valid.mean() < 1.0  # the corners outside the rectified view are invalid
    pts = xyz[valid].astype(np.float64)
    np.testing.assert_allclose(pts[:, 2], depth[valid], rtol=1e-6)
    k = np.array(K).reshape(3, 3)
    if model == "equidistant":
        uv = cv2.fisheye.projectPoints(pts.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), k, np.array(d))[0]
    else:
        uv = cv2.projectPoints(pts.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), k, np.array(d))[0]
    v, u = np.mgrid[0:H, 0:W]
    np.testing.assert_allclose(uv.reshape(-1, 2), np.stack([u[valid], v[valid]], -1), atol=0.02)
    mask = np.frombuffer(out.mask.data, np.uint8).reshape(H, W)
    np.testing.assert_array_equal(mask == 255, valid)


def test_rotation_r_gives_raw_depth_along_the_raw_axis(predictor: Any, rgb: np.ndarray) -> None:
    a = math.radians(5.0)
    r = [math.cos(a), 0.0, math.sin(a), 0.0, 1.0, 0.0, -math.sin(a), 0.0, math.cos(a)]
    out = FramePipeline(predictor, FrameConfig(output_grid="raw")).process(rgb, ALL, camera_info=info(r=r))
    depth, xyz = depth_of(out), cloud_xyz(out.cloud)
    valid = np.isfinite(depth)
    np.testing.assert_allclose(xyz[..., 2][valid], depth[valid], rtol=1e-6)


def test_camera_change_remaps_without_restart(predictor: Any, rgb: np.ndarray) -> None:
    pipe = FramePipeline(predictor)
    pipe.process(rgb, {"depth"}, camera_info=info())
    pipe.process(rgb, {"depth"}, camera_info=info())
    assert pipe.rectifiers.computed == 1
    out = pipe.process(rgb, {"camera_info"}, camera_info=info(d=[-0.1, 0.0, 0.0, 0.0, 0.0]))
    assert pipe.rectifiers.computed == 2 and out.rectified
    small = rgb[::2, ::2]
    out = pipe.process(small, {"camera_info"}, camera_info=info(binning=(2, 2)))  # the same camera binned 2x2
    assert pipe.rectifiers.computed == 3 and (out.width, out.height) == (W // 2, H // 2)
    np.testing.assert_array_equal(out.camera_info.k, [26.0, 0.0, 19.75, 0.0, 26.0, 14.75, 0.0, 0.0, 1.0])


def test_refused_camera_info_falls_back_to_the_last_good_one(predictor: Any, rgb: np.ndarray) -> None:
    pipe = FramePipeline(predictor)
    bad = info(d=[0.1, 0.2])
    out = pipe.process(rgb, {"camera_info"}, camera_info=bad)  # nothing good yet: estimated
    assert out.intrinsics_estimated and out.camera_note == "estimating the intrinsics"
    assert str(out.intrinsics_error) == "camera_info.d: expected 5 coefficients for plumb_bob, found 2"
    pipe.process(rgb, {"camera_info"}, camera_info=info())
    out = pipe.process(rgb, {"camera_info"}, camera_info=bad)
    assert not out.intrinsics_estimated and out.rectified
    assert out.camera_note == f"using the last good camera_info ({W}x{H})"
    np.testing.assert_array_equal(out.k, np.array(P).reshape(3, 4)[:, :3])
    out = pipe.process(rgb[:, :40], {"camera_info"}, camera_info=bad)  # another size: no good one for it
    assert out.intrinsics_estimated and out.camera_note == "estimating the intrinsics"


def test_roi_and_binning_through_the_pipeline(predictor: Any, rgb: np.ndarray) -> None:
    full_k = [120.0, 0.0, 81.0, 0.0, 124.0, 58.0, 0.0, 0.0, 1.0]
    msg = info(d=[0.0] * 5, k=full_k, p=[0.0] * 12, width=2 * W + 20, height=2 * H + 10, binning=(2, 2),
               roi=(20, 10, 2 * W, 2 * H))
    out = FramePipeline(predictor).process(rgb, {"camera_info"}, camera_info=msg)
    assert out.intrinsics_error is None and not out.rectified
    np.testing.assert_array_equal(out.k, [[60.0, 0.0, 30.5], [0.0, 62.0, 24.0], [0.0, 0.0, 1.0]])


def test_view_options_and_fixed_distortion(predictor: Any, rgb: np.ndarray) -> None:
    wide = FramePipeline(predictor, FrameConfig(rectified_fov_deg=100.0, rectified_size=(64, 48)))
    out = wide.process(rgb, {"depth", "camera_info"}, camera_info=info("equidistant", FISHEYE, p=[0.0] * 12))
    assert (out.width, out.height) == (64, 48) and depth_of(out).shape == (48, 64)
    assert math.isclose(out.k[0, 0], 32.0 / math.tan(math.radians(50.0)))
    fixed = FramePipeline(predictor, FrameConfig(intrinsics_source="fixed", fixed_intrinsics=(60.0, 62.0, 40.5, 29.0),
                                                 fixed_distortion=tuple(D)))
    out = fixed.process(rgb, {"camera_info"})
    assert out.rectified and out.intrinsics_error is None
    np.testing.assert_array_equal(out.k.ravel(), K)  # no P: rectified into K
    with pytest.raises(Exception, match="fixed_distortion: expected 5 coefficients for plumb_bob, found 3"):
        FrameConfig(intrinsics_source="fixed", fixed_intrinsics=(60.0, 62.0, 40.5, 29.0), fixed_distortion=(0.1,) * 3)
    with pytest.raises(Exception, match=r"rectified_fov_deg: expected 0 .* found 170"):
        FrameConfig(rectified_fov_deg=170.0)
    with pytest.raises(Exception, match=r"output_grid: expected one of rectified, raw"):
        FrameConfig(output_grid="warped")


def test_rectify_off_uses_k_and_says_distortion_is_ignored(predictor: Any, rgb: np.ndarray) -> None:
    out = FramePipeline(predictor, FrameConfig(rectify=False)).process(rgb, {"camera_info"}, camera_info=info())
    assert not out.rectified and out.distortion_ignored
    np.testing.assert_array_equal(out.k.ravel(), K)
