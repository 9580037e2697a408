"""``moge2-ros infer --intrinsics-file`` with a ROS ``camera_calibration`` YAML: D, R, P and the distortion model are
read (io/intrinsics.py), checked, and a distorted calibration rectifies the image before the model
(pipeline/images.py): the outputs are the rectified camera's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from moge2_ros.errors import InputError
from moge2_ros.io.intrinsics import load_intrinsics_file

CALIBRATION = """\
image_width: 64
image_height: 48
camera_name: front
camera_matrix: {rows: 3, cols: 3, data: [50.0, 0.0, 31.5, 0.0, 50.0, 23.5, 0.0, 0.0, 1.0]}
distortion_model: %(model)s
distortion_coefficients: {rows: 1, cols: %(count)d, data: %(d)s}
rectification_matrix: {rows: 3, cols: 3, data: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]}
projection_matrix: {rows: 3, cols: 4, data: [45.0, 0.0, 32.0, 0.0, 0.0, 45.0, 24.0, 0.0, 0.0, 0.0, 1.0, 0.0]}
"""


def write(tmp_path: Path, model: str = "plumb_bob", d: Any = (-0.3, 0.1, 0.001, -0.002, 0.0)) -> Path:
    path = tmp_path / "front.yaml"
    path.write_text(CALIBRATION % {"model": model, "count": len(d), "d": list(d)})
    return path


def test_ros_calibration_yaml_keeps_d_r_p(tmp_path: Path) -> None:
    cam = load_intrinsics_file(write(tmp_path))
    assert (cam.fx, cam.cx, cam.width, cam.height) == (50.0, 31.5, 64, 48)
    assert cam.distortion_model == "plumb_bob" and cam.d == (-0.3, 0.1, 0.001, -0.002, 0.0) and cam.distorted
    assert cam.p[:3] == (45.0, 0.0, 32.0) and cam.r == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    assert not load_intrinsics_file(write(tmp_path, d=(0.0,) * 5)).distorted


def test_bad_distortion_in_the_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"\[distortion_coefficients\]: expected 4 coefficients for equidistant, "
                                         r"found 5"):
        load_intrinsics_file(write(tmp_path, model="equidistant"))
    with pytest.raises(InputError, match=r"\[distortion_model\]: expected one of plumb_bob, rational_polynomial, "
                                         r"equidistant for a non-zero D, found 'fov'"):
        load_intrinsics_file(write(tmp_path, model="fov", d=(0.5,)))


def test_infer_rectifies_with_a_distorted_calibration(tmp_path: Path, tiny_model_path: Path) -> None:
    from PIL import Image

    from moge2_ros.data.example import render_example_scene
    from moge2_ros.inference import PredictorOptions, load_predictor
    from moge2_ros.pipeline.images import infer_image_file

    photo = tmp_path / "photo.png"
    Image.fromarray(render_example_scene(64, 48, 60.0).rgb).save(photo)
    predictor = load_predictor(PredictorOptions(model=str(tiny_model_path), device="cpu", num_tokens=64))
    out = infer_image_file(predictor, photo, tmp_path, "photo", intrinsics=load_intrinsics_file(write(tmp_path)))
    meta = json.loads(out.files["json"].read_text())
    assert meta["camera"]["rectified"] is True and meta["camera"]["distortion_model"] == "plumb_bob"
    assert (meta["fx"], meta["fy"], meta["cx"], meta["cy"]) == (45.0, 45.0, 32.0, 24.0)  # P, not K
    assert meta["intrinsics_estimated"] is False
    depth = np.load(out.files["depth_npy"])
    assert depth.shape == (48, 64) and np.isfinite(depth).mean() > 0.5
    with pytest.raises(InputError, match=r"front.yaml \[camera_matrix\] for .*narrow.png: camera_info: expected the "
                                         r"size of the image 32x48"):
        Image.fromarray(render_example_scene(32, 48, 60.0).rgb).save(tmp_path / "narrow.png")
        infer_image_file(predictor, tmp_path / "narrow.png", tmp_path, "narrow",
                         intrinsics=load_intrinsics_file(write(tmp_path)))
