"""The frame pipeline's entry points of the intrinsics plausibility check: ``FrameConfig.fixed_intrinsics`` at
configuration time (no image size yet), fixed intrinsics against each frame's size, and a CameraInfo; given
intrinsics that fail are replaced by an estimate and the reason is returned in ``FrameOutputs.intrinsics_error``.
With the untrained demo model (test/conftest.py ``tiny_model_path``: random weights wired to a pinhole camera, so
that its estimated K is a camera), as test_frame.py."""

from __future__ import annotations

import math
from types import SimpleNamespace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from moge2_ros.errors import InputError
from moge2_ros.io.msg_codec import ConversionError
from moge2_ros.pipeline import FrameConfig, FramePipeline

WIDTH, HEIGHT = 48, 36
PLAUSIBLE = (40.5, 41.25, 23.5, 17.0)  # a 61 x 47 deg view


@pytest.fixture(scope="module")
def pipeline_for(tiny_model_path: Path) -> Any:
    from moge2_ros.inference import PredictorOptions, load_predictor

    predictor = load_predictor(PredictorOptions(model=str(tiny_model_path), device="cpu", num_tokens=64))

    def build(**options: Any) -> FramePipeline:
        return FramePipeline(predictor, FrameConfig(**options))

    return build


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    from moge2_ros.data.example import render_example_scene

    return render_example_scene(WIDTH, HEIGHT, 60.0).rgb


def camera_info(fx: float, fy: float, cx: float, cy: float) -> SimpleNamespace:
    roi = SimpleNamespace(x_offset=0, y_offset=0, width=0, height=0, do_rectify=False)
    return SimpleNamespace(width=WIDTH, height=HEIGHT, binning_x=0, binning_y=0, roi=roi,
                           k=[fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0])


@pytest.mark.parametrize("fixed, match", [
    ((math.inf, 40.0, 24.0, 18.0), r"expected \[fx, fy, cx, cy\] \(4 finite numbers, pixels\)"),
    ((40.0, -math.inf, 24.0, 18.0), "4 finite numbers"),
    ((1e30, 1e30, 24.0, 18.0), r"fixed_intrinsics: fx = 1e\+30 px is above 3\.75e\+06 px"),
    ((40.0, 40.0, 1e30, 18.0), r"fixed_intrinsics: cx = 1e\+30 px is outside \+-131072 px"),
    ((1e-30, 1e-30, 24.0, 18.0), r"fixed_intrinsics: fx = 1e-30 px is below 0\.0218 px"),
    ((0.0, 40.0, 24.0, 18.0), r"fixed_intrinsics: expected fx = K\[0\] > 0"),
    ((40.0, 4.0, 24.0, 18.0), r"fixed_intrinsics: pixel aspect fx / fy = 10 "),
    ((1e400, 40.0, 24.0, 18.0), "4 finite numbers"),  # a Python float overflows to inf
])
def test_fixed_intrinsics_are_checked_at_configuration_time(fixed: tuple[float, ...], match: str) -> None:
    with pytest.raises(InputError, match=match) as error:
        FrameConfig(intrinsics_source="fixed", fixed_intrinsics=fixed)
    assert "\n" not in str(error.value) and len(str(error.value)) < 200
    # only checked when used: another source keeps whatever is there
    FrameConfig(intrinsics_source="estimate", fixed_intrinsics=fixed)


def test_plausible_fixed_intrinsics_are_used(pipeline_for: Any, rgb: np.ndarray) -> None:
    out = pipeline_for(intrinsics_source="fixed", fixed_intrinsics=PLAUSIBLE).process(rgb, {"depth"})
    assert not out.intrinsics_estimated and out.intrinsics_error is None
    fx, fy, cx, cy = PLAUSIBLE
    np.testing.assert_array_equal(out.k, [[fx, 0, cx], [0, fy, cy], [0, 0, 1]])


@pytest.mark.parametrize("fixed, match", [
    # plausible for some image (the configuration accepts them), not for a 48 x 36 frame
    ((5000.0, 5000.0, 24.0, 18.0), r"fixed_intrinsics: horizontal field of view 0\.55\d* deg \(fx = 5000 px over "
                                   r"48 px\) is outside \[1, 175\] deg"),
    ((40.0, 40.0, 320.0, 18.0), r"fixed_intrinsics: principal point cx = 320 px is outside \[-48, 96\] px"),
    ((0.5, 0.5, 24.0, 18.0), r"fixed_intrinsics: horizontal field of view 177\.6\d* deg"),
])
def test_fixed_intrinsics_implausible_for_the_frame_are_replaced_by_an_estimate(
        pipeline_for: Any, rgb: np.ndarray, fixed: tuple[float, ...], match: str) -> None:
    pipeline = pipeline_for(intrinsics_source="fixed", fixed_intrinsics=fixed)
    out = pipeline.process(rgb, {"depth", "camera_info", "geometry"})
    assert out.intrinsics_estimated and out.geometry.intrinsics_estimated
    assert type(out.intrinsics_error) is InputError and re_search(match, str(out.intrinsics_error))
    given = np.array([[fixed[0], 0, fixed[2]], [0, fixed[1], fixed[3]], [0, 0, 1]])
    assert not np.allclose(out.k, given)
    np.testing.assert_array_equal(np.asarray(out.camera_info.k).reshape(3, 3), out.k)  # the estimate is published
    estimated = pipeline_for(intrinsics_source="estimate").process(rgb, {"depth"})
    np.testing.assert_array_equal(out.k, estimated.k)  # exactly what source 'estimate' gives


def test_camera_info_with_absurd_k_is_replaced_by_an_estimate(pipeline_for: Any, rgb: np.ndarray) -> None:
    pipeline = pipeline_for(intrinsics_source="camera_info")
    out = pipeline.process(rgb, {"depth", "camera_info"}, camera_info=camera_info(1e30, 1e30, 24.0, 18.0))
    assert out.intrinsics_estimated and isinstance(out.intrinsics_error, ConversionError)
    assert str(out.intrinsics_error) == ("camera_info.k: horizontal field of view 2.7502e-27 deg (fx = 1e+30 px "
                                         "over 48 px) is outside [1, 175] deg")
    assert out.k[0, 0] < 1e6 and np.isfinite(out.k).all()
    good = pipeline.process(rgb, {"depth"}, camera_info=camera_info(*PLAUSIBLE))
    assert not good.intrinsics_estimated and good.intrinsics_error is None and good.k[0, 0] == PLAUSIBLE[0]


def re_search(pattern: str, text: str) -> bool:
    import re

    assert re.search(pattern, text), (pattern, text)
    return True
