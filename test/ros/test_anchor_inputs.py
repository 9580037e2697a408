"""Unit tests of the node's anchor inputs (moge2_ros.ros.anchor_inputs.AnchorInputs): rclpy message objects
handed to the subscription callback, no spinning node (one test creates the subscriptions on a real rclpy node
to check their names and types).

What is checked: the reading nearest the image stamp is chosen and keeps its stamp; the extrinsic comes from the
parameter (with the frame filter), the identity for the image's own frame, TF when ``tf2_ros`` is importable (a
stand-in module here: tf2_ros is not installed in this venv) and nothing without it (``wrong_frame``, one
warning); every dropped message is counted once by reason; the buffer is bounded; a bad extrinsic parameter is
refused with its name.
"""

from __future__ import annotations

import math
import sys
import types
from typing import Any

import numpy as np
import pytest

pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402
from rclpy.qos import ReliabilityPolicy  # noqa: E402
from geometry_msgs.msg import Quaternion, Transform, TransformStamped, Vector3  # noqa: E402
from sensor_msgs.msg import Image, PointCloud2, Range  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from moge2_ros.anchors import DepthImageAnchor, Extrinsic, PointCloudAnchor, RangeAnchor  # noqa: E402
from moge2_ros.errors import InputError  # noqa: E402
from moge2_ros.ros import anchor_inputs as ai  # noqa: E402
from moge2_ros.ros.anchor_inputs import AnchorInputs  # noqa: E402
from moge2_ros.ros.conversions import depth_to_image, points_to_cloud  # noqa: E402

CAMERA = "camera_optical_frame"
# lidar (x forward, y left, z up) -> camera optical (x right, y down, z forward), lidar 10 cm above the camera
LIDAR_EXTRINSIC = [0.0, -0.1, 0.0, 0.5, -0.5, 0.5, -0.5]


# ------------------------------------------------------------------------------------------------ stand-ins
class FakeLogger:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, text: str, **_: Any) -> None:
        self.warnings.append(text)

    def info(self, text: str, **_: Any) -> None:
        pass


class FakeNode:
    """What AnchorInputs uses of an rclpy node: subscriptions and a logger."""

    def __init__(self) -> None:
        self.logger = FakeLogger()
        self.subscriptions: dict[str, tuple[Any, Any]] = {}  # topic -> (type, callback)
        self.qos: dict[str, Any] = {}
        self.destroyed: list[str] = []

    def get_logger(self) -> FakeLogger:
        return self.logger

    def create_subscription(self, msg_type: Any, topic: str, callback: Any, qos: Any) -> str:
        self.subscriptions[topic] = (msg_type, callback)
        self.qos[topic] = qos
        return topic

    def destroy_subscription(self, handle: str) -> None:
        self.destroyed.append(handle)


def stamp_of(seconds: float) -> Time:
    sec = math.floor(seconds)
    return Time(sec=sec, nanosec=int(round((seconds - sec) * 1e9)))


def cloud(points: np.ndarray, t: float, frame: str = "lidar") -> PointCloud2:
    """An x y z FLOAT32 cloud of ``points`` (N, 3), NaN rows kept (a 1 x N organized cloud)."""
    pts = np.asarray(points, dtype=np.float32).reshape(1, -1, 3)
    return points_to_cloud(Header(stamp=stamp_of(t), frame_id=frame), pts, organized=True)


def range_msg(r: float, t: float, frame: str = "sonar") -> Range:
    return Range(header=Header(stamp=stamp_of(t), frame_id=frame), radiation_type=Range.INFRARED,
                 field_of_view=0.1, min_range=0.2, max_range=10.0, range=r)


def depth_msg(depth: np.ndarray, t: float, frame: str = CAMERA) -> Image:
    return depth_to_image(Header(stamp=stamp_of(t), frame_id=frame), depth.astype(np.float32), "32FC1")


def random_points(n: int = 50, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(1, 5, n), rng.uniform(-1, 1, n), rng.uniform(-0.5, 0.5, n)])


def make(cfg: dict[str, Any], namespace: str = "") -> tuple[AnchorInputs, FakeNode]:
    node = FakeNode()
    return AnchorInputs(node, cfg, namespace), node


