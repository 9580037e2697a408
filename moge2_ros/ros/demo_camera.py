"""``demo_camera``: a camera stream rendered by the package itself, with exact ground-truth depth.

Publishes (relative names) ``image`` (sensor_msgs/Image rgb8), ``camera_info`` (the exact pinhole intrinsics,
no distortion) and ``depth_gt`` (32FC1 metres, the true z of every pixel) for a camera moving slowly through a
procedurally rendered room (:func:`moge2_ros.data.example.render_example_scene`).  Each frame of the loop is
rendered the first time it is due (about 0.1 s at 640x480 on one CPU core) and replayed from memory afterwards, so
the first image goes out as soon as the node is up; the first pass of the loop may run below ``rate_hz`` on a
slow machine.  The ray caster is a torch program: :func:`main` gives it one thread (``torch.set_num_threads(1)``)
so that the camera does not compete for every core with the node it feeds.

Parameters: ``width`` (640), ``height`` (480), ``fov_x_deg`` (60), ``rate_hz`` (10), ``num_frames`` (24),
``frame_id`` ('camera_optical_frame'), ``qos`` ('reliable' or 'sensor_data').
"""

from __future__ import annotations

import math
import sys
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from ..data.example import ExampleScene, render_example_scene
from . import conversions as conv


class DemoCamera(Node):
    """Replays a rendered camera path as Image + CameraInfo + ground-truth depth topics."""

    def __init__(self, node_name: str = "demo_camera", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        width = self.declare_parameter("width", 640).value
        height = self.declare_parameter("height", 480).value
        fov = self.declare_parameter("fov_x_deg", 60.0).value
        rate = self.declare_parameter("rate_hz", 10.0).value
        n = max(1, self.declare_parameter("num_frames", 24).value)
        self.frame_id = self.declare_parameter("frame_id", "camera_optical_frame").value
        qos_name = self.declare_parameter("qos", "reliable").value
        qos = qos_profile_sensor_data if qos_name == "sensor_data" else QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)

        self.width, self.height, self.fov_x_deg, self.num_frames = width, height, fov, n
        self.frames: dict[int, ExampleScene] = {}  # loop index -> rendered frame, filled on first use
        self.pub_image = self.create_publisher(Image, "image", qos)
        self.pub_info = self.create_publisher(CameraInfo, "camera_info", qos)
        self.pub_depth = self.create_publisher(Image, "depth_gt", qos)
        self.index = 0
        self.timer = self.create_timer(1.0 / rate, self._tick)
        self.get_logger().info(f"publishing {width}x{height} rendered frames at {rate} Hz "
                               f"({n}-frame loop, each frame rendered when first due)")

    def frame(self, i: int) -> ExampleScene:
        """Frame ``i`` of the loop (rendered and kept on first use): a slow sideways sway with a little forward motion."""
        i %= self.num_frames
        if i not in self.frames:
            phase = 2 * math.pi * i / self.num_frames
            position = (0.5 * math.sin(phase), 0.0, 0.6 * (1 - math.cos(phase)))
            self.frames[i] = render_example_scene(self.width, self.height, self.fov_x_deg, camera_position=position)
        return self.frames[i]

    def _tick(self) -> None:
        scene = self.frame(self.index)
        self.index += 1
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.frame_id)
        height, width = scene.depth.shape
        self.pub_image.publish(conv.rgb_to_image(header, scene.rgb))
        self.pub_info.publish(conv.make_camera_info(header, scene.intrinsics, width, height))
        self.pub_depth.publish(conv.depth_to_image(header, scene.depth))


def main(args: list[str] | None = None) -> int:
    """Entry point of ``ros2 run moge2_ros demo_camera`` and the ``demo_camera`` console script."""
    import torch  # the ray caster's; already imported by render_example_scene's module

    torch.set_num_threads(1)  # see the module docstring: leave the other cores to the node
    rclpy.init(args=args)
    node = DemoCamera()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
