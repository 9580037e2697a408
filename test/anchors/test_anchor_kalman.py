"""The log-scale Kalman filter: flicker reduction, jump rejection (gated, counted, restart after a streak), reset,
and its use inside ScaleAnchoring (per camera)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from moge2_ros.anchors import AnchorConfig, KalmanOptions, LogScaleKalman, ScaleAnchoring

pytestmark = pytest.mark.timeout(60)


def test_first_measurement_initialises_then_fuses_by_variance():
    kf = LogScaleKalman(KalmanOptions(process_log_std=0.0))
    assert not kf.initialised and math.isnan(kf.scale) and kf.log_std == math.inf
    kf.predict(0.0)
    assert kf.update(math.log(2.0), 0.1)
    assert kf.scale == pytest.approx(2.0) and kf.log_std == pytest.approx(0.1)
    assert kf.update(math.log(2.0) + 0.1, 0.1)  # equal variances: the midpoint, variance halved
    assert math.log(kf.scale) == pytest.approx(math.log(2.0) + 0.05)
    assert kf.log_std == pytest.approx(0.1 / math.sqrt(2))
    assert not kf.update(math.nan, 0.1) and not kf.update(0.0, 0.0)  # ignored, not counted
    assert kf.rejected == 0


def test_flicker_reduction():
    rng = np.random.default_rng(0)
    truth = math.log(1.7)
    meas = truth + 0.05 * rng.standard_normal(300)  # 5 % per-frame flicker of the raw estimate
    kf = LogScaleKalman(KalmanOptions(process_log_std=0.02))
    out = []
    for i, z in enumerate(meas):
        kf.predict(i / 30)
        kf.update(float(z), 0.05)
        out.append(math.log(kf.scale))
    out = np.array(out[30:])
    raw_flicker = np.std(np.diff(meas[30:]))
    assert np.std(np.diff(out)) < raw_flicker / 5
    assert np.abs(out - truth).max() < 0.03
    assert kf.log_std < 0.02 and kf.rejected <= 3


def test_jump_rejection_and_restart_after_a_streak():
    kf = LogScaleKalman(KalmanOptions(process_log_std=0.01, gate_sigma=3.0, max_rejections=5))
    for i in range(20):
        kf.predict(i / 30)
        kf.update(0.0, 0.01)
    before = kf.x
    kf.predict(21 / 30)
    assert not kf.update(math.log(1.5), 0.01)  # a single jump of 40 %: rejected and counted
    assert kf.x == before and kf.rejected == 1
    for i in range(22, 26):
        kf.predict(i / 30)
        kf.update(math.log(1.5), 0.01)
    assert kf.rejected == 5 and kf.restarts == 1  # the 5th in a row: the world changed, restart there
    assert kf.scale == pytest.approx(1.5)


def test_process_noise_grows_with_time_and_reset():
    kf = LogScaleKalman(KalmanOptions(process_log_std=0.1))
    kf.predict(0.0)
    kf.update(0.0, 0.01)
    kf.predict(1.0)
    assert kf.log_std == pytest.approx(math.hypot(0.01, 0.1))
    kf.predict(0.5)  # stamps going backwards: the default step only
    assert kf.log_std == pytest.approx(math.sqrt(0.01**2 + 0.1**2 + 0.1**2 / 30))
    kf.reset()
    assert not kf.initialised and kf.log_std == math.inf


def test_anchoring_filters_per_camera_and_gates_jumps():
    """Network-only frames: its flicker is smoothed; the state is per camera_id; reset() forgets."""
    rng = np.random.default_rng(1)
    an = ScaleAnchoring(AnchorConfig(network_log_std=0.05, kalman=KalmanOptions(process_log_std=0.01)))
    pts = np.ones((8, 8, 3), np.float32)
    k = np.array([[10.0, 0, 4], [0, 10.0, 4], [0, 0, 1]])
    raw = 2.0 * np.exp(0.05 * rng.standard_normal(200))
    applied = [an.update(pts, None, k, float(s), [], stamp=i / 30, camera_id="a").applied_scale
               for i, s in enumerate(raw)]
    assert np.std(np.diff(np.log(applied[20:]))) < np.std(np.diff(np.log(raw[20:]))) / 4
    other = an.update(pts, None, k, 5.0, [], stamp=0.0, camera_id="b")
    assert other.applied_scale == pytest.approx(5.0)  # another camera, its own state
    an.reset("a")
    assert an.update(pts, None, k, 3.0, [], stamp=10.0, camera_id="a").applied_scale == pytest.approx(3.0)