@pytest.fixture
def no_tf(monkeypatch: pytest.MonkeyPatch) -> None:
    """tf2_ros not importable (as in this venv; forced so the test does not depend on the environment)."""
    monkeypatch.setitem(sys.modules, "tf2_ros", None)


# ------------------------------------------------------------------------------------------------ tests
def test_subscriptions_follow_the_enabled_sources_and_namespace() -> None:
    inputs, node = make({"anchor_points": True, "anchor_range": True, "anchor_depth": False,
                         "anchor_points_extrinsic": LIDAR_EXTRINSIC, "anchor_range_extrinsic": LIDAR_EXTRINSIC},
                        namespace="front")
    assert {t: s[0] for t, s in node.subscriptions.items()} == {"front/anchor/points": PointCloud2,
                                                               "front/anchor/range": Range}
    assert inputs.enabled == ("points", "range")
    assert all(q.reliability == ReliabilityPolicy.BEST_EFFORT for q in node.qos.values())  # input_qos default
    inputs.close()
    assert sorted(node.destroyed) == ["front/anchor/points", "front/anchor/range"]
    _, reliable = make({"anchor_depth": True, "input_qos": "reliable"})
    assert reliable.qos["anchor/depth"].reliability == ReliabilityPolicy.RELIABLE
    none, node = make({})
    assert node.subscriptions == {} and none.readings(1.0, CAMERA) == [] and none.counts() == {
        "bad": 0, "wrong_frame": 0, "no_transform": 0}


def test_nearest_cloud_with_extrinsic_keeps_points_and_stamp() -> None:
    inputs, node = make({"anchor_points": True, "anchor_points_extrinsic": LIDAR_EXTRINSIC,
                         "anchor_points_frame": "lidar"})
    callback = node.subscriptions["anchor/points"][1]
    clouds = {t: random_points(seed=i) for i, t in enumerate((10.0, 10.1, 10.2, 10.3))}
    for t, pts in clouds.items():
        callback(cloud(pts, t))
    (anchor,) = inputs.readings(10.17, CAMERA)
    assert isinstance(anchor, PointCloudAnchor)
    assert anchor.stamp == pytest.approx(10.2, abs=1e-6)
    np.testing.assert_allclose(np.asarray(anchor.points, dtype=np.float64), clouds[10.2], rtol=1e-6)
    expected = Extrinsic(tuple(LIDAR_EXTRINSIC[:3]), tuple(LIDAR_EXTRINSIC[3:]))
    r, t = anchor.extrinsic.matrix()
    r0, t0 = expected.matrix()
    np.testing.assert_allclose(r, r0, atol=1e-9)
    np.testing.assert_allclose(t, t0, atol=1e-9)
    # a later image picks a later cloud; the counters say what arrived and what was used
    (later,) = inputs.readings(10.31, CAMERA)
    assert later.stamp == pytest.approx(10.3, abs=1e-6)
    assert inputs.counts() == {"points_received": 4, "points_used": 2, "bad": 0, "wrong_frame": 0,
                               "no_transform": 0}


def test_frame_filter_of_the_extrinsic_counts_each_message_once() -> None:
    inputs, node = make({"anchor_points": True, "anchor_points_extrinsic": LIDAR_EXTRINSIC,
                         "anchor_points_frame": "lidar"})
    inputs.push("points", cloud(random_points(), 5.0, frame="radar"))
    for _ in range(3):  # three images use the same (wrong) cloud: one drop
        assert inputs.readings(5.0, CAMERA) == []
    assert inputs.counts()["wrong_frame"] == 1
    assert any("radar" in w and "lidar" in w for w in node.logger.warnings)
    # an empty anchor_points_frame accepts any frame_id with the extrinsic
    any_frame, _ = make({"anchor_points": True, "anchor_points_extrinsic": LIDAR_EXTRINSIC})
    any_frame.push("points", cloud(random_points(), 5.0, frame="radar"))
    assert len(any_frame.readings(5.0, CAMERA)) == 1


