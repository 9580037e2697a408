"""moge2_ros.io.plausibility: every rule of check_intrinsics with a passing and a failing case next to its limit,
the size-free bounds, and the form of the message (one short line, %g values)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from moge2_ros.errors import InputError
from moge2_ros.io.msg_codec import ConversionError
from moge2_ros.io.plausibility import (
    MAX_ASPECT,
    MAX_FOCAL_PX,
    MAX_FOV_DEG,
    MAX_IMAGE_SIDE,
    MAX_PRINCIPAL_POINT_PX,
    MIN_FOCAL_PX,
    MIN_FOV_DEG,
    PRINCIPAL_POINT_MARGIN,
    check_intrinsics,
    fov_deg,
)

W, H = 640, 480
EPS = 1e-6  # relative step across a limit


def k_of(fx: float, fy: float, cx: float = W / 2, cy: float = H / 2) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def focal_for(side: float, fov: float) -> float:
    """The focal length (px) that gives a side of ``side`` px the field of view ``fov`` degrees."""
    return side / (2.0 * math.tan(math.radians(fov) / 2.0))


def rejects(k: np.ndarray, match: str, width: int | None = W, height: int | None = H) -> str:
    with pytest.raises(InputError, match=match) as info:
        check_intrinsics(k, width, height, "k")
    text = str(info.value)
    assert "\n" not in text and len(text) < 200 and text.startswith("k: "), text
    return text


def test_constants_are_consistent() -> None:
    assert (MIN_FOV_DEG, MAX_FOV_DEG, MAX_ASPECT, PRINCIPAL_POINT_MARGIN) == (1.0, 175.0, 8.0, 1.0)
    assert fov_deg(W, W / 2) == pytest.approx(90.0)
    assert MIN_FOCAL_PX == pytest.approx(focal_for(1, MAX_FOV_DEG)) and 0.0218 < MIN_FOCAL_PX < 0.0219
    assert MAX_FOCAL_PX == pytest.approx(focal_for(MAX_IMAGE_SIDE, MIN_FOV_DEG)) and 3.75e6 < MAX_FOCAL_PX < 3.76e6
    assert MAX_PRINCIPAL_POINT_PX == 2 * MAX_IMAGE_SIDE


def test_a_real_camera_passes_and_is_returned_as_a_float64_copy() -> None:
    k = k_of(525.0, 525.0, 319.5, 239.5)  # Kinect / TUM RGB-D
    out = check_intrinsics(k, W, H, "k")
    assert out.dtype == np.float64 and out.shape == (3, 3) and out is not k
    np.testing.assert_array_equal(out, k)
    np.testing.assert_array_equal(check_intrinsics(k.ravel().tolist(), W, H), k)  # 9 row-major values
    np.testing.assert_array_equal(check_intrinsics(k.astype(np.float32), np.int64(W), np.int64(H)), k)


@pytest.mark.parametrize("k, match", [
    (np.eye(4), r"shape \(4, 4\)"),
    (np.ones(8), r"shape \(8,\)"),
    ("abc", "3x3 matrix of numbers"),
])
def test_form(k: object, match: str) -> None:
    rejects(k, match)  # type: ignore[arg-type]


@pytest.mark.parametrize("index", range(9))
@pytest.mark.parametrize("value, shown", [(math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf")])
def test_every_entry_must_be_finite(index: int, value: float, shown: str) -> None:
    k = k_of(500.0, 500.0).ravel()
    k[index] = value
    assert rejects(k, "every entry must be finite") == f"k: every entry must be finite, found K[{index}] = {shown}"
    assert rejects(k, "finite", None, None)


@pytest.mark.parametrize("fx, fy", [(0.0, 500.0), (500.0, 0.0), (-500.0, 500.0), (500.0, -1e-300)])
def test_focal_lengths_positive(fx: float, fy: float) -> None:
    rejects(k_of(fx, fy), "focal lengths must be > 0 pixels")
    rejects(k_of(fx, fy), "focal lengths must be > 0 pixels", None, None)


def test_pixel_aspect() -> None:
    # fx = 400: a 77 deg horizontal view; fy from 50 (a 157 deg vertical view) to 3200 (8.6 deg): all views pass
    for fy in (400.0 / MAX_ASPECT, 400.0 * MAX_ASPECT):
        check_intrinsics(k_of(400.0, fy), W, H)
        check_intrinsics(k_of(400.0, fy))
    step = 1e-4  # %g shows 6 digits: a value 1e-6 beyond the limit would read as the limit
    assert rejects(k_of(400.0, 50.0 * (1 - step)), r"pixel aspect fx / fy = 8\.0008 .* outside \[1/8, 8\]")
    rejects(k_of(400.0, 3200.0 * (1 + step)), r"pixel aspect fx / fy = 0\.124988 .* outside \[1/8, 8\]")
    rejects(k_of(400.0, 50.0 * (1 - EPS)), "pixel aspect", None, None)


@pytest.mark.parametrize("axis", ["horizontal", "vertical"])
def test_field_of_view(axis: str) -> None:
    side = W if axis == "horizontal" else H
    narrow, wide = focal_for(side, MIN_FOV_DEG), focal_for(side, MAX_FOV_DEG)  # 36669 / 13.97 px for 640 px

    def k(focal: float) -> np.ndarray:
        # the other axis: a focal that keeps its own view (and the aspect) inside the limits
        other = focal / 2.0 if focal > 1000 else focal * 2.0
        return k_of(focal, other) if axis == "horizontal" else k_of(other, focal)

    check_intrinsics(k(narrow * (1 - EPS)), W, H)
    check_intrinsics(k(wide * (1 + EPS)), W, H)
    text = rejects(k(narrow * (1 + EPS)), f"{axis} field of view 0.999999 deg")
    assert text.endswith("is outside [1, 175] deg"), text
    rejects(k(wide * (1 - EPS)), f"{axis} field of view 175 deg")


def test_the_cases_of_the_issue() -> None:
    """fx = 1e30 gave depths of ~5e27 m, fx = 1e-30 and cx = 1e30 were accepted."""
    assert rejects(k_of(1e30, 1e30), "horizontal field of view") == (
        "k: horizontal field of view 3.66693e-26 deg (fx = 1e+30 px over 640 px) is outside [1, 175] deg")
    rejects(k_of(1e-30, 1e-30), r"horizontal field of view 180 deg \(fx = 1e-30 px")
    assert rejects(k_of(500.0, 500.0, cx=1e30), "principal point") == (
        "k: principal point cx = 1e+30 px is outside [-640, 1280] px (the 640 px image and 1 image size beyond "
        "each edge)")


@pytest.mark.parametrize("name", ["cx", "cy"])
def test_principal_point_near_the_image(name: str) -> None:
    side = W if name == "cx" else H

    def k(centre: float) -> np.ndarray:
        return k_of(500.0, 500.0, cx=centre) if name == "cx" else k_of(500.0, 500.0, cy=centre)

    for centre in (-side, 2 * side, 0.0, side - 1.0):
        check_intrinsics(k(centre), W, H)
    rejects(k(-side - 0.01), rf"principal point {name} = {-side - 0.01:g} px is outside \[{-side}, {2 * side}\] px")
    rejects(k(2 * side + 0.01), rf"principal point {name} = {2 * side + 0.01:g} px is outside")


def test_without_an_image_size_the_loosest_bounds_apply() -> None:
    # focal lengths: from a 175 deg view over 1 px to a 1 deg view over MAX_IMAGE_SIDE px
    for focal in (MIN_FOCAL_PX * (1 + EPS), MAX_FOCAL_PX * (1 - EPS)):
        check_intrinsics(k_of(focal, focal, 0.0, 0.0))
    rejects(k_of(MIN_FOCAL_PX * (1 - EPS), MIN_FOCAL_PX, 0.0, 0.0), r"fx = 0\.0218304 px is below 0\.0218 px",
            None, None)
    rejects(k_of(MIN_FOCAL_PX, MIN_FOCAL_PX * (1 - EPS), 0.0, 0.0), "fy = .* is below", None, None)
    rejects(k_of(1e30, 1e30), r"fx = 1e\+30 px is above 3\.75e\+06 px", None, None)
    rejects(k_of(MAX_FOCAL_PX, MAX_FOCAL_PX * (1 + EPS)), "fy = .* is above", None, None)
    for name in ("cx", "cy"):
        for limit in (-MAX_PRINCIPAL_POINT_PX, MAX_PRINCIPAL_POINT_PX):
            centre = {name: limit}
            check_intrinsics(k_of(500.0, 500.0, **centre))
            rejects(k_of(500.0, 500.0, **{name: limit * (1 + EPS)}), rf"{name} = .* is outside \+-131072 px",
                    None, None)
    # the size-free bounds are those of the widest image: its extreme values pass the check with its size
    check_intrinsics(k_of(MAX_FOCAL_PX * (1 - EPS), MAX_FOCAL_PX * (1 - EPS), 2 * MAX_IMAGE_SIDE, 0.0),
                     MAX_IMAGE_SIDE, MAX_IMAGE_SIDE)


@pytest.mark.parametrize("width, height", [(0, H), (W, -1), (True, H), (640.0, H), (W, None)])
def test_image_size_is_checked(width: object, height: object) -> None:
    rejects(k_of(500.0, 500.0), "image (width|height) must be an integer > 0", width, height)  # type: ignore[arg-type]


def test_the_error_class_is_the_callers() -> None:
    with pytest.raises(ConversionError, match="camera_info.k: horizontal field of view"):
        check_intrinsics(k_of(1e30, 1e30), W, H, "camera_info.k", ConversionError)
