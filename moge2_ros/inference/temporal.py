"""Temporal stabilisation for a fixed camera: intrinsics averaging / locking and metric-scale smoothing.

A camera's intrinsics do not change between frames, but monocular estimates jitter.  These small stateful
helpers (no ROS, no torch) let a node average the estimated intrinsics over frames or lock them after N frames,
and smooth the per-frame metric scale with an exponential moving average.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError

INTRINSICS_MODES = ("none", "average", "lock")


class IntrinsicsStabilizer:
    """Running estimate of a fixed camera's pinhole intrinsics (pixel units).

    Modes:
        'none': every frame uses its own estimate (:meth:`current` returns None).
        'average': the mean of the last ``window`` estimates is used once at least one frame was seen.
        'lock': the mean of the first ``window`` estimates is used from then on (frozen).
    Estimates from frames of another image size reset the state.
    """

    def __init__(self, mode: str = "none", window: int = 30) -> None:
        if mode not in INTRINSICS_MODES:
            raise InputError(f"intrinsics stabilisation: expected one of {INTRINSICS_MODES}, found {mode!r}")
        if window < 1:
            raise InputError(f"intrinsics stabilisation window must be >= 1, found {window}")
        self.mode = mode
        self.window = int(window)
        self._samples: list[np.ndarray] = []
        self._size: tuple[int, int] | None = None
        self._locked: np.ndarray | None = None

    def reset(self) -> None:
        self._samples.clear()
        self._size = None
        self._locked = None

    @property
    def locked(self) -> bool:
        return self._locked is not None

    def follow_size(self, width: int, height: int) -> None:
        """Start over when frames of another size arrive, also once locked: a K belongs to its image size (call
        before each frame; :meth:`update` alone is not called any more once locked)."""
        if self._size is not None and self._size != (width, height):
            self.reset()

    def current(self, width: int, height: int) -> np.ndarray | None:
        """The stabilised ``(3, 3)`` intrinsics for an image of this size, or None to estimate per frame."""
        if self.mode == "none" or self._size != (width, height) or not self._samples:
            return None
        if self._locked is not None:
            return self._locked.copy()
        if self.mode == "lock":  # still collecting: estimate per frame until the window is full
            return None
        return _mean_k(self._samples)

    def update(self, k: np.ndarray, width: int, height: int) -> None:
        """Add a per-frame estimate ``(3, 3)`` (ignored when locked or when not finite / not positive)."""
        if self.mode == "none" or self._locked is not None:
            return
        k = np.asarray(k, dtype=np.float64)
        if k.shape != (3, 3) or not np.isfinite(k).all() or k[0, 0] <= 0 or k[1, 1] <= 0:
            return
        if self._size != (width, height):
            self.reset()
            self._size = (width, height)
        self._samples.append(k)
        if len(self._samples) > self.window:
            self._samples.pop(0)
        if self.mode == "lock" and len(self._samples) >= self.window:
            self._locked = _mean_k(self._samples)


def _mean_k(samples: list[np.ndarray]) -> np.ndarray:
    k = np.mean(np.stack(samples), axis=0)
    k[0, 1] = k[1, 0] = k[2, 0] = k[2, 1] = 0.0
    k[2, 2] = 1.0
    return k


class ScaleSmoother:
    """Exponential moving average of the metric scale: ``s_t = alpha * s_frame + (1 - alpha) * s_{t-1}``.

    ``alpha = 1`` (or 0, meaning "off") disables smoothing.  :meth:`update` returns the factor by which the
    frame's metric outputs (points, depth) must be multiplied: ``s_t / s_frame``.
    """

    def __init__(self, alpha: float = 0.0) -> None:
        self.set_alpha(alpha)
        self._state: float | None = None

    def set_alpha(self, alpha: float) -> None:
        if not (0.0 <= alpha <= 1.0) or math.isnan(alpha):
            raise InputError(f"scale smoothing alpha must be in [0, 1] (0 = off), found {alpha}")
        self.alpha = float(alpha)

    def reset(self) -> None:
        self._state = None

    def update(self, frame_scale: float) -> float:
        if not (math.isfinite(frame_scale) and frame_scale > 0):
            return 1.0
        if self.alpha in (0.0, 1.0):
            self._state = frame_scale
            return 1.0
        self._state = frame_scale if self._state is None else self.alpha * frame_scale + (1 - self.alpha) * self._state
        return self._state / frame_scale