def test_without_extrinsic_or_tf_only_the_image_frame_is_used(no_tf: None) -> None:
    inputs, node = make({"anchor_points": True, "anchor_range": True})
    assert sum("is not importable" in w for w in node.logger.warnings) == 2  # once per source, at start-up
    inputs.push("points", cloud(random_points(), 1.0, frame=CAMERA))
    inputs.push("range", range_msg(2.0, 1.0, frame="sonar"))
    (anchor,) = inputs.readings(1.0, CAMERA)
    assert isinstance(anchor, PointCloudAnchor) and anchor.extrinsic == Extrinsic()
    inputs.push("points", cloud(random_points(), 1.05, frame="lidar"))
    assert inputs.readings(1.05, CAMERA) == []
    assert inputs.counts()["wrong_frame"] == 2  # the range and the lidar cloud, once each
    assert sum("is not importable" in w for w in node.logger.warnings) == 2


def _fake_tf2(monkeypatch: pytest.MonkeyPatch, transform: Transform, fail_first: int) -> dict[str, Any]:
    """A stand-in ``tf2_ros`` module whose Buffer fails ``fail_first`` lookups, then returns ``transform``."""
    state: dict[str, Any] = {"lookups": [], "listeners": 0}
    module = types.ModuleType("tf2_ros")

    class TransformException(Exception):
        pass

    class Buffer:
        def lookup_transform(self, target: str, source: str, when: Any) -> TransformStamped:
            state["lookups"].append((target, source, when.nanoseconds))
            if len(state["lookups"]) <= fail_first:
                raise TransformException(f"no {source} -> {target} yet")
            return TransformStamped(transform=transform)

    class TransformListener:
        def __init__(self, buffer: Buffer, node: Any) -> None:
            state["listeners"] += 1

    module.TransformException, module.Buffer, module.TransformListener = TransformException, Buffer, TransformListener
    monkeypatch.setitem(sys.modules, "tf2_ros", module)
    return state


def test_tf_lookup_when_tf2_is_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    transform = Transform(translation=Vector3(x=0.1, y=0.2, z=0.3), rotation=Quaternion(x=0.0, y=0.0, z=0.0, w=1.0))
    state = _fake_tf2(monkeypatch, transform, fail_first=2)
    inputs, node = make({"anchor_range": True})
    assert state["listeners"] == 1  # listening from the start
    inputs.push("range", range_msg(3.0, 7.25, frame="sonar"))
    assert inputs.readings(7.25, CAMERA) == []  # at the stamp, then the latest: both fail
    assert state["lookups"][0] == (CAMERA, "sonar", 7_250_000_000) and state["lookups"][1][2] == 0
    (anchor,) = inputs.readings(7.26, CAMERA)  # the same reading is retried for the next image
    assert isinstance(anchor, RangeAnchor) and anchor.range == pytest.approx(3.0)
    np.testing.assert_allclose(anchor.extrinsic.matrix()[1], [0.1, 0.2, 0.3])
    assert inputs.counts()["no_transform"] == 1 and inputs.counts()["range_used"] == 1


def test_malformed_messages_are_counted_never_raised() -> None:
    inputs, node = make({"anchor_points": True, "anchor_depth": True,
                         "anchor_points_extrinsic": LIDAR_EXTRINSIC})
    short = cloud(random_points(), 2.0)
    short.data = bytes(short.data)[:-5]  # truncated buffer
    inputs.push("points", short)
    inputs.push("depth", types.SimpleNamespace(header=None, data=b""))  # no header at all
    assert inputs.readings(2.0, CAMERA) == []
    assert inputs.readings(2.0, CAMERA) == []
    assert inputs.counts()["bad"] == 2
    assert node.logger.warnings  # said why
    # a good depth image after them is used
    depth = np.full((6, 8), 2.5, dtype=np.float32)
    inputs.push("depth", depth_msg(depth, 2.0))
    (anchor,) = inputs.readings(2.0, CAMERA)
    assert isinstance(anchor, DepthImageAnchor)
    np.testing.assert_allclose(np.asarray(anchor.depth, dtype=np.float64), 2.5)


