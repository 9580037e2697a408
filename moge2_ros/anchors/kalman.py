"""A 1-D Kalman filter of a log scale of one camera (random walk, innovation gating).

State ``x = log s`` (:class:`moge2_ros.anchors.ScaleAnchoring` filters ``s`` = the correction of the network's
metric output, i.e. the network's scale bias), variance ``P``.

* predict: ``P += q^2 dt`` (random walk, ``q`` = process std of ``log s`` per square-root second; ``dt`` from
  the stamps, clamped to ``[0, max_dt]``; a missing / non-increasing stamp counts as ``default_dt``);
* update with a measurement ``z = log s_meas`` of std ``r``: innovation ``nu = z - x``, ``S = P + r^2``; when
  ``|nu| > gate_sigma sqrt(S)`` the measurement is rejected and counted (a jump), otherwise
  ``K = P / S, x += K nu, P = (1 - K) P``.  After ``max_rejections`` consecutive rejections of the same kind the
  filter restarts from the measurement (the world really changed: a new camera mount, a lens swap).

The first measurement initialises the state.  :meth:`reset` forgets everything (call it on an image size or
camera change).  No ROS, no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["KalmanOptions", "LogScaleKalman"]


@dataclass(frozen=True)
class KalmanOptions:
    """Filter parameters.

    Attributes:
        process_log_std: random-walk std of ``log s`` per square-root second (default 0.1: the network's scale
            bias drifts by about 10 % in a second as the view changes).
        gate_sigma: innovation gate in standard deviations (``<= 0`` disables the gate).
        max_rejections: consecutive rejections after which the filter restarts from the measurement.
        default_dt: seconds assumed between frames without usable stamps.
        max_dt: longest gap counted, seconds (a long pause does not erase the state completely).
    """

    process_log_std: float = 0.1
    gate_sigma: float = 3.0
    max_rejections: int = 5
    default_dt: float = 1.0 / 30.0
    max_dt: float = 10.0


class LogScaleKalman:
    """Random-walk Kalman filter of ``log s`` for one camera (see the module docstring)."""

    def __init__(self, options: KalmanOptions | None = None) -> None:
        self.options = options or KalmanOptions()
        self.rejected = 0
        self.restarts = 0
        self.reset()

    def reset(self) -> None:
        """Forget the state (the counters of rejections and restarts are kept)."""
        self.x: float | None = None
        self.p = math.inf
        self._stamp: float | None = None
        self._streak: dict[str, int] = {}

    @property
    def initialised(self) -> bool:
        return self.x is not None

    @property
    def scale(self) -> float:
        """Current ``s = exp(x)`` (NaN before the first measurement)."""
        return math.exp(self.x) if self.x is not None else math.nan

    @property
    def log_std(self) -> float:
        """Current std of ``log s`` (inf before the first measurement)."""
        return math.sqrt(self.p) if self.x is not None else math.inf

    def predict(self, stamp: float | None) -> None:
        """Advance to ``stamp`` (seconds): ``P += q^2 dt``."""
        o = self.options
        dt = o.default_dt
        if stamp is not None and math.isfinite(stamp):
            if self._stamp is not None and stamp > self._stamp:
                dt = min(stamp - self._stamp, o.max_dt)
            self._stamp = stamp if self._stamp is None else max(self._stamp, stamp)
        if self.x is not None:
            self.p += o.process_log_std**2 * dt

    def update(self, log_value: float, log_std: float, kind: str = "anchor") -> bool:
        """Fuse a measurement ``log s`` of std ``log_std``; returns False when it was rejected by the gate (or
        not finite / ``log_std`` not positive, which is ignored and not counted)."""
        if not (math.isfinite(log_value) and math.isfinite(log_std) and log_std > 0):
            return False
        r2 = log_std * log_std
        if self.x is None:
            self.x, self.p = log_value, r2
            self._streak[kind] = 0
            return True
        nu = log_value - self.x
        s = self.p + r2
        o = self.options
        if o.gate_sigma > 0 and abs(nu) > o.gate_sigma * math.sqrt(s):
            self.rejected += 1
            self._streak[kind] = self._streak.get(kind, 0) + 1
            if self._streak[kind] >= o.max_rejections:
                self.x, self.p = log_value, r2
                self.restarts += 1
                self._streak = {kind: 0}
                return True
            return False
        self._streak[kind] = 0
        gain = self.p / s
        self.x += gain * nu
        self.p *= 1.0 - gain
        return True
