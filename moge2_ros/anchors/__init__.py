"""Metric scale anchoring (issue 14): the robot's own metric sensors fix the network's global metric scale, and a
per-camera Kalman filter keeps it steady over time.  Pure numpy / torch, no ROS.

* :mod:`~moge2_ros.anchors.sources`: sensor readings (point cloud + extrinsic, registered depth image, range cone,
  camera height) -> sparse metric depth samples, with validation and counted drops;
* :mod:`~moge2_ros.anchors.fit`: robust per-frame fits (truncated L1 + inlier gating; range cone; floor plane);
* :mod:`~moge2_ros.anchors.kalman`: the random-walk Kalman filter of ``log scale`` with innovation gating;
* :mod:`~moge2_ros.anchors.anchoring`: :class:`ScaleAnchoring`, the per-frame entry point, and its
  :class:`ScaleDecision`;
* :mod:`~moge2_ros.anchors.complete`: mode ``complete`` (log-depth Poisson completion of a depth anchor).
"""

from moge2_ros.anchors.anchoring import MODES, AnchorConfig, ScaleAnchoring, ScaleDecision, apply_decision
from moge2_ros.anchors.fit import FitOptions, SourceFit
from moge2_ros.anchors.kalman import KalmanOptions, LogScaleKalman
from moge2_ros.anchors.sources import (
    Anchor,
    AnchorError,
    CameraHeightAnchor,
    DepthImageAnchor,
    DepthSamples,
    DropCounts,
    Extrinsic,
    PointCloudAnchor,
    RangeAnchor,
)

__all__ = [
    "MODES", "AnchorConfig", "ScaleAnchoring", "ScaleDecision", "apply_decision", "FitOptions", "SourceFit",
    "KalmanOptions",
    "LogScaleKalman", "Anchor", "AnchorError", "CameraHeightAnchor", "DepthImageAnchor", "DepthSamples",
    "DropCounts", "Extrinsic", "PointCloudAnchor", "RangeAnchor",
]