@pytest.mark.parametrize("values, fragment", [
    ([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0], "anchor_points_extrinsic"),
    ([0.0, 0.0, 0.0, 1.0], "anchor_points_extrinsic"),
    ([math.nan, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], "anchor_points_extrinsic"),
])
def test_bad_extrinsic_parameter_is_refused_by_name(values: list[float], fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        make({"anchor_points": True, "anchor_points_extrinsic": values})


def test_buffer_is_bounded_in_messages_and_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    inputs, _ = make({"anchor_points": True, "anchor_points_extrinsic": LIDAR_EXTRINSIC})
    for i in range(ai.BUFFER_MESSAGES + 4):
        inputs.push("points", cloud(random_points(seed=i), 100.0 + i))
    (anchor,) = inputs.readings(0.0, CAMERA)  # far before all: the oldest still buffered
    assert anchor.stamp == pytest.approx(104.0)
    assert inputs.counts()["points_received"] == ai.BUFFER_MESSAGES + 4
    # a byte cap below two clouds keeps only the newest
    one_cloud = len(cloud(random_points(), 0.0).data)
    monkeypatch.setattr(ai, "BUFFER_BYTES", one_cloud + one_cloud // 2)
    small, _ = make({"anchor_points": True, "anchor_points_extrinsic": LIDAR_EXTRINSIC})
    for i in range(3):
        small.push("points", cloud(random_points(seed=i), 50.0 + i))
    (anchor,) = small.readings(0.0, CAMERA)
    assert anchor.stamp == pytest.approx(52.0)


def test_real_node_subscriptions(tmp_path: Any) -> None:
    import rclpy
    from rclpy.context import Context

    from ros_helpers import ros_env, ros_environ

    env = ros_env(tmp_path)
    with ros_environ(env):
        context = Context()
        rclpy.init(context=context, domain_id=int(env["ROS_DOMAIN_ID"]))
        try:
            node = rclpy.create_node("anchor_inputs_test", namespace="/robot", context=context)
            inputs = AnchorInputs(node, {"anchor_points": True, "anchor_depth": True,
                                         "anchor_points_extrinsic": LIDAR_EXTRINSIC}, namespace="cam1")
            topics = sorted(s.topic_name for s in node.subscriptions)
            assert topics == ["/robot/cam1/anchor/depth", "/robot/cam1/anchor/points"]
            inputs.close()
            assert list(node.subscriptions) == []
            node.destroy_node()
        finally:
            rclpy.try_shutdown(context=context)


def test_all_zero_extrinsic_is_unset_and_configure_applies_at_run_time(no_tf: None) -> None:
    inputs, node = make({"anchor_points": True, "anchor_points_extrinsic": [0.0] * 7})  # the parameter's default
    assert any("is not importable" in w for w in node.logger.warnings)
    inputs.push("points", cloud(random_points(), 3.0, frame="lidar"))
    assert inputs.readings(3.0, CAMERA) == []
    assert inputs.counts()["wrong_frame"] == 1
    # setting the extrinsic at run time: the same buffered cloud is converted again, now with it
    inputs.configure({"anchor_points_extrinsic": LIDAR_EXTRINSIC, "anchor_points_frame": "lidar"})
    (anchor,) = inputs.readings(3.0, CAMERA)
    np.testing.assert_allclose(anchor.extrinsic.matrix()[1], LIDAR_EXTRINSIC[:3])
    # a bad value is refused by name and changes nothing
    with pytest.raises(InputError, match="anchor_points_extrinsic"):
        inputs.configure({"anchor_points_extrinsic": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5]})
    (again,) = inputs.readings(3.0, CAMERA)
    assert again is anchor  # cached: converted once per message and settings
    assert inputs.counts() == {"points_received": 1, "points_used": 2, "bad": 0, "wrong_frame": 1,
                               "no_transform": 0}


def test_cached_conversion_follows_the_image_frame(no_tf: None) -> None:
    inputs, _ = make({"anchor_points": True})
    inputs.push("points", cloud(random_points(), 4.0, frame=CAMERA))
    assert len(inputs.readings(4.0, CAMERA)) == 1
    assert inputs.readings(4.0, "other_camera_optical_frame") == []  # not the image's frame any more
    assert inputs.counts()["wrong_frame"] == 1
