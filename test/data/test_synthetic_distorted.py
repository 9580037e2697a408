"""Rendering through real camera models (moge2_ros.data.synthetic_render: LensCamera, render_distorted).

The rays are checked against OpenCV's own projection (the renderer undistorts, OpenCV distorts back), the depth
against the scene's analytic surfaces, zero distortion against the pinhole renderer, and ROI + binning against
crop-then-bin of the full sensor.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from moge2_ros.data.example import example_room  # noqa: E402
from moge2_ros.data.synthetic import camera_pose, render_scene  # noqa: E402
from moge2_ros.data.synthetic_render import (  # noqa: E402
    LensCamera,
    bin_image,
    lens_rays,
    render_distorted,
    render_rectified,
)
from moge2_ros.errors import DatasetError  # noqa: E402

W, H = 160, 120
K = np.array([[100.0, 0.0, 80.5], [0.0, 101.0, 59.0], [0.0, 0.0, 1.0]])
FISHEYE_F = (W - 1) / 2 / (math.pi / 2)  # theta = 90 degrees at the left and right edges: a 180 degree fisheye
CAMERAS = {
    "plumb_bob": LensCamera(W, H, K, d=(-0.35, 0.12, 1e-3, -5e-4, 0.01)),
    "rational_polynomial": LensCamera(W, H, K, d=(0.8, -0.2, 1e-3, -5e-4, 0.05, 1.2, 0.1, 0.02),
                                      distortion_model="rational_polynomial"),
    "equidistant": LensCamera(W, H, [[FISHEYE_F, 0.0, (W - 1) / 2], [0.0, FISHEYE_F, (H - 1) / 2], [0.0, 0.0, 1.0]],
                              d=(0.02, -0.004, 5e-4, 0.0), distortion_model="equidistant"),
}
POSE = camera_pose((0.2, 0.1, 0.6), yaw=0.15, pitch=0.05, roll=0.02)


@pytest.fixture(scope="module")
def scene():
    return example_room()


@pytest.fixture(scope="module")
def renders(scene):
    return {name: render_distorted(scene, cam, POSE) for name, cam in CAMERAS.items()}


def _surface_distance(scene, pts_world: np.ndarray) -> np.ndarray:
    """Distance of world points ``(N, 3)`` to the nearest plane or sphere surface of the example room."""
    dist = [np.abs(pts_world @ plane[:3] - plane[3]) for plane in scene.planes]
    dist += [np.abs(np.linalg.norm(pts_world - c, axis=1) - r) for c, r in zip(scene.sphere_centre,
                                                                                  scene.sphere_radius)]
    return np.min(dist, axis=0)


def _project(name: str, pts_cam: np.ndarray) -> np.ndarray:
    cam = CAMERAS[name]
    obj = pts_cam.reshape(-1, 1, 3).astype(np.float64)
    if name == "equidistant":
        uv, _ = cv2.fisheye.projectPoints(obj, np.zeros((3, 1)), np.zeros((3, 1)), cam.k, np.asarray(cam.d))
    else:
        uv, _ = cv2.projectPoints(obj, np.zeros(3), np.zeros(3), cam.k, np.asarray(cam.d))
    return uv.reshape(-1, 2)


@pytest.mark.parametrize("name", list(CAMERAS))
def test_points_reproject_onto_pixel_centres(name: str, renders, scene) -> None:
    """depth x undistorted ray, projected back by OpenCV, lands on the pixel centre (< 0.01 px), and lies on the
    scene's surfaces (the depth is exact along that ray)."""
    out = renders[name]
    assert out.rgb.shape == (H, W, 3) and out.depth.shape == (H, W)
    valid = np.isfinite(out.depth)
    assert valid.mean() > 0.7
    rays = out.rays[valid]
    assert np.all(rays[:, 2] > 0)  # rays at or beyond 90 degrees have no depth
    assert name == "equidistant" or np.all(rays[:, 2] == 1.0)
    pts_cam = out.depth[valid, None].astype(np.float64) * rays / rays[:, 2:]
    jj, ii = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    centres = np.stack([jj[valid], ii[valid]], axis=-1)
    err = np.abs(_project(name, pts_cam) - centres).max()
    assert err < 0.01, err
    pts_world = pts_cam @ POSE[:3, :3].T + POSE[:3, 3]
    depth = out.depth[valid].astype(np.float64)
    gap = _surface_distance(scene, pts_world)
    assert np.all(gap < 1e-5 + 2e-6 * depth), (gap.max(), (gap / depth).max())


