"""Rectification (moge2_ros.pipeline.rectify, moge2_ros.geometry.remap): the OpenCV maps are the lens models of
ROS (checked against the distortion formulas written out here), the device remap samples where cv2.remap does,
the raw-grid way back inverts the maps, and the maps are computed once per camera."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from moge2_ros.geometry.remap import pixel_map_to_grid, remap
from moge2_ros.io.camera_model import camera_model_from_info
from moge2_ros.pipeline.rectify import Rectifier, RectifierCache, rectify_maps

W, H = 80, 60
K = [60.0, 0.0, 40.5, 0.0, 62.0, 29.0, 0.0, 0.0, 1.0]
P = [52.0, 0.0, 39.5, 0.0, 0.0, 52.0, 29.5, 0.0, 0.0, 0.0, 1.0, 0.0]
ANGLE = math.radians(4.0)
R = [math.cos(ANGLE), 0.0, math.sin(ANGLE), 0.0, 1.0, 0.0, -math.sin(ANGLE), 0.0, math.cos(ANGLE)]
CASES = {
    "plumb_bob": [-0.25, 0.08, 1e-3, -2e-3, -0.01],
    "rational_polynomial": [-0.25, 0.08, 1e-3, -2e-3, 0.01, 0.02, -0.01, 0.005],
    "equidistant": [0.08, -0.02, 0.005, -0.001],
}


def camera_info(model: str, d: Any, r: Any = R, p: Any = P) -> SimpleNamespace:
    roi = SimpleNamespace(x_offset=0, y_offset=0, width=0, height=0, do_rectify=False)
    return SimpleNamespace(width=W, height=H, distortion_model=model, d=list(d), k=list(K), r=list(r), p=list(p),
                           binning_x=0, binning_y=0, roi=roi)


def distort(model: str, d: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ROS / OpenCV lens models written out: normalised undistorted -> normalised distorted coordinates."""
    if model == "equidistant":
        r = np.hypot(x, y)
        theta = np.arctan(r)
        theta_d = theta * (1 + d[0] * theta**2 + d[1] * theta**4 + d[2] * theta**6 + d[3] * theta**8)
        scale = np.where(r > 0, theta_d / np.where(r > 0, r, 1.0), 1.0)
        return x * scale, y * scale
    k = np.zeros(8)
    k[: d.size] = d
    k1, k2, p1, p2, k3, k4, k5, k6 = k
    r2 = x * x + y * y
    radial = (1 + k1 * r2 + k2 * r2**2 + k3 * r2**3) / (1 + k4 * r2 + k5 * r2**2 + k6 * r2**3)
    return (x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
            y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y)


@pytest.mark.parametrize("model", list(CASES))
def test_maps_are_the_ros_lens_model(model: str) -> None:
    """map(u, v) = K distort(R^T P^-1 (u, v, 1)): the maps image_proc builds from K, D, R, P."""
    cam = camera_model_from_info(camera_info(model, CASES[model]), W, H)
    k_rect = np.array(P).reshape(3, 4)[:, :3]
    map_x, map_y = rectify_maps(cam, k_rect, W, H)
    assert map_x.shape == (H, W) and map_x.dtype == np.float32
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(k_rect).T @ np.array(R).reshape(3, 3)
    xd, yd = distort(model, cam.d, rays[..., 0] / rays[..., 2], rays[..., 1] / rays[..., 2])
    k = np.array(K).reshape(3, 3)
    np.testing.assert_allclose(map_x, k[0, 0] * xd + k[0, 2], atol=2e-3)
    np.testing.assert_allclose(map_y, k[1, 1] * yd + k[1, 2], atol=2e-3)


@pytest.mark.parametrize("model", list(CASES))
def test_device_remap_equals_cv2_remap(model: str) -> None:
    cam = camera_model_from_info(camera_info(model, CASES[model]), W, H)
    rectifier = Rectifier(cam, "cpu")
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    ours = rectifier.rectify(rgb).permute(1, 2, 0).numpy() * 255.0
    map_x, map_y = rectify_maps(cam, rectifier.k, W, H)
    ref = cv2.remap(rgb.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    assert np.abs(ours - ref).max() < 0.05  # float32 arithmetic; cv2's 8-bit path quantises weights to 1/32 px
    ref8 = cv2.remap(rgb, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT).astype(np.float32)
    assert np.abs(ours - ref8).mean() < 1.0


def test_identity_map_is_identity_and_outside_is_zero() -> None:
    image = torch.arange(2 * 5 * 7, dtype=torch.float32).reshape(2, 5, 7)
    v, u = torch.meshgrid(torch.arange(5.0), torch.arange(7.0), indexing="ij")
    torch.testing.assert_close(remap(image, pixel_map_to_grid(u, v, 7, 5)), image, rtol=0, atol=1e-4)
    half = remap(image, pixel_map_to_grid(u + 0.5, v, 7, 5))  # halfway between columns; the last mixes in 0
    torch.testing.assert_close(half[:, :, :-1], (image[:, :, :-1] + image[:, :, 1:]) / 2, rtol=0, atol=1e-4)
    torch.testing.assert_close(half[:, :, -1], image[:, :, -1] / 2, rtol=0, atol=1e-4)
    nearest = remap(image, pixel_map_to_grid(u + 0.3, v - 0.2, 7, 5), mode="nearest")
    torch.testing.assert_close(nearest, image)


@pytest.mark.parametrize("model", list(CASES))
def test_raw_grid_inverts_the_maps(model: str) -> None:
    """A raw pixel sent to the rectified view and sampled back from the maps lands on itself."""
    cam = camera_model_from_info(camera_info(model, CASES[model]), W, H)
    rectifier = Rectifier(cam, "cpu")
    raw = rectifier.raw_grid()
    assert raw.valid.float().mean() > 0.6
    map_x, map_y = rectify_maps(cam, rectifier.k, W, H)
    maps = torch.from_numpy(np.stack([map_x, map_y]))
    back = remap(maps, raw.grid)  # bilinear: the maps are smooth
    v, u = np.mgrid[0:H, 0:W]
    valid = raw.valid.numpy()
    inner = valid & (raw.grid[0].abs() <= 1.0).all(-1).numpy()  # bilinear needs both neighbours inside
    err = np.hypot(back[0].numpy() - u, back[1].numpy() - v)[inner]
    assert err.max() < 0.05, err.max()
    # depth along the raw axis: a plane z = 2 in the raw frame is z_rect = 2 * (R ray)_z / ray_z ... scaled back
    np.testing.assert_allclose(raw.rays[..., 2].numpy(), 1.0)
    rays = raw.rays.numpy()[valid]
    z_rect = (rays @ np.array(R).reshape(3, 3).T)[:, 2]
    np.testing.assert_allclose(raw.z_scale.numpy()[valid] * z_rect, 1.0, rtol=1e-5)


def test_cache_computes_once_per_camera_and_view() -> None:
    cache = RectifierCache(size=2)
    a = camera_model_from_info(camera_info("plumb_bob", CASES["plumb_bob"]), W, H)
    b = camera_model_from_info(camera_info("equidistant", CASES["equidistant"]), W, H)
    first = cache.get(a, "cpu")
    assert cache.get(a, "cpu") is first and cache.computed == 1
    cache.get(a, "cpu", fov_deg=90.0)
    cache.get(b, "cpu")
    assert cache.computed == 3
    assert cache.get(a, "cpu") is not first and cache.computed == 4  # evicted (size 2), computed again
