"""Message -> numpy for bag messages (``rosbags`` dataclasses), through the codec the ROS node uses.

All functions accept any object with the ROS field names (rosbags messages, rclpy messages). Bad messages raise
:class:`moge2_ros.io.msg_codec.ConversionError` (an ``InputError``) saying which field is wrong; callers that know
the bag, topic and stamp wrap it into a :class:`~moge2_ros.bags.BagError`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from moge2_ros.bags import NS_PER_S
from moge2_ros.io import msg_codec as codec
from moge2_ros.io.msg_codec import DEFAULT_MAX_PIXELS, ConversionError, is_compressed

__all__ = [
    "depth_from_msg",
    "header_stamp_ns",
    "is_compressed",
    "k_from_camera_info",
    "rgb_from_msg",
    "xyz_from_cloud",
]


def header_stamp_ns(msg: Any) -> int:
    """``msg.header.stamp`` as integer nanoseconds since the epoch.

    Raises:
        ConversionError: no header / stamp, or non-integer fields.
    """
    header = codec.field(msg, "header", "message")
    stamp = codec.field(header, "stamp", "header")
    sec = codec.as_int(codec.field(stamp, "sec", "header.stamp"), "header.stamp.sec")
    nanosec = codec.as_int(codec.field(stamp, "nanosec", "header.stamp"), "header.stamp.nanosec")
    return sec * NS_PER_S + nanosec


def rgb_from_msg(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> npt.NDArray[np.uint8]:
    """``(H, W, 3)`` uint8 RGB of a ``sensor_msgs/Image`` (any colour or grey encoding the node accepts:
    rgb8, bgr8, rgba8, bgra8, mono8, mono16, 8UC3, 8UC1, 16UC1) or a ``sensor_msgs/CompressedImage`` (JPEG, PNG).

    This is :func:`moge2_ros.io.msg_codec.decode_rgb` (the model input of the node and of ``bag-infer``) made into
    a :class:`~moge2_ros.data.sample.Sample` image: 16-bit grey is scaled to 8 bits (value / 65535 * 255,
    rounded), and the result is a writable C-contiguous copy (not a view of the message buffer).

    Raises:
        ConversionError: unsupported encoding or format, bad size, step or data.
    """
    rgb = codec.decode_rgb(msg, max_pixels)
    if rgb.dtype != np.uint8:  # mono16 -> float32 in [0, 1]
        return np.round(rgb * np.float32(255.0)).astype(np.uint8)
    return np.ascontiguousarray(rgb)


def depth_from_msg(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> npt.NDArray[np.float32]:
    """``(H, W)`` float32 depth in metres of a depth ``sensor_msgs/Image``: 16UC1 (millimetres) or 32FC1 (metres).

    Invalid pixels are NaN: 16UC1 zeros, and 32FC1 values that are NaN, +-Inf or <= 0 (the package's one
    convention for unknown depth, see :mod:`moge2_ros.data.sample`).

    Raises:
        ConversionError: other encoding, bad size, step or data.
    """
    depth = codec.decode_depth(msg, max_pixels)
    with np.errstate(invalid="ignore"):
        depth[~codec.valid_depth(depth)] = np.nan
    return depth


def k_from_camera_info(msg: Any, width: int | None = None, height: int | None = None) -> npt.NDArray[np.float64]:
    """``(3, 3)`` float64 pixel intrinsics K of a ``sensor_msgs/CameraInfo`` (ROS convention: pixel centres at
    integer coordinates).

    Args:
        msg: the camera info.
        width, height: size of the image it is used with; None = the camera info's own size (which must then be
            non-zero).

    Raises:
        ConversionError: invalid K (non-finite, fx or fy <= 0, skew), size mismatch, binning or ROI.
    """
    if width is None or height is None:
        width = codec.as_int(codec.field(msg, "width", "camera_info"), "camera_info.width")
        height = codec.as_int(codec.field(msg, "height", "camera_info"), "camera_info.height")
        if width <= 0 or height <= 0:
            raise ConversionError(f"camera_info: expected a non-zero image size, found {width}x{height}")
    return codec.check_camera_info(msg, width, height)


def xyz_from_cloud(msg: Any, finite_only: bool = True) -> npt.NDArray[np.float32]:
    """``(N, 3)`` float32 points (metres, in the cloud's ``header.frame_id``) of a ``sensor_msgs/PointCloud2``
    with FLOAT32 or FLOAT64 ``x, y, z`` fields; non-finite points are dropped when ``finite_only``.

    Raises:
        ConversionError: missing x/y/z, unsupported datatype, bad steps or data length.
    """
    return codec.decode_cloud_xyz(msg, finite_only=finite_only)
