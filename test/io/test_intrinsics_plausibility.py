"""The calibration-file and command-line entry points of the intrinsics plausibility check (moge2_ros.io.intrinsics):
checked against the image size a file names, else against any image, and again once the image is known
(CameraIntrinsics.matrix_for, what ``infer`` calls).  The rules themselves: test_plausibility.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from moge2_ros.errors import InputError
from moge2_ros.io.intrinsics import load_intrinsics_file, parse_intrinsics_arg


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name, text, match", [
    ("huge.json", json.dumps({"K": [[1e30, 0, 320], [0, 1e30, 240], [0, 0, 1]]}),
     r"huge\.json \[K\]: fx = 1e\+30 px is above 3\.75e\+06 px"),
    ("tiny.txt", "1e-30 1e-30 320 240", r"tiny\.txt: fx = 1e-30 px is below 0\.0218 px"),
    ("centre.yaml", "fx: 500\nfy: 500\ncx: 1.0e+30\ncy: 240\n", r"centre\.yaml: cx = 1e\+30 px is outside"),
    ("aspect.txt", "500 0 320\n0 50 240\n0 0 1\n", r"aspect\.txt: pixel aspect fx / fy = 10 "),
    # with the image size in the file: the full check for that size
    ("sized.yaml", "image_width: 640\nimage_height: 480\ncamera_matrix:\n  rows: 3\n  cols: 3\n"
                   "  data: [5, 0, 320, 0, 5, 240, 0, 0, 1]\n",
     r"sized\.yaml \[camera_matrix\]: horizontal field of view 178\.2\d* deg \(fx = 5 px over 640 px\)"),
    ("sized.json", json.dumps({"fx": 500, "fy": 500, "cx": 1300, "cy": 240, "width": 640, "height": 480}),
     r"sized\.json: principal point cx = 1300 px is outside \[-640, 1280\] px"),
    ("badsize.yaml", "K: [500, 0, 320, 0, 500, 240, 0, 0, 1]\nwidth: .inf\nheight: 480\n",
     r"badsize\.yaml \[K\]: image width must be a positive integer"),
])
def test_absurd_calibration_files_are_refused(tmp_path: Path, name: str, text: str, match: str) -> None:
    with pytest.raises(InputError, match=match) as error:
        load_intrinsics_file(write(tmp_path, name, text))
    assert "\n" not in str(error.value) and len(str(error.value)) < 300


def test_a_plausible_file_is_read_and_checked_again_for_the_image(tmp_path: Path) -> None:
    # 500 px focal: plausible for some image (no size in the file) ...
    cam = load_intrinsics_file(write(tmp_path, "K.txt", "500 500 320 240"))
    np.testing.assert_array_equal(cam.matrix_for(640, 480), [[500, 0, 320], [0, 500, 240], [0, 0, 1]])
    assert cam.matrix_for(640, 480).dtype == np.float64
    # ... but not for a 4x3 thumbnail (a 0.46 deg view) whose principal point is far outside
    with pytest.raises(InputError, match=r"--intrinsics-file .*K\.txt for thumb\.png: horizontal field of view "
                                         r"0\.458\d* deg \(fx = 500 px over 4 px\) is outside \[1, 175\] deg"):
        cam.matrix_for(4, 3, "thumb.png")
    sized = load_intrinsics_file(write(tmp_path, "K.json", json.dumps(
        {"fx": 500, "fy": 500, "cx": 320, "cy": 240, "width": 640, "height": 480})))
    sized.matrix_for(640, 480)
    with pytest.raises(InputError, match=r"K\.json: the intrinsics are for 640x480 images, room\.png is 96x72"):
        sized.matrix_for(96, 72, "room.png")


def test_command_line_intrinsics() -> None:
    cam = parse_intrinsics_arg("500,500,320,240")
    assert cam.source == "--intrinsics" and cam.matrix_for(640, 480)[0, 0] == 500
    for text, match in [("1e30,1e30,320,240", r"--intrinsics: fx = 1e\+30 px is above"),
                        ("500,500,1e30,240", r"--intrinsics: cx = 1e\+30 px is outside"),
                        ("500,500,inf,240", r"--intrinsics: every entry must be finite, found K\[2\] = inf"),
                        ("500,40,320,240", r"--intrinsics: pixel aspect fx / fy = 12\.5")]:
        with pytest.raises(InputError, match=match):
            parse_intrinsics_arg(text)
    with pytest.raises(InputError, match=r"--intrinsics for img\.png: vertical field of view"):
        parse_intrinsics_arg("500,4000,320,240").matrix_for(640, 30, "img.png")
