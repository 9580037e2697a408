"""Recordings whose message definition differs from this package's (a ``MonocularGeometry`` written before it gained
the scale-anchor fields, issue 14) stay readable: the bag's own definition decodes them, and damaged bytes are one
BagError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from moge2_ros.bags import BagError
from moge2_ros.bags.reader import open_bag
from moge2_ros.bags.typestore import GEOMETRY

#: MonocularGeometry.msg as it was before the anchor fields (comments left out: they do not change the type).
OLD_GEOMETRY = """std_msgs/Header header
sensor_msgs/CameraInfo camera_info
bool intrinsics_estimated
float32 metric_scale
float32 fov_x_deg
float32 fov_y_deg
uint32 num_tokens
float32 inference_ms
string model_id
float32 valid_fraction
"""


def _old_bag(path: Path, truncate: bool = False) -> None:
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    store.register(get_types_from_msg(OLD_GEOMETRY, GEOMETRY))
    t = store.types
    header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=7, nanosec=5), frame_id="cam")
    roi = t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    info = t["sensor_msgs/msg/CameraInfo"](header=header, height=2, width=2, distortion_model="", d=np.zeros(0),
                                          k=np.eye(3).ravel(), r=np.eye(3).ravel(), p=np.zeros(12), binning_x=0,
                                          binning_y=0, roi=roi)
    geo = t[GEOMETRY](header=header, camera_info=info, intrinsics_estimated=True, metric_scale=2.5, fov_x_deg=60.0,
                      fov_y_deg=45.0, num_tokens=1200, inference_ms=10.0, model_id="old", valid_fraction=0.75)
    data = store.serialize_cdr(geo, GEOMETRY)
    with Writer(path, version=9) as writer:
        connection = writer.add_connection("/moge2/geometry", GEOMETRY, typestore=store)
        writer.write(connection, 7_000_000_005, data[:-6] if truncate else data)


def test_an_older_geometry_definition_is_decoded_with_the_bags_own(tmp_path: Path) -> None:
    _old_bag(tmp_path / "old")
    with open_bag(tmp_path / "old") as bag:
        assert bag.definition_differs("/moge2/geometry")
        (message,) = list(bag.messages(["/moge2/geometry"]))
    msg = message.msg
    assert message.stamp_ns == 7_000_000_005
    assert (msg.metric_scale, msg.model_id, msg.num_tokens, msg.valid_fraction) == (2.5, "old", 1200, 0.75)
    assert not hasattr(msg, "scale_source")  # the recorded fields only


def test_damaged_bytes_of_an_older_definition_are_one_bag_error(tmp_path: Path) -> None:
    _old_bag(tmp_path / "old", truncate=True)
    with open_bag(tmp_path / "old") as bag, pytest.raises(BagError, match="is corrupt"):
        list(bag.messages(["/moge2/geometry"]))


def test_current_definitions_use_the_shared_typestore(tmp_path: Path) -> None:
    from moge2_ros.bags.writer import BagWriter, tf_message

    with BagWriter(tmp_path / "new") as writer:
        writer.write("/tf_static", tf_message([(1, "a", "b", (0, 0, 0, 0, 0, 0, 1))]), 1)
    with open_bag(tmp_path / "new") as bag:
        assert not bag.definition_differs("/tf_static")
        (message,) = list(bag.messages(["/tf_static"]))
    assert message.msg.transforms[0].child_frame_id == "b"
