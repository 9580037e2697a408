"""Predictor.predict(intrinsics=...) refuses intrinsics implausible for the image size (the rules:
test/io/test_plausibility.py) before running the network; plausible ones are used as given."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from moge2_ros.errors import InputError
from moge2_ros.inference import Predictor

W, H = 64, 48


@pytest.fixture(scope="module")
def predictor(tiny_model: Any) -> Predictor:
    return Predictor(tiny_model, num_tokens=64)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


def k_of(fx: float, fy: float, cx: float = W / 2, cy: float = H / 2) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize("k, message", [
    (k_of(1e30, 1e30), "intrinsics: horizontal field of view 3.66693e-27 deg (fx = 1e+30 px over 64 px) is outside "
                       "[1, 175] deg"),
    (k_of(1e-30, 1e-30), "intrinsics: horizontal field of view 180 deg (fx = 1e-30 px over 64 px) is outside "
                         "[1, 175] deg"),
    (k_of(50.0, 50.0, cx=1e30), "intrinsics: principal point cx = 1e+30 px is outside [-64, 128] px (the 64 px "
                                "image and 1 image size beyond each edge)"),
    (k_of(50.0, 5.0), "intrinsics: pixel aspect fx / fy = 10 (fx = 50, fy = 5) is outside [1/8, 8]"),
    # plausible for a 640 x 480 image (a 7 deg view here is fine), not for this 64 x 48 one
    (k_of(525.0, 525.0, 319.5, 239.5), "intrinsics: principal point cx = 319.5 px is outside [-64, 128] px (the "
                                       "64 px image and 1 image size beyond each edge)"),
])
def test_implausible_intrinsics_raise_input_error(predictor: Predictor, image: np.ndarray, k: np.ndarray,
                                                  message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the network ran on refused intrinsics")

    monkeypatch.setattr(predictor, "forward_raw", no_network)
    with pytest.raises(InputError) as error:
        predictor.predict(image, intrinsics=k)
    assert str(error.value) == message
    with pytest.raises(InputError):  # a torch tensor is checked the same way
        predictor.predict(image, intrinsics=torch.as_tensor(k, dtype=torch.float32))


def test_each_matrix_of_a_batch_is_checked(predictor: Predictor, image: np.ndarray) -> None:
    batch = np.stack([image, image])
    good = k_of(50.0, 50.0)
    with pytest.raises(InputError, match=r"^intrinsics\[1\]: horizontal field of view"):
        predictor.predict(batch, intrinsics=np.stack([good, k_of(1e30, 1e30)]))
    geo = predictor.predict(batch, intrinsics=np.stack([good, k_of(60.0, 61.0, 30.0, 20.0)]))
    np.testing.assert_allclose(geo.intrinsics[1].numpy(), k_of(60.0, 61.0, 30.0, 20.0), rtol=1e-5)


@pytest.mark.parametrize("focal", [
    W / (2 * math.tan(math.radians(175.0) / 2)) * 1.001,  # just inside the widest view
    W / (2 * math.tan(math.radians(1.0) / 2)) * 0.999,  # just inside the narrowest view (fy keeps a 2 deg view)
])
def test_plausible_intrinsics_near_the_limits_are_used(predictor: Predictor, image: np.ndarray, focal: float) -> None:
    fy = focal if focal < 100 else H / (2 * math.tan(math.radians(2.0) / 2))
    geo = predictor.predict(image, intrinsics=k_of(focal, fy, -W + 1.0, 2 * H - 1.0))
    assert not geo.intrinsics_estimated
    np.testing.assert_allclose(geo.intrinsics[0].numpy(), k_of(focal, fy, -W + 1.0, 2 * H - 1.0), rtol=1e-5)
