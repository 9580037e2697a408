"""Intrinsics stabilisation and metric-scale smoothing for fixed cameras."""

from __future__ import annotations

import numpy as np
import pytest

from moge2_ros.errors import InputError
from moge2_ros.inference.temporal import IntrinsicsStabilizer, ScaleSmoother


def _k(f: float, cx: float = 319.5, cy: float = 239.5) -> np.ndarray:
    return np.array([[f, 0, cx], [0, f, cy], [0, 0, 1.0]])


def test_none_mode_never_overrides():
    s = IntrinsicsStabilizer("none")
    s.update(_k(500), 640, 480)
    assert s.current(640, 480) is None


def test_average_is_windowed_mean():
    s = IntrinsicsStabilizer("average", window=3)
    for f in (500, 510, 520, 530):
        s.update(_k(f), 640, 480)
    np.testing.assert_allclose(s.current(640, 480), _k(520))  # mean of the last 3
    assert s.current(320, 240) is None  # other size: no estimate


def test_lock_freezes_after_window():
    s = IntrinsicsStabilizer("lock", window=2)
    s.update(_k(500), 640, 480)
    assert s.current(640, 480) is None and not s.locked
    s.update(_k(520), 640, 480)
    assert s.locked
    s.update(_k(900), 640, 480)  # ignored once locked
    np.testing.assert_allclose(s.current(640, 480), _k(510))


def test_follow_size_unlocks_for_another_image_size():
    s = IntrinsicsStabilizer("lock", window=1)
    s.update(_k(500), 640, 480)
    assert s.locked
    s.follow_size(640, 480)  # same size: stays locked
    assert s.locked
    s.follow_size(320, 240)  # a locked K belongs to its size: start over
    assert not s.locked and s.current(320, 240) is None
    s.update(_k(250, 159.5, 119.5), 320, 240)
    np.testing.assert_allclose(s.current(320, 240), _k(250, 159.5, 119.5))


def test_bad_estimates_are_ignored_and_size_change_resets():
    s = IntrinsicsStabilizer("average", window=5)
    s.update(_k(-5), 640, 480)
    s.update(np.full((3, 3), np.nan), 640, 480)
    assert s.current(640, 480) is None
    s.update(_k(500), 640, 480)
    s.update(_k(250, 159.5, 119.5), 320, 240)
    np.testing.assert_allclose(s.current(320, 240), _k(250, 159.5, 119.5))
    assert s.current(640, 480) is None


def test_scale_smoother_ema():
    off = ScaleSmoother(0.0)
    assert off.update(2.0) == 1.0 and off.update(4.0) == 1.0
    ema = ScaleSmoother(0.5)
    assert ema.update(2.0) == 1.0  # first frame: its own scale
    factor = ema.update(4.0)  # state 3.0
    assert factor == pytest.approx(3.0 / 4.0)
    assert ema.update(float("nan")) == 1.0  # a bad frame does not disturb the state
    assert ema.update(3.0) == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_scale_smoother_rejects_bad_alpha(bad):
    with pytest.raises(InputError):
        ScaleSmoother(bad)


def test_stabilizer_rejects_bad_mode():
    with pytest.raises(InputError, match="expected one of"):
        IntrinsicsStabilizer("median")
