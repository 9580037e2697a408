"""The README's driver wiring works as written (pip set-up, no launch file): the node in its own namespace reads a
driver's topics through absolute remaps.

* RealSense (``realsense2_camera``): ``-r image:=/camera/camera/color/image_raw
  -r camera_info:=/camera/camera/color/camera_info``; the driver's K is used (``intrinsics_estimated`` false).
* ``image_transport:=compressed``: the node subscribes ``image/compressed``, which ``-r image:=...`` does NOT move
  (ROS 2 remap rules match whole names); ``-r image/compressed:=/usb_cam/image_raw/compressed`` does.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from moge2_ros.data.example import render_example_scene
from ros_helpers import NodeProcess, RosClient, camera_info, jpeg_image, node_args, output_type, rgb_image

pytestmark = [pytest.mark.ros, pytest.mark.slow]

WIDTH, HEIGHT = 96, 72


def _start(client: RosClient, env: dict[str, str], workdir: Path, model: Path, name: str, *extra: str,
           **params: object) -> NodeProcess:
    node = NodeProcess(node_args(model, "/moge", *extra, num_tokens=100, **params), env, workdir / f"{name}.log")
    node.wait_for_output("ready:")
    return node


def _subscribed(client: RosClient, node: NodeProcess, *expected: str) -> set[str]:
    """The node's subscribed topics, once it is on the graph and subscribes to every ``expected`` topic."""
    from rclpy.node import NodeNameNonExistentError

    def topics() -> set[str] | None:
        try:
            found = {t for t, _ in client.node.get_subscriber_names_and_types_by_node("moge2_node", "/moge")}
        except NodeNameNonExistentError:  # not discovered yet
            return None
        return found if found and set(expected) <= found else None

    return client.spin_until(topics, what=f"/moge/moge2_node subscribing to {expected}", process=node)


def test_realsense_remaps(client: RosClient, env: dict[str, str], workdir: Path, tiny_model_path: Path) -> None:
    node = _start(client, env, workdir, tiny_model_path, "realsense",
                  "-r", "image:=/camera/camera/color/image_raw", "-r", "camera_info:=/camera/camera/color/camera_info")
    try:
        scene = render_example_scene(WIDTH, HEIGHT, 60.0)
        image_pub = client.publisher(Image, "/camera/camera/color/image_raw", reliable=False)
        info_pub = client.publisher(CameraInfo, "/camera/camera/color/camera_info", reliable=False)
        geometry = client.subscribe(output_type("geometry"), "/moge/geometry")
        client.wait_for_subscribers(image_pub, process=node)
        client.wait_for_subscribers(info_pub, process=node)
        client.wait_for_publishers(["/moge/geometry"], process=node)
        k = np.array([[70.0, 0, 47.5], [0, 70.0, 35.5], [0, 0, 1]])
        # Best-effort image and camera_info travel separately: the first image can overtake the first
        # camera_info (then that frame estimates K). Once a camera_info has arrived, it must be used.
        for _ in range(5):
            stamp = client.now()

            def publish() -> None:
                info_pub.publish(camera_info(stamp, k, WIDTH, HEIGHT))
                image_pub.publish(rgb_image(stamp, scene.rgb))

            got = client.request(publish, stamp, [geometry], process=node)["/moge/geometry"]
            if not got.intrinsics_estimated:
                break
        assert got.intrinsics_estimated is False, "the driver's camera_info must be used"
        assert math.isclose(got.camera_info.k[0], 70.0)
        _subscribed(client, node, "/camera/camera/color/image_raw", "/camera/camera/color/camera_info")
    finally:
        node.stop()


def test_image_remap_alone_does_not_move_the_compressed_input(client: RosClient, env: dict[str, str],
                                                              workdir: Path, tiny_model_path: Path) -> None:
    """The pitfall the README warns about: with only ``-r image:=...`` the node still listens on
    ``<ns>/image/compressed``.  (Runs before the test whose node subscribes /usb_cam/image_raw/compressed.)"""
    node = _start(client, env, workdir, tiny_model_path, "compressed_pitfall", "-r", "image:=/usb_cam/image_raw",
                  image_transport="compressed", intrinsics_source="estimate")
    try:
        subscribed = _subscribed(client, node, "/moge/image/compressed", "/moge/camera_info")
        assert "/usb_cam/image_raw/compressed" not in subscribed, subscribed
    finally:
        node.stop()


def test_compressed_input_is_remapped_by_its_own_name(client: RosClient, env: dict[str, str], workdir: Path,
                                                      tiny_model_path: Path) -> None:
    node = _start(client, env, workdir, tiny_model_path, "compressed",
                  "-r", "image:=/usb_cam/image_raw", "-r", "image/compressed:=/usb_cam/image_raw/compressed",
                  image_transport="compressed", intrinsics_source="estimate")
    try:
        pub = client.publisher(CompressedImage, "/usb_cam/image_raw/compressed", reliable=False)
        depth = client.subscribe(Image, "/moge/depth/image")
        client.wait_for_subscribers(pub, process=node)
        client.wait_for_publishers(["/moge/depth/image"], process=node)
        subscribed = _subscribed(client, node, "/usb_cam/image_raw/compressed")
        assert "/moge/image/compressed" not in subscribed and "/usb_cam/image_raw" not in subscribed, subscribed
        stamp = client.now()
        message, _ = jpeg_image(stamp, render_example_scene(WIDTH, HEIGHT, 60.0).rgb)
        got = client.request(lambda: pub.publish(message), stamp, [depth], process=node)["/moge/depth/image"]
        assert (got.width, got.height) == (WIDTH, HEIGHT)
    finally:
        node.stop()
