"""The camera of a CameraInfo (moge2_ros.io.camera_model): binning and ROI as image_geometry (hand-computed), the
distortion models, the rectified view, and one-line errors for malformed calibrations."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from moge2_ros.io.camera_model import (
    camera_info_key,
    camera_model_from_info,
    camera_model_from_k,
    check_distortion,
    rectified_intrinsics,
)
from moge2_ros.io.msg_codec import ConversionError

K = [500.0, 0.0, 320.0, 0.0, 505.0, 240.0, 0.0, 0.0, 1.0]
P = [450.0, 0.0, 322.0, -45.0, 0.0, 455.0, 238.0, 0.0, 0.0, 0.0, 1.0, 0.0]
PLUMB = [-0.28, 0.07, 1e-4, -2e-4, 0.0]


def info(width: int = 640, height: int = 480, model: str = "plumb_bob", d: Any = PLUMB, k: Any = K,
         r: Any = None, p: Any = P, binning: tuple[int, int] = (0, 0),
         roi: tuple[int, int, int, int] = (0, 0, 0, 0)) -> SimpleNamespace:
    box = SimpleNamespace(x_offset=roi[0], y_offset=roi[1], width=roi[2], height=roi[3], do_rectify=False)
    return SimpleNamespace(width=width, height=height, distortion_model=model, d=list(d), k=list(k),
                           r=list(np.eye(3).ravel() if r is None else r), p=list(p), binning_x=binning[0],
                           binning_y=binning[1], roi=box)


def test_full_image_camera() -> None:
    cam = camera_model_from_info(info(), 640, 480)
    assert cam.distortion_model == "plumb_bob" and cam.distorted
    np.testing.assert_array_equal(cam.k.ravel(), K)
    np.testing.assert_array_equal(cam.p.ravel(), P)
    np.testing.assert_array_equal(cam.d, PLUMB)
    np.testing.assert_array_equal(cam.r, np.eye(3))


def test_binning_and_roi_follow_image_geometry() -> None:
    """ROI shifts the principal point (K and P), then binning divides fx, cx, Tx by bx and fy, cy, Ty by by."""
    cam = camera_model_from_info(info(roi=(100, 40, 400, 320), binning=(2, 4)), 200, 80)
    np.testing.assert_array_equal(cam.k, [[250.0, 0.0, 110.0], [0.0, 126.25, 50.0], [0.0, 0.0, 1.0]])
    np.testing.assert_array_equal(cam.p, [[225.0, 0.0, 111.0, -22.5], [0.0, 113.75, 49.5, 0.0], [0.0, 0.0, 1.0, 0.0]])
    assert cam.binning == (2, 4) and cam.roi == (100, 40, 400, 320) and cam.info_size == (640, 480)
    binned = camera_model_from_info(info(binning=(2, 2)), 320, 240)
    np.testing.assert_array_equal(binned.k, [[250.0, 0.0, 160.0], [0.0, 252.5, 120.0], [0.0, 0.0, 1.0]])
    roi_only = camera_model_from_info(info(roi=(10, 20, 320, 240)), 320, 240)
    np.testing.assert_array_equal(roi_only.k, [[500.0, 0.0, 310.0], [0.0, 505.0, 220.0], [0.0, 0.0, 1.0]])
    # a binning of 1 and an ROI of the whole sensor change nothing
    same = camera_model_from_info(info(binning=(1, 1), roi=(0, 0, 640, 480)), 640, 480)
    np.testing.assert_array_equal(same.k.ravel(), K)


def test_zero_distortion_is_pinhole_whatever_the_model_name() -> None:
    for model, d in (("plumb_bob", [0.0] * 5), ("", []), ("??", [0.0] * 3), ("equidistant", [0.0] * 4)):
        cam = camera_model_from_info(info(model=model, d=d), 640, 480)
        assert cam.distortion_model == "pinhole" and not cam.distorted and cam.d.size == 0


def test_zero_r_is_identity_and_zero_p_is_absent() -> None:
    cam = camera_model_from_info(info(r=[0.0] * 9, p=[0.0] * 12), 640, 480)
    np.testing.assert_array_equal(cam.r, np.eye(3))
    assert cam.p is None
    k, w, h = rectified_intrinsics(cam)
    np.testing.assert_array_equal(k.ravel(), K)
    assert (w, h) == (640, 480)


def test_models_and_coefficient_counts() -> None:
    assert check_distortion("rational_polynomial", [0.1] * 8)[0] == "rational_polynomial"
    assert check_distortion("equidistant", [0.1, 0.0, 0.0, 0.0])[0] == "equidistant"
    assert check_distortion("plumb_bob", PLUMB)[0] == "plumb_bob"


def test_rectified_view() -> None:
    cam = camera_model_from_info(info(), 640, 480)
    k, w, h = rectified_intrinsics(cam)
    np.testing.assert_array_equal(k, np.array(P).reshape(3, 4)[:, :3])
    k, w, h = rectified_intrinsics(cam, size=(320, 240))  # half size: f / 2, (c + 0.5) / 2 - 0.5
    np.testing.assert_allclose(k, [[225.0, 0.0, 160.75], [0.0, 227.5, 118.75], [0.0, 0.0, 1.0]])
    k, w, h = rectified_intrinsics(cam, fov_deg=120.0)
    assert math.isclose(k[0, 0], 320.0 / math.tan(math.radians(60.0))) and k[0, 0] == k[1, 1]
    assert (k[0, 2], k[1, 2]) == (319.5, 239.5)
    with pytest.raises(ConversionError, match=r"rectified_fov_deg: expected a value in \(0, 150\] degrees"):
        rectified_intrinsics(cam, fov_deg=170.0)


def test_fixed_k_with_distortion() -> None:
    k = np.array(K).reshape(3, 3)
    cam = camera_model_from_k(k, 640, 480, "equidistant", [0.1, 0.01, 0.0, 0.0])
    assert cam.distortion_model == "equidistant" and cam.p is None
    with pytest.raises(ConversionError, match=r"fixed_distortion: expected 4 coefficients for equidistant, found 5"):
        camera_model_from_k(k, 640, 480, "equidistant", [0.1] * 5)


@pytest.mark.parametrize(("msg", "size", "pattern"), [
    (info(model="kannala_brandt"), (640, 480),
     r"^camera_info.distortion_model: expected one of plumb_bob, rational_polynomial, equidistant for a non-zero D, "
     r"found 'kannala_brandt'$"),
    (info(d=[0.1] * 4), (640, 480), r"^camera_info.d: expected 5 coefficients for plumb_bob, found 4$"),
    (info(model="rational_polynomial"), (640, 480),
     r"^camera_info.d: expected 8 coefficients for rational_polynomial, found 5$"),
    (info(d=[math.nan, 0, 0, 0, 0]), (640, 480), r"^camera_info.d: expected finite values, found d\[0\] = nan$"),
    (info(p=[0.0, 0, 0, -45.0, 0, 0, 0, 0, 0, 0, 0, 0]), (640, 480),
     r"^camera_info.p\[:3, :3\]: expected fx = K\[0\] > 0 and fy = K\[4\] > 0"),
    (info(p=[450.0, 0, 322, 0, 0, math.inf, 238, 0, 0, 0, 1, 0]), (640, 480),
     r"^camera_info.p: expected finite values, found p\[5\] = inf$"),
    (info(p=[1e-30, 0, 322, 0, 0, 1e-30, 238, 0, 0, 0, 1, 0]), (640, 480),
     r"^camera_info.p: horizontal field of view 180 deg \(fx = 1e-30 px over 640 px\) is outside \[1, 175\] deg$"),
    (info(p=[45.0, 0, 322, 0, 0, 45, 238, 0, 0, 0, 1, 0]), (640, 480),
     r"^camera_info.p: rectified fx = 45 px is not within 8x of K's 500 px \(P does not belong to this K\)$"),
    (info(r=[1.0, 0, 0, 0, 1, 0, 0, 0, -1]), (640, 480), r"^camera_info.r: expected a rotation matrix .* det = -1$"),
    (info(r=[2.0, 0, 0, 0, 1, 0, 0, 0, 1]), (640, 480),
     r"^camera_info.r: expected a rotation matrix \(R R\^T = I, det \+1\), found max \|R R\^T - I\| = 3"),
    (info(roi=(400, 0, 320, 240)), (320, 240),
     r"^camera_info.roi: expected a region inside the calibrated 640x480 image, found x_offset=400, y_offset=0, "
     r"width=320, height=240$"),
    (info(binning=(3, 1)), (213, 480), r"^camera_info: binning 3x1 does not divide the image 640x480$"),
    (info(binning=(2, 2), roi=(1, 0, 320, 240)), (160, 120),
     r"^camera_info: binning 2x2 does not divide the region of interest 320x240 at offset \(1, 0\)$"),
    (info(), (320, 240), r"^camera_info: expected the size of the image 320x240 \(or 0x0\), found 640x480$"),
    (info(binning=(2, 2)), (640, 480),
     r"^camera_info: expected the size of the image 640x480 \(or 0x0\), found 640x480 binned 2x2 = 320x240$"),
    (info(width=0, height=0, binning=(2, 2)), (320, 240),
     r"^camera_info: expected the calibrated size \(width, height > 0\) with binning or a region of interest"),
    (info(k=[500.0, 0, 320, 0, 505, 240, 0, 0, 0]), (640, 480), r"^camera_info.k: expected K\[3\] = 0 and last row"),
], ids=["model", "d-length", "d-length-rational", "d-nan", "p-zero", "p-inf", "p-implausible", "p-not-k",
        "r-reflection",
        "r-not-orthonormal", "roi-outside", "binning-size", "binning-roi", "size", "size-binned", "binning-0x0",
        "k-last-row"])
def test_malformed_calibrations_are_refused_with_one_line(msg: Any, size: tuple[int, int], pattern: str) -> None:
    with pytest.raises(ConversionError, match=pattern) as info_:
        camera_model_from_info(msg, *size)
    assert "\n" not in str(info_.value)


def test_key_is_content() -> None:
    assert camera_info_key(info()) == camera_info_key(info())
    assert camera_info_key(info()) != camera_info_key(info(d=[-0.29, 0.07, 1e-4, -2e-4, 0.0]))
    assert camera_info_key(SimpleNamespace(width="x")) is None
