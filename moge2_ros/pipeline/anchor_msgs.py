"""ROS messages of the robot's metric sensors -> metric anchors (:mod:`moge2_ros.anchors`), written once for the
node (rclpy messages) and ``bag-infer`` (rosbags messages): every function reads fields by name from any object
that has them.

* ``sensor_msgs/PointCloud2`` -> :class:`~moge2_ros.anchors.PointCloudAnchor` (x, y, z in the cloud's frame);
* ``sensor_msgs/Image`` (``32FC1`` metres or ``16UC1`` millimetres, registered to the camera) ->
  :class:`~moge2_ros.anchors.DepthImageAnchor`;
* ``sensor_msgs/Range`` -> :class:`~moge2_ros.anchors.RangeAnchor` (REP 117: +-inf kept, the anchoring ignores them);
* ``geometry_msgs/Transform`` or a parameter ``[tx, ty, tz, qx, qy, qz, qw]`` ->
  :class:`~moge2_ros.anchors.Extrinsic` (sensor frame -> camera optical frame, metres, quaternion x y z w).

A malformed message raises :class:`~moge2_ros.anchors.AnchorError` with a one-line reason (the caller counts it
and goes on); a bad parameter raises :class:`~moge2_ros.errors.InputError` naming the parameter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from moge2_ros.anchors import AnchorError, DepthImageAnchor, DropCounts, Extrinsic, PointCloudAnchor, RangeAnchor
from moge2_ros.errors import InputError
from moge2_ros.io import msg_codec as codec

__all__ = [
    "MAX_ANCHOR_POINTS",
    "cloud_anchor",
    "depth_anchor",
    "extrinsic_param",
    "range_anchor",
    "stamp_seconds",
    "transform_extrinsic",
]

#: Largest point cloud read as an anchor (``width * height``); larger clouds are refused before decoding.
MAX_ANCHOR_POINTS = 4_000_000


def stamp_seconds(header: Any) -> float:
    """``header.stamp`` in seconds (float).

    Raises:
        AnchorError: no stamp or non-integer fields.
    """
    try:
        stamp = codec.field(header, "stamp", "header")
        sec = codec.as_int(codec.field(stamp, "sec", "header.stamp"), "header.stamp.sec")
        nanosec = codec.as_int(codec.field(stamp, "nanosec", "header.stamp"), "header.stamp.nanosec")
    except InputError as exc:
        raise AnchorError(str(exc)) from None
    return sec + nanosec * 1e-9


def _checked_extrinsic(extrinsic: Extrinsic, what: str) -> Extrinsic:
    try:
        extrinsic.matrix()
    except AnchorError as exc:
        raise AnchorError(f"{what}: {exc}") from None
    return extrinsic


def extrinsic_param(values: Sequence[float], name: str) -> Extrinsic | None:
    """The extrinsic of a parameter ``[tx, ty, tz, qx, qy, qz, qw]`` (metres; unit quaternion, ROS order), or None
    for an empty list (the transform comes from elsewhere: TF, or the reading is in the camera frame).

    Raises:
        InputError: not 7 finite numbers, or a quaternion whose norm is not 1 (within 1e-3); names ``name``.
    """
    values = list(values)
    if not values:
        return None
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) != 7 or not all(math.isfinite(v) for v in numbers):
        raise InputError(f"{name}: expected [] or [tx, ty, tz, qx, qy, qz, qw] (7 finite numbers: metres and a unit "
                         f"quaternion), found {codec.short(values)}")
    extrinsic = Extrinsic(tuple(numbers[:3]), tuple(numbers[3:]))  # type: ignore[arg-type]
    try:
        extrinsic.matrix()
    except AnchorError as exc:
        raise InputError(f"{name}: {exc}") from None
    return extrinsic


def transform_extrinsic(transform: Any) -> Extrinsic:
    """The extrinsic of a ``geometry_msgs/Transform`` (``translation`` x y z, ``rotation`` x y z w).

    Raises:
        AnchorError: missing fields, non-finite values, a quaternion whose norm is not 1.
    """
    try:
        t = codec.field(transform, "translation", "transform")
        q = codec.field(transform, "rotation", "transform")
        translation = tuple(float(codec.field(t, a, "transform.translation")) for a in "xyz")
        rotation = tuple(float(codec.field(q, a, "transform.rotation")) for a in "xyzw")
    except (InputError, TypeError, ValueError) as exc:
        raise AnchorError(f"transform: {exc}") from None
    return _checked_extrinsic(Extrinsic(translation, rotation), "transform")  # type: ignore[arg-type]


def cloud_anchor(msg: Any, extrinsic: Extrinsic | None = None, max_points: int = MAX_ANCHOR_POINTS) \
        -> PointCloudAnchor:
    """A ``sensor_msgs/PointCloud2`` as a point anchor: its finite x, y, z (metres, the cloud's frame) and the
    transform into the camera optical frame (None = the cloud is in the camera optical frame).

    Raises:
        AnchorError: no header stamp, missing xyz fields, bad steps / data length, more than ``max_points`` points.
    """
    stamp = stamp_seconds(codec.field(msg, "header", "point cloud"))
    try:
        points = codec.decode_cloud_xyz(msg, finite_only=False, max_points=max_points)
    except InputError as exc:
        raise AnchorError(str(exc)) from None
    return PointCloudAnchor(points, _checked_extrinsic(extrinsic or Extrinsic(), "point cloud extrinsic"), stamp)


def depth_anchor(msg: Any, max_pixels: int = codec.DEFAULT_MAX_PIXELS) -> DepthImageAnchor:
    """A registered depth ``sensor_msgs/Image`` (``32FC1`` metres or ``16UC1`` millimetres, any size) as a depth
    anchor; invalid pixels (0, NaN, inf) stay invalid.

    Raises:
        AnchorError: no header stamp, another encoding, bad size / step / data length.
    """
    stamp = stamp_seconds(codec.field(msg, "header", "depth image"))
    try:
        depth = codec.decode_depth(msg, max_pixels)
    except InputError as exc:
        raise AnchorError(str(exc)) from None
    return DepthImageAnchor(depth, stamp)


def range_anchor(msg: Any, extrinsic: Extrinsic | None = None) -> RangeAnchor:
    """A ``sensor_msgs/Range`` reading as a range anchor (cone along the sensor's +x axis, half-angle
    ``field_of_view / 2``); the transform into the camera optical frame (None = the sensor frame is the camera
    optical frame, i.e. the cone looks along the camera's x axis: give an extrinsic for a forward rangefinder).

    Raises:
        AnchorError: no header stamp, non-numeric fields, bad sensor limits (min_range >= max_range, field of view
            outside (0, pi)); an out-of-range or +-inf reading is not an error (REP 117: ignored for the scale).
    """
    stamp = stamp_seconds(codec.field(msg, "header", "range"))
    try:
        values = [float(codec.field(msg, name, "range")) for name in ("range", "min_range", "max_range",
                                                                      "field_of_view")]
    except (InputError, TypeError, ValueError) as exc:
        raise AnchorError(f"range: {exc}") from None
    anchor = RangeAnchor(*values, extrinsic=_checked_extrinsic(extrinsic or Extrinsic(), "range extrinsic"),
                         stamp=stamp)
    anchor.checked(DropCounts())  # bad limits raise here, at conversion (the anchoring counts when it uses it)
    return anchor