def test_fisheye_sees_180_degrees(renders) -> None:
    """The 180 degree fisheye: rays at or beyond 90 degrees off axis exist, are rendered (colour) and have no
    depth; the rays agree with cv2.fisheye.undistortPoints where that can represent them."""
    out, cam = renders["equidistant"], CAMERAS["equidistant"]
    rays = out.rays
    unit = rays / np.linalg.norm(rays, axis=-1, keepdims=True)
    theta = np.degrees(np.arccos(np.clip(unit[..., 2], -1, 1)))
    # theta of a pixel solves the equidistant model theta_d = theta (1 + k1 theta^2 + ... + k4 theta^8).
    k1, k2, k3, k4 = cam.d
    for i, j in ((H // 2, 0), (0, 0), (H - 1, W // 3)):
        t = math.radians(theta[i, j])
        theta_d = math.hypot((j - cam.k[0, 2]) / cam.k[0, 0], (i - cam.k[1, 2]) / cam.k[1, 1])
        assert t * (1 + k1 * t ** 2 + k2 * t ** 4 + k3 * t ** 6 + k4 * t ** 8) == pytest.approx(theta_d, abs=1e-9)
    beyond = theta >= 90.0
    assert beyond.any() and theta.max() > 100.0
    assert np.isnan(out.depth[beyond]).all()
    assert out.rgb[beyond].max() > 0  # still shaded (walls or sky)
    # OpenCV's fisheye undistortion gives x/z, fine well inside 90 degrees.
    inner = theta < 70.0
    jj, ii = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    pts = np.stack([jj[inner], ii[inner]], axis=-1).reshape(-1, 1, 2)
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-14)
    xy = cv2.fisheye.undistortPoints(pts, cam.k, np.asarray(cam.d), criteria=crit).reshape(-1, 2)
    np.testing.assert_allclose(xy, rays[inner][:, :2], atol=1e-7)


def test_zero_distortion_is_the_pinhole_render(scene) -> None:
    """plumb_bob / rational_polynomial with D = 0 render exactly what render_scene does; OpenCV's undistortion
    of a pinhole gives the same rays to rounding."""
    ref = render_scene(scene, K, POSE, W, H)
    for model, n in (("plumb_bob", 5), ("rational_polynomial", 8)):
        cam = LensCamera(W, H, K, d=(0.0,) * n, distortion_model=model)
        out = render_distorted(scene, cam, POSE)
        np.testing.assert_array_equal(out.rgb, ref.image)
        np.testing.assert_array_equal(out.depth, ref.depth)
        np.testing.assert_array_equal(cam.p[:, :3], K)
        np.testing.assert_array_equal(cam.rectified()[0], K)
    # The OpenCV path (tiny non-zero D) converges to the pinhole rays.
    rays, ok = lens_rays(K, (1e-12, 0.0, 0.0, 0.0, 0.0), "plumb_bob", W, H)
    jj, ii = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    assert ok.all()
    np.testing.assert_allclose(rays[..., 0], (jj - K[0, 2]) / K[0, 0], atol=1e-9)
    np.testing.assert_allclose(rays[..., 1], (ii - K[1, 2]) / K[1, 1], atol=1e-9)


def test_roi_and_binning_equal_crop_then_bin(scene) -> None:
    d = (-0.2, 0.05, 0.0, 0.0, 0.0)
    full = render_distorted(scene, LensCamera(W, H, K, d=d), POSE)
    cam = LensCamera(W, H, K, d=d, binning_x=2, binning_y=2, roi=(16, 8, 128, 96))
    out = render_distorted(scene, cam, POSE)
    assert cam.image_size == (64, 48) and out.rgb.shape == (48, 64, 3) and out.depth.shape == (48, 64)
    crop_rgb = full.rgb[8:104, 16:144].astype(np.float64)
    expect_rgb = np.floor(crop_rgb.reshape(48, 2, 64, 2, 3).mean(axis=(1, 3)) + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(out.rgb, expect_rgb)
    crop_depth = full.depth[8:104, 16:144].astype(np.float64)
    np.testing.assert_allclose(out.depth, crop_depth.reshape(48, 2, 64, 2).mean(axis=(1, 3)), rtol=1e-6)
    # CameraInfo semantics (image_geometry): K, D, P of the full sensor; size = full sensor; roi in full pixels.
    info = out.camera_info
    assert (info.width, info.height, info.binning_x, info.binning_y) == (W, H, 2, 2)
    assert (info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height) == (16, 8, 128, 96)
    assert info.roi.do_rectify and info.distortion_model == "plumb_bob" and info.d == list(d)
    np.testing.assert_array_equal(np.reshape(info.k, (3, 3)), K)
    assert np.reshape(info.r, (3, 3)).tolist() == np.eye(3).tolist()
    raw_k = cam.raw_k()
    np.testing.assert_allclose(raw_k, [[50.0, 0.0, (80.5 - 16) / 2], [0.0, 50.5, (59.0 - 8) / 2], [0, 0, 1]])
    k_rect, rw, rh = cam.rectified()
    p = np.reshape(info.p, (3, 4))
    np.testing.assert_allclose(k_rect, [[p[0, 0] / 2, 0, (p[0, 2] - 16) / 2], [0, p[1, 1] / 2, (p[1, 2] - 8) / 2],
                                        [0, 0, 1]])
    rect = render_rectified(scene, cam, POSE)
    assert (rw, rh) == (64, 48) and rect.depth.shape == (48, 64)
    # A full-sensor camera says roi all zero.
    assert full.camera_info.roi.width == 0 and not full.camera_info.roi.do_rectify
    assert bin_image(full.rgb, (0, 0, W, H), (1, 1)).tolist() == full.rgb.tolist()


def test_rectified_projection(scene) -> None:
    """The default P: square pixels, centred; for plumb_bob / rational every rectified pixel sees through the
    sensor; for the 180 degree fisheye a 120 degree pinhole.  The rectified render is the pinhole render in P."""
    for name in ("plumb_bob", "rational_polynomial"):
        cam = CAMERAS[name]
        p = cam.p
        assert p[0, 0] == p[1, 1] and p[0, 2] == (W - 1) / 2 and p[1, 2] == (H - 1) / 2 and not p[:, 3].any()
        jj, ii = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
        rays = np.stack([(jj - p[0, 2]) / p[0, 0], (ii - p[1, 2]) / p[1, 1], np.ones_like(jj)], axis=-1)
        uv = _project(name, rays.reshape(-1, 3))
        assert uv[:, 0].min() > -0.5 - 0.05 and uv[:, 0].max() < W - 0.5 + 0.05
        assert uv[:, 1].min() > -0.5 - 0.05 and uv[:, 1].max() < H - 0.5 + 0.05
    fish = CAMERAS["equidistant"]
    fov = 2 * math.degrees(math.atan(W / 2 / fish.p[0, 0]))
    assert fov == pytest.approx(120.0)
    rect = render_rectified(scene, fish, POSE)
    ref = render_scene(scene, fish.p[:, :3], POSE, W, H)
    np.testing.assert_array_equal(rect.depth, ref.depth)


def test_bad_cameras() -> None:
    with pytest.raises(DatasetError, match="distortion_model"):
        LensCamera(W, H, K, d=(0.1,) * 5, distortion_model="kannala")
    with pytest.raises(DatasetError, match="coefficients"):
        LensCamera(W, H, K, d=(0.1,) * 5, distortion_model="equidistant")
    with pytest.raises(DatasetError, match="roi"):
        LensCamera(W, H, K, roi=(100, 0, 100, 50))
    with pytest.raises(DatasetError, match="binning"):
        LensCamera(W, H, K, binning_x=3)
    with pytest.raises(DatasetError, match="k must be"):
        LensCamera(W, H, [[100.0, 0, 80], [1.0, 100, 60], [0, 0, 1]])
