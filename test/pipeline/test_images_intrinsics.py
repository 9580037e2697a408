"""``infer`` (pipeline.images.infer_image_file) checks given intrinsics against the image once it is read: values
plausible for some image (``--intrinsics`` / a file without a size) but not for this one are refused before
anything is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from moge2_ros.errors import InputError
from moge2_ros.io.intrinsics import parse_intrinsics_arg
from moge2_ros.pipeline.images import infer_image_file

W, H = 64, 48


@pytest.fixture(scope="module")
def predictor(tiny_model: Any) -> Any:
    from moge2_ros.inference import Predictor

    return Predictor(tiny_model, num_tokens=64)


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)).save(path)
    return path


def test_intrinsics_implausible_for_the_image_are_refused(predictor: Any, photo: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    cam = parse_intrinsics_arg("5000,5000,32,24")  # fine for a 6000 px wide photo, a 0.7 deg view of this one
    with pytest.raises(InputError, match=rf"^--intrinsics for {photo}: horizontal field of view 0\.733\d* deg "
                                         r"\(fx = 5000 px over 64 px\) is outside \[1, 175\] deg$"):
        infer_image_file(predictor, photo, out, "photo", intrinsics=cam)
    assert list(out.iterdir()) == []
    done = infer_image_file(predictor, photo, out, "photo", intrinsics=parse_intrinsics_arg("50,51,32,24"),
                            write_ply_file=False)
    assert done.meta["intrinsics_estimated"] is False
    np.testing.assert_allclose([done.meta["fx"], done.meta["fy"]], [50, 51], rtol=1e-5)
