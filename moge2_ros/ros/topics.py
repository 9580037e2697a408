"""The node's output topics (relative names), ROS-free so that the ``moge2-ros`` argument parser can check
``monitor --topics`` without importing rclpy; :mod:`moge2_ros.ros.monitor` watches them in this order."""

from __future__ import annotations

from typing import Final

__all__ = ["OUTPUTS"]

#: The node's outputs (relative names), in the order ``monitor`` prints them.
OUTPUTS: Final[tuple[str, ...]] = ("depth/image", "depth/camera_info", "points", "normals", "mask",
                                   "depth/colorized", "geometry")
