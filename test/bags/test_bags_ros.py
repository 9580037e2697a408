"""Bags written with rosbags are ROS 2 messages: rclpy deserialises our CDR bytes to the same content, and our
reader decodes rclpy-serialised messages; the MonocularGeometry type hash equals the ROS build's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from moge2_ros.bags.reader import RawMessage, open_bag
from moge2_ros.bags.typestore import GEOMETRY, get_typestore
from moge2_ros.bags.writer import BagWriter, camera_info_msg, cloud_msg, geometry_msg, header_msg, image_msg
from moge2_ros.io import msg_codec as codec

pytestmark = [
    pytest.mark.ros,
    pytest.mark.filterwarnings("ignore:module 'sre_(parse|constants)' is deprecated:DeprecationWarning"),
]

STAMP = 1_712_345_678_123_456_789


def test_our_bag_messages_deserialise_with_rclpy(tmp_path: Path) -> None:
    rclpy_serialization = pytest.importorskip("rclpy.serialization")
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from moge2_ros.ros import conversions as conv

    rng = np.random.default_rng(3)
    depth = rng.uniform(0.5, 5.0, size=(6, 8)).astype(np.float32)
    depth[0, 0] = np.nan
    points = rng.normal(size=(6, 8, 3)).astype(np.float32)
    k = np.array([[7.0, 0, 3.5], [0, 7.0, 2.5], [0, 0, 1]])
    header = header_msg(STAMP, "cam_optical")
    info = camera_info_msg(header, codec.encode_camera_info(k, 8, 6))
    messages = {
        "/depth": image_msg(header, codec.encode_depth(depth)),
        "/info": info,
        "/points": cloud_msg(header, codec.encode_cloud(points, organized=False)),
        "/geometry": geometry_msg(header, codec.GeometryFields(
            codec.encode_camera_info(k, 8, 6), intrinsics_estimated=True, metric_scale=1.5, fov_x_deg=60.0,
            fov_y_deg=45.0, num_tokens=1200, inference_ms=12.5, model_id="m", valid_fraction=0.9)),
    }
    with BagWriter(tmp_path / "bag", "mcap") as bag:
        for topic, msg in messages.items():
            bag.write(topic, msg)
    with open_bag(tmp_path / "bag") as bag:
        raw = {r.topic: r for r in bag.raw_messages([])}
    assert all(r.log_time_ns == STAMP for r in raw.values())

    ros_depth = rclpy_serialization.deserialize_message(raw["/depth"].data, Image)
    assert (ros_depth.header.stamp.sec, ros_depth.header.stamp.nanosec) == divmod(STAMP, 1_000_000_000)
    assert ros_depth.header.frame_id == "cam_optical"
    np.testing.assert_array_equal(conv.image_to_float(ros_depth), depth)
    ros_info = rclpy_serialization.deserialize_message(raw["/info"].data, CameraInfo)
    np.testing.assert_array_equal(conv.camera_info_to_k(ros_info, 8, 6), k)
    ros_cloud = rclpy_serialization.deserialize_message(raw["/points"].data, PointCloud2)
    assert [f.name for f in ros_cloud.fields] == ["x", "y", "z"] and ros_cloud.width == 48
    np.testing.assert_array_equal(np.frombuffer(bytes(ros_cloud.data), "<f4").reshape(-1, 3), points.reshape(-1, 3))
    geometry_type = pytest.importorskip("moge2_ros_msgs.msg").MonocularGeometry
    ros_geo = rclpy_serialization.deserialize_message(raw["/geometry"].data, geometry_type)
    assert ros_geo.metric_scale == 1.5 and ros_geo.num_tokens == 1200 and ros_geo.model_id == "m"
    assert ros_geo.intrinsics_estimated and list(ros_geo.camera_info.k) == k.ravel().tolist()

    # and the other way: rclpy-serialised node output decodes with our reader
    ros_msg = conv.depth_to_image(ros_depth.header, depth)
    ours = bag_deserialize(tmp_path, rclpy_serialization.serialize_message(ros_msg))
    np.testing.assert_array_equal(codec.decode_depth(ours), depth)


def bag_deserialize(tmp_path: Path, data: bytes) -> object:
    with open_bag(tmp_path / "bag") as bag:
        return bag.deserialize(RawMessage("/x", "sensor_msgs/msg/Image", 0, data))


def test_geometry_type_hash_matches_the_ros_build() -> None:
    import sys

    found = [p for p in (Path(sys.prefix) / "share" / "moge2_ros_msgs" / "msg" / "MonocularGeometry.json",)
             if p.is_file()]
    if not found:
        pytest.skip("no ROS build of moge2_ros_msgs in this environment")
    description = json.loads(found[0].read_text())
    ros_hash = description["type_hashes"][0]["hash_string"]
    assert get_typestore().hash_rihs01(GEOMETRY) == ros_hash
