"""The CameraInfo entry point of the intrinsics plausibility check (msg_codec.check_camera_info) and the note on
ignored lens distortion (msg_codec.distortion_note).  The rules themselves: test_plausibility.py."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from moge2_ros.io.msg_codec import ConversionError, check_camera_info, distortion_note

W, H = 640, 480


def info(fx: float = 525.0, fy: float = 525.0, cx: float = 319.5, cy: float = 239.5, *, d: Any = (),
         model: str = "plumb_bob", width: int = W, height: int = H) -> SimpleNamespace:
    """A sensor_msgs/CameraInfo as any object with its fields."""
    roi = SimpleNamespace(x_offset=0, y_offset=0, width=0, height=0, do_rectify=False)
    return SimpleNamespace(width=width, height=height, binning_x=0, binning_y=0, roi=roi, distortion_model=model,
                           d=list(d), k=[fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0])


def test_a_real_camera_info_is_used_as_given() -> None:
    np.testing.assert_array_equal(check_camera_info(info(), W, H),
                                  [[525.0, 0.0, 319.5], [0.0, 525.0, 239.5], [0.0, 0.0, 1.0]])
    check_camera_info(info(width=0, height=0), W, H)  # 0x0: "the image size"


@pytest.mark.parametrize("fields, message", [
    (dict(fx=1e30, fy=1e30),
     "camera_info.k: horizontal field of view 3.66693e-26 deg (fx = 1e+30 px over 640 px) is outside [1, 175] deg"),
    (dict(fx=1e-30, fy=1e-30),
     "camera_info.k: horizontal field of view 180 deg (fx = 1e-30 px over 640 px) is outside [1, 175] deg"),
    (dict(cx=1e30),
     "camera_info.k: principal point cx = 1e+30 px is outside [-640, 1280] px (the 640 px image and 1 image size "
     "beyond each edge)"),
    (dict(cy=-1e30),
     "camera_info.k: principal point cy = -1e+30 px is outside [-480, 960] px (the 480 px image and 1 image size "
     "beyond each edge)"),
    (dict(fx=525.0, fy=525.0 / 8.01),
     "camera_info.k: pixel aspect fx / fy = 8.01 (fx = 525, fy = 65.5431) is outside [1/8, 8]"),
    (dict(fx=525.0, fy=525.0 * 8.01),
     "camera_info.k: pixel aspect fx / fy = 0.124844 (fx = 525, fy = 4205.25) is outside [1/8, 8]"),
])
def test_implausible_k_is_refused_in_one_line(fields: dict[str, float], message: str) -> None:
    with pytest.raises(ConversionError) as error:
        check_camera_info(info(**fields), W, H)
    assert str(error.value) == message


def test_limits_are_those_of_the_image_size() -> None:
    """The same K can fit one image and not another: the check uses the size it is given."""
    wide_focal = 20.0  # 172.8 deg over 640 px, 176.2 deg over 1280 px
    check_camera_info(info(wide_focal, wide_focal, 320.0, 240.0), W, H)
    with pytest.raises(ConversionError, match="horizontal field of view 176.4"):
        check_camera_info(info(wide_focal, wide_focal, 320.0, 240.0, width=0, height=0), 2 * W, H)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_k_is_refused(value: float) -> None:
    for name in ("fx", "fy", "cx", "cy"):
        with pytest.raises(ConversionError, match="camera_info.k: expected finite values"):
            check_camera_info(info(**{name: value}), W, H)


def test_distortion_note() -> None:
    assert distortion_note(info()) is None  # D empty
    assert distortion_note(info(d=[0.0] * 5)) is None  # plumb_bob with zeros: rectified
    assert distortion_note(info(d=[0.0] * 8, model="rational_polynomial")) is None
    assert distortion_note(info(d=[-0.28, 0.07, 1e-4, -2e-4, 0.0])) == (
        "camera_info has plumb_bob distortion (D = [-0.28, 0.07, 0.0001, -0.0002, 0]) that is ignored: give "
        "rectified images (image_proc's image_rect) or the depth and points are bent")
    note = distortion_note(info(d=np.arange(1, 15) * 0.1, model="rational_polynomial"))
    assert note is not None and note.startswith("camera_info has rational_polynomial distortion (D = [0.1, 0.2, "
                                                "0.3, 0.4, 0.5, ... (14 values)]) that is ignored")
    assert "equidistant" in distortion_note(info(d=[0.1, 0, 0, 0], model="equidistant"))
    assert "unnamed" in distortion_note(info(d=[0.1], model=""))
    assert "nan" in distortion_note(info(d=[math.nan], model="plumb_bob"))  # not zero: reported
    hostile = distortion_note(info(d=[1.0], model="x\n" * 500))
    assert hostile is not None and "\n" not in hostile and len(hostile) < 200
    with pytest.raises(ConversionError, match="camera_info.d"):
        distortion_note(info(d=["a", "b"]))
