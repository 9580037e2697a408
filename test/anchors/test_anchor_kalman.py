"""The log-scale Kalman filter: flicker reduction, jump rejection (gated, counted, restart after a streak), reset,
and its use inside ScaleAnchoring (noisy anchors smoothed, a jump gated, per camera)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from anchor_helpers import NET_SCALE, WRONG

from moge2_ros.anchors import (
    AnchorConfig,
    Extrinsic,
    KalmanOptions,
    LogScaleKalman,
    PointCloudAnchor,
    RangeAnchor,
    ScaleAnchoring,
)

pytestmark = pytest.mark.timeout(60)

#: sensor +x -> camera +z (the rangefinder looks along the optical axis)
FORWARD = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


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


def test_anchoring_smooths_noisy_anchors_gates_jumps_and_keeps_cameras_apart(room):
    """A single noisy rangefinder (5 % per reading) on a network with a constant 1.3x scale error: the filtered
    scale flickers far less and stays closer to the truth; a gross reading is rejected (the frame keeps the
    filter's scale); the state is per camera_id, reset() forgets it."""
    rng = np.random.default_rng(1)
    ex = Extrinsic.from_matrix(FORWARD)
    fov = math.radians(10)
    q = room.points[room.mask]
    dist = np.linalg.norm(q, axis=1)
    true_range = float(dist[q[:, 2] >= math.cos(fov / 2) * dist].min())
    pred = room.network(noise=0.0)
    raw, filt = [], []
    single = ScaleAnchoring(AnchorConfig(temporal=False))
    an = ScaleAnchoring(AnchorConfig(network_frame_log_std=0.01))  # this network's scale does not jitter
    for i in range(60):
        reading = RangeAnchor(true_range * math.exp(0.05 * rng.standard_normal()), 0.05, 20.0, fov, ex, log_std=0.05)
        raw.append(single.update(pred, room.mask, room.k, NET_SCALE, [reading], stamp=i / 30).factor)
        d = an.update(pred, room.mask, room.k, NET_SCALE, [reading], stamp=i / 30, camera_id="a")
        assert d.source == "range" and not d.gated
        filt.append(d.factor)
    raw, filt = np.log(raw[10:]), np.log(filt[10:])
    assert np.std(np.diff(filt)) < np.std(np.diff(raw)) / 3
    err_raw, err_filt = np.abs(raw - math.log(WRONG)), np.abs(filt - math.log(WRONG))
    assert np.median(err_filt) < np.median(err_raw) / 1.5 and np.median(err_filt) < 0.02
    held = d.factor
    d = an.update(pred, room.mask, room.k, NET_SCALE, [RangeAnchor(true_range * 1.6, 0.05, 20.0, fov, ex)],
                  stamp=61 / 30, camera_id="a")
    assert d.gated and d.source == "network" and "temporal gate" in d.reason
    assert d.factor == pytest.approx(held, rel=0.01) and an.totals["gated"] == 1
    other = an.update(pred, room.mask, room.k, NET_SCALE, [], stamp=0.0, camera_id="b")
    assert other.factor == pytest.approx(1.0)  # another camera: no anchors yet, the network's scale
    an.reset("a")
    assert an.update(pred, room.mask, room.k, NET_SCALE, [], stamp=3.0, camera_id="a").factor == pytest.approx(1.0)


def test_learned_frame_noise_follows_a_jumpy_network_with_sharp_anchors(room):
    """A network whose metric scale jumps by ~15 % from frame to frame (the bundled demo model on real frames does),
    anchored by an exact point cloud: with the learned per-frame noise the filter follows the anchors (the applied
    scale is right on every frame after a short warm-up); with the noise fixed at its 3 % default the same
    corrections look like glitches and are gated, leaving the scale wrong by the network's jumps."""
    rng = np.random.default_rng(3)
    cloud = PointCloudAnchor(room.points[room.mask][::7], Extrinsic())
    learned = ScaleAnchoring(AnchorConfig())
    fixed = ScaleAnchoring(AnchorConfig(adapt_frame_noise=False))
    errors: dict[str, list[float]] = {"learned": [], "fixed": []}
    gated = {"learned": 0, "fixed": 0}
    for i in range(60):
        jump = math.exp(0.15 * rng.standard_normal())  # this frame's scale error on top of the constant one
        pred = (room.points / (WRONG * jump)).astype(np.float32)
        for name, an in (("learned", learned), ("fixed", fixed)):
            d = an.update(pred, room.mask, room.k, NET_SCALE, [cloud], stamp=i / 10, camera_id="cam")
            if i >= 15:  # after a warm-up
                gated[name] += int(d.gated)
                errors[name].append(abs(math.log(d.factor / (WRONG * jump))))
    assert np.percentile(errors["learned"], 90) < 0.01 and gated["learned"] <= 3
    assert np.percentile(errors["fixed"], 90) > 0.1 and gated["fixed"] >= 8
    assert np.mean(errors["fixed"]) > 3 * np.mean(errors["learned"])
    assert learned.frame_noise("cam") > 0.08 and fixed.frame_noise("cam") == pytest.approx(0.03)
    learned.reset("cam")
    assert learned.frame_noise("cam") == pytest.approx(0.03)


def test_first_anchored_frame_is_trusted_however_far_off_the_network_is(room):
    """A network 2x off (beyond 3 sigma of the prior's 20 %): the filter's first anchored frame takes the anchors'
    scale instead of gating it as a jump; the next frames keep it; a reset camera starts over the same way."""
    cloud = PointCloudAnchor(room.points[room.mask][::7], Extrinsic())
    pred = (room.points / 2.0).astype(np.float32)
    an = ScaleAnchoring(AnchorConfig())
    for i in range(3):
        d = an.update(pred, room.mask, room.k, NET_SCALE, [cloud], stamp=i / 10, camera_id="cam")
        assert d.source == "points" and not d.gated, i
        assert d.factor == pytest.approx(2.0, rel=1e-3), i
    an.reset("cam")
    d = an.update(pred / 1.5, room.mask, room.k, NET_SCALE, [cloud], stamp=1.0, camera_id="cam")
    assert not d.gated and d.factor == pytest.approx(3.0, rel=1e-3)
