"""The cameras of one node and their parameter overrides (moge2_ros.ros.camera_params), without a process."""

from __future__ import annotations

import pytest

from moge2_ros.errors import InputError
from moge2_ros.ros.camera_params import OVERRIDABLE, camera_cfg, camera_names, override_name, split_override
from moge2_ros.ros.params import BY_NAME

pytestmark = pytest.mark.ros


def test_camera_names_accept_relative_namespaces_and_the_single_default() -> None:
    assert camera_names([""]) == [""]
    assert camera_names(["front", "robot/left", "_rear2"]) == ["front", "robot/left", "_rear2"]


@pytest.mark.parametrize("names, message", [
    ([], "at least one camera"),
    (["front", "front"], "repeated: 'front'"),
    (["", "left"], "must be the only camera"),
    (["/front"], "'/front' is not a relative ROS namespace"),
    (["front/"], "'front/' is not a relative ROS namespace"),
    (["2nd"], "'2nd' is not a relative ROS namespace"),
    (["a b"], "'a b' is not a relative ROS namespace"),
])
def test_bad_camera_lists_are_refused_with_the_reason(names: list[str], message: str) -> None:
    with pytest.raises(InputError, match=message):
        camera_names(names)


def test_override_names_split_back_to_camera_and_parameter() -> None:
    cameras = ["front", "robot/left"]
    assert override_name("robot/left", "num_tokens") == "robot.left.num_tokens"
    assert split_override("front.publish_points", cameras) == ("front", "publish_points")
    assert split_override("robot.left.num_tokens", cameras) == ("robot/left", "num_tokens")
    assert split_override("publish_points", cameras) is None  # node-level
    assert split_override("rear.publish_points", cameras) is None  # not a camera of this node
    assert split_override("front.model", cameras) is None  # not overridable: one model for all cameras


def test_overridable_parameters_exist_and_the_model_and_device_are_node_level() -> None:
    assert set(OVERRIDABLE) <= set(BY_NAME)
    assert {"publish_points", "intrinsics_source", "num_tokens", "anchor_mode"} <= set(OVERRIDABLE)
    assert not {"model", "device", "backend", "precision", "cameras", "batch", "max_rate_hz"} & set(OVERRIDABLE)


def test_camera_cfg_takes_the_node_values_under_the_overrides() -> None:
    node = {"publish_points": True, "num_tokens": 0}
    assert camera_cfg(node, {"publish_points": False}) == {"publish_points": False, "num_tokens": 0}
    assert camera_cfg(node, {}) == node


def test_misspelt_overrides_and_unlisted_cameras_are_reported() -> None:
    """rclpy drops undeclared start-up parameters silently; the node names them (a warning at start-up)."""
    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node

    from moge2_ros.ros.camera_params import declare_node_parameters, undeclared_overrides

    context = Context()
    rclpy.init(context=context, args=["--ros-args", "-p", "cameras:=[front]", "-p", "front.publish_points:=false",
                                      "-p", "front.publish_pionts:=false", "-p", "rear.num_tokens:=300"])
    try:
        node = Node("moge2_params_probe", context=context)
        cfg, cameras, overrides = declare_node_parameters(node)
        assert cameras == ["front"] and overrides["front"] == {"publish_points": False}
        assert sorted(undeclared_overrides(node)) == ["front.publish_pionts", "rear.num_tokens"]
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
