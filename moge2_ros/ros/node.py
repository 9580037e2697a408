"""``moge2_node``: camera images in; metric depth, points, normals, mask, camera_info and geometry out.

Topics (relative names, so namespaces and remaps work; see ``config/moge2.yaml`` for the parameters):

=========================  ============================================  ============================================
topic                      type                                          notes
=========================  ============================================  ============================================
image                      sensor_msgs/Image (sub)                       rgb8, bgr8, rgba8, bgra8, mono8, mono16
image/compressed           sensor_msgs/CompressedImage (sub)             with ``image_transport:=compressed``
camera_info                sensor_msgs/CameraInfo (sub)                  K D R P binning ROI, when valid (rectified)
depth/image                sensor_msgs/Image                             32FC1 metres (NaN/Inf invalid) or 16UC1 mm
depth/camera_info          sensor_msgs/CameraInfo                        describes depth/image exactly (K' = P)
points                     sensor_msgs/PointCloud2                       x y z [rgb] [normal_*], metres
normals                    sensor_msgs/Image                             32FC3 unit vectors, optical frame
mask                       sensor_msgs/Image                             mono8, 255 = valid
depth/colorized            sensor_msgs/Image                             bgr8 preview, only while subscribed
geometry                   moge2_ros_msgs/MonocularGeometry              intrinsics, scale, FoV, timing, model
/diagnostics               diagnostic_msgs/DiagnosticArray               rates, drops, latency, backend, device
=========================  ============================================  ============================================

Every output of a frame carries that frame's header unchanged (REP 103 optical frame, REP 117/118 depth).
A distorted camera (CameraInfo with a non-zero D) is rectified before the model (``rectify``): the outputs are
those of the rectified pinhole camera P, or on the raw image grid with ``output_grid:=raw``; a refused CameraInfo
is counted (``bad_input``) once per message and the last good one of the image size is used, else K is estimated.
Latest-frame policy: the subscription callbacks only store the newest message; one worker thread runs
inference on the newest stored frame, so a slow model drops frames (counted) instead of queueing them.

Several cameras (``cameras:=[front, left]``): one model and one worker serve every camera; camera ``front`` has the
topics above under ``front/`` (``front/image``, ``front/depth/image``, ...), its own latest-frame slot, intrinsics,
scale and anchor state, per-camera parameter overrides ``front.<name>`` and its own /diagnostics status.  The worker
serves the waiting cameras in turn and runs frames of the same size as one batch (``batch``;
:mod:`moge2_ros.ros.runtime`, :mod:`moge2_ros.pipeline.scheduler`).  ``moge2_node --managed`` is the lifecycle
node (:mod:`moge2_ros.ros.lifecycle`), the same code driven by lifecycle transitions.

The node is ROS wiring only: the frame itself (decoding, intrinsics, inference, every output's bytes) is
:class:`moge2_ros.pipeline.FramePipeline`, the same pipeline ``bag-infer`` runs; the predictor comes from
:func:`moge2_ros.inference.load_predictor`; one camera's topics and state are :class:`moge2_ros.ros.camera.Camera`,
the model, worker and parameters :class:`moge2_ros.ros.runtime.Moge2Runtime`.
"""

from __future__ import annotations

import sys
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from ..errors import InputError, Moge2RosError
from .camera_params import declare_node_parameters
from .host_memory import keep_freed_memory
from .runtime import Moge2Runtime


class Moge2Node(Node):
    """The MoGe-2 ROS 2 node.  Raises :class:`Moge2RosError` (ModelLoadError, InputError) from the constructor if
    the model cannot load or the parameters are unusable."""

    def __init__(self, node_name: str = "moge2_node", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.cfg, cameras, overrides = declare_node_parameters(self)
        self.runtime = Moge2Runtime(self, self.cfg, cameras, overrides)
        self.runtime.load()
        try:
            self.runtime.start_inputs()
            self.add_on_set_parameters_callback(self.runtime.on_set_parameters)
        except BaseException:
            self.runtime.unload()
            raise
        self.get_logger().info(f"ready: {self.runtime.describe()}")

    def stop(self) -> None:
        """Stop the worker and release the model (before destroy_node)."""
        self.runtime.unload()


def managed_flag(argv: list[str]) -> tuple[bool, list[str]]:
    """``(managed, argv without the flag)``: ``--managed`` or ``--managed=true|false`` before ``--ros-args``.

    Raises:
        InputError: another value than true / false.
    """
    end = argv.index("--ros-args") if "--ros-args" in argv else len(argv)
    managed, rest = False, []
    for i, arg in enumerate(argv):
        if i < end and (arg == "--managed" or arg.startswith("--managed=")):
            value = arg.partition("=")[2].lower() if "=" in arg else "true"
            if value not in ("true", "false"):
                raise InputError(f"--managed: expected true or false, found {value!r}")
            managed = value == "true"
        else:
            rest.append(arg)
    return managed, rest


def main(args: list[str] | None = None) -> int:
    """Entry point of ``ros2 run moge2_ros moge2_node`` and the ``moge2_node`` console script; ``--managed`` (or
    ``--managed=true``, before ``--ros-args``) runs the lifecycle node instead (:mod:`moge2_ros.ros.lifecycle`)."""
    try:
        managed, argv = managed_flag(list(sys.argv if args is None else args))
    except InputError as exc:
        print(f"moge2_node: {exc}", file=sys.stderr)
        return 2
    if managed:
        from .lifecycle import main as managed_main

        return managed_main(argv)
    rclpy.init(args=argv)
    reuse_memory = keep_freed_memory()  # no page faults on per-frame buffers (see ros/host_memory.py)
    node = None
    try:
        node = Moge2Node()
        if not reuse_memory:
            node.get_logger().info("mallopt unavailable (not glibc): per-frame buffers are freshly mapped")
    except Moge2RosError as exc:
        rclpy.logging.get_logger("moge2_node").fatal(f"cannot start: {exc}")
        rclpy.try_shutdown()
        return 1
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.stop()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
