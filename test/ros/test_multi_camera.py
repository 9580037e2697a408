"""One ``moge2_node`` process serving three cameras (issue 16), over real processes.

Cameras ``front`` (96x72, with a CameraInfo), ``left`` (64x48, no CameraInfo: K estimated) and ``rear`` (80x60,
input remapped to ``rear_cam/image_raw``, with per-camera overrides ``rear.intrinsics_source:=estimate`` and
``rear.publish_points:=false``) in the namespace ``/robot``.  Every camera's outputs carry its own header and
intrinsics; a camera that stops does not delay the others; each camera has its own /diagnostics status.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from moge2_ros.data.example import render_example_scene
from multi_camera_helpers import NODE_MODULE, CameraIO, camera_statuses, cameras_param, node_status, start_multi
from ros_helpers import Inbox, NodeProcess, RosClient, node_args, publish_paced, stamp_ns

pytestmark = pytest.mark.ros

NAMESPACE = "/robot"
FQN = "/robot/moge2_node"
CAMERAS = ["front", "left", "rear"]
SIZES = {"front": (96, 72), "left": (64, 48), "rear": (80, 60)}
K_FRONT = np.array([[90.0, 0.0, 47.0], [0.0, 88.0, 36.5], [0.0, 0.0, 1.0]])
OUTPUTS = ("depth/image", "depth/camera_info", "points")


@pytest.fixture(scope="module")
def diagnostics(client: RosClient) -> Inbox:
    from diagnostic_msgs.msg import DiagnosticArray

    return client.inboxes.get("/diagnostics") or client.subscribe(DiagnosticArray, "/diagnostics", 100)


@pytest.fixture(scope="module")
def robot(client: RosClient, env: dict[str, str], workdir: Path, tiny_model_path: Path,
          diagnostics: Inbox) -> Iterator[tuple[NodeProcess, dict[str, CameraIO]]]:
    process, ios = start_multi(
        client, env, workdir, tiny_model_path, NAMESPACE, CAMERAS, outputs=OUTPUTS,
        inputs={"rear": "rear_cam/image_raw"},
        extra=("-r", "rear/image:=rear_cam/image_raw", "-p", "rear.intrinsics_source:=estimate",
               "-p", "rear.publish_points:=false"),
        num_tokens=108, diagnostics_period=0.25)
    try:
        yield process, ios
        assert process.alive(), f"moge2_node died during the tests:\n{process.output()}"
    finally:
        process.stop()


def scene(name: str, i: int = 0) -> np.ndarray:
    width, height = SIZES[name]
    return render_example_scene(width, height, 70.0, camera_position=(0.05 * i, 0.0, 0.0)).rgb


def request(client: RosClient, process: NodeProcess, io: CameraIO, topics: tuple[str, ...],
            k: np.ndarray | None = None) -> tuple[Any, dict[str, Any]]:
    """Send one frame of ``io``'s camera until all its ``topics`` came back with that frame's stamp."""
    rgb = scene(io.name)
    stamp = client.now()
    from ros_helpers import camera_info, rgb_image

    image = rgb_image(stamp, rgb, io.frame_id)
    info = camera_info(stamp, k, rgb.shape[1], rgb.shape[0], io.frame_id) if k is not None else None

    def publish() -> None:
        if info is not None:
            io.info_pub.publish(info)
        io.image_pub.publish(image)

    got = client.request(publish, stamp, [io.outputs[t] for t in topics], process=process)
    return stamp, {t: got[f"{io.prefix}/{t}"] for t in topics}


def test_every_camera_gets_outputs_with_its_own_header_size_and_intrinsics(
        client: RosClient, robot: tuple[NodeProcess, dict[str, CameraIO]]) -> None:
    process, ios = robot
    results = {
        "front": request(client, process, ios["front"], OUTPUTS, k=K_FRONT),
        "left": request(client, process, ios["left"], OUTPUTS),
        "rear": request(client, process, ios["rear"], ("depth/image", "depth/camera_info")),
    }
    for name, (stamp, out) in results.items():
        width, height = SIZES[name]
        for topic, msg in out.items():
            assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (stamp.sec, stamp.nanosec), (name, topic)
            assert msg.header.frame_id == f"{name}_optical_frame", (name, topic)
        assert (out["depth/image"].width, out["depth/image"].height) == (width, height), name
        info = out["depth/camera_info"]
        assert (info.width, info.height) == (width, height), name
        k = np.array(info.k).reshape(3, 3)
        if name == "front":
            np.testing.assert_array_equal(k, K_FRONT)  # the given camera, exactly
        else:  # estimated for this camera's own image: a positive focal length, principal point inside it
            assert k[0, 0] > 0 and k[1, 1] > 0 and 0 < k[0, 2] < width and 0 < k[1, 2] < height, (name, k)
    assert results["front"][1]["points"].width * results["front"][1]["points"].height == 96 * 72


def test_per_camera_overrides_apply_to_that_camera_only(
        client: RosClient, robot: tuple[NodeProcess, dict[str, CameraIO]]) -> None:
    process, ios = robot
    # rear: intrinsics_source estimate -> its CameraInfo is ignored; publish_points false -> no cloud.
    k_rear = np.array([[70.0, 0.0, 40.0], [0.0, 70.0, 30.0], [0.0, 0.0, 1.0]])
    ios["rear"].outputs["points"].clear()
    _, out = request(client, process, ios["rear"], ("depth/image", "depth/camera_info"), k=k_rear)
    assert not np.array_equal(np.array(out["depth/camera_info"].k).reshape(3, 3), k_rear)
    _, front = request(client, process, ios["front"], OUTPUTS, k=K_FRONT)  # the node-level values still hold
    assert len(ios["rear"].outputs["points"]) == 0
    np.testing.assert_array_equal(np.array(front["depth/camera_info"].k).reshape(3, 3), K_FRONT)
    # A run-time override: left stops publishing points; a bad override value is refused with a reason.
    client.set_ok(FQN, **{"left.publish_points": False})
    ios["left"].outputs["points"].clear()
    request(client, process, ios["left"], ("depth/image",))
    stamp, _ = request(client, process, ios["left"], ("depth/image",))
    assert all(stamp_ns(m.header.stamp) < stamp_ns(stamp) for _, m in ios["left"].outputs["points"].items)
    (result,) = client.set_parameters(FQN, **{"left.output_grid": "sideways"})
    assert not result.successful and "left.output_grid" in result.reason and "sideways" in result.reason
    (result,) = client.set_parameters(FQN, **{"left.image_transport": "compressed"})
    assert not result.successful and "restart" in result.reason
    client.set_ok(FQN, **{"left.publish_points": True})


def test_a_camera_that_stops_does_not_delay_the_others_and_each_has_its_status(
        client: RosClient, robot: tuple[NodeProcess, dict[str, CameraIO]]) -> None:
    process, ios = robot
    frames = {name: [scene(name, i) for i in range(4)] for name in ("front", "left")}
    from ros_helpers import rgb_image

    depth_left = ios["left"].outputs["depth/image"]
    depth_front = ios["front"].outputs["depth/image"]

    def send_both(i: int) -> None:
        for name in ("front", "left"):
            ios[name].image_pub.publish(rgb_image(client.now(), frames[name][i % 4], ios[name].frame_id))

    def send_left(i: int) -> None:
        ios["left"].image_pub.publish(rgb_image(client.now(), frames["left"][i % 4], ios["left"].frame_id))

    start_ns = client.now_ns()
    publish_paced(client, send_both, 20, 10.0, process)  # rear stays silent throughout
    stop_ns = client.now_ns()
    publish_paced(client, send_left, 20, 10.0, process)  # front stops
    end_ns = client.now_ns()

    def latencies(inbox: Any, lo: int, hi: int) -> np.ndarray:
        return np.array([(t - stamp_ns(m.header.stamp)) * 1e-6 for t, m in inbox.items
                         if lo <= stamp_ns(m.header.stamp) < hi])

    # the outputs still in flight after the last frame
    client.spin_until(lambda: len(latencies(depth_left, stop_ns, end_ns)) >= 8, 10.0, "left's outputs", process)

    before, after = latencies(depth_left, start_ns, stop_ns), latencies(depth_left, stop_ns, end_ns)
    assert len(latencies(depth_front, start_ns, stop_ns)) >= 5, "front had no outputs while both sent"
    assert len(before) >= 5 and len(after) >= 8, (len(before), len(after))
    # Left keeps its pace alone; no wait on the stopped front or the silent rear.
    assert np.median(after) < max(500.0, 1.5 * np.median(before)), (np.median(before), np.median(after))

    def statuses_ready() -> dict[str, dict[str, str]] | None:
        found = camera_statuses(client.inboxes["/diagnostics"], FQN)
        return found if set(found) == set(CAMERAS) and int(found["left"]["processed"]) >= 20 else None

    statuses = client.spin_until(statuses_ready, 15.0, "a /diagnostics status per camera", process)
    assert int(statuses["rear"]["received"]) >= 1 and statuses["rear"]["input"].endswith("rear_cam/image_raw")
    assert statuses["front"]["input"] == "/robot/front/image"
    assert int(statuses["left"]["received"]) > int(statuses["front"]["received"]) - 20
    total = node_status(client.inboxes["/diagnostics"], FQN)
    assert total is not None and total["cameras"] == "3"
    assert int(total["received"]) >= sum(int(s["received"]) for s in statuses.values()) - 3


def test_bad_camera_lists_stop_the_node_at_start_up_with_a_clear_error(
        env: dict[str, str], workdir: Path, tiny_model_path: Path) -> None:
    for cameras, expected in ((["front", "front"], "repeated: 'front'"),
                              (["front", "2nd"], "'2nd' is not a relative ROS namespace"),
                              (["", "left"], "must be the only camera")):
        process = NodeProcess(node_args(tiny_model_path, "/bad", cameras=cameras_param(cameras)), env,
                              workdir / f"bad_{'_'.join(cameras) or 'empty'}.log", module=NODE_MODULE)
        try:
            assert process.wait_exit(60.0) == 1
            assert expected in process.output(), process.output()
            assert "Traceback" not in process.output()
        finally:
            process.stop()


def test_the_example_multi_camera_config_starts_and_applies_each_cameras_overrides(
        client: RosClient, env: dict[str, str], workdir: Path, tiny_model_path: Path, diagnostics: Inbox) -> None:
    from _paths import REPO

    process = NodeProcess(node_args(tiny_model_path, "/example", "--params-file",
                                    str(REPO / "config" / "multi_camera.yaml"), diagnostics_period=0.25),
                          env, workdir / "example.log", module=NODE_MODULE)
    try:
        process.wait_for_output("ready:")
        statuses = client.spin_until(
            lambda: (s := camera_statuses(diagnostics, "/example/moge2_node")) and len(s) == 3
            and s, 30.0, "the example's camera statuses", process)
        assert set(statuses) == {"front", "left", "rear"}
        assert statuses["left"]["intrinsics_source"] == "estimate"
        assert statuses["front"]["intrinsics_source"] == "camera_info"  # the node-level value
        assert statuses["rear"]["num_tokens"] == "600"
        assert int(statuses["front"]["num_tokens"]) > int(statuses["left"]["num_tokens"])  # level 9 vs 5
        assert statuses["front"]["input"] == "/example/front/image"
    finally:
        process.stop()
