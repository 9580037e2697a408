"""Metric anchors over real processes (issue 14): ``moge2_node`` with ``anchor/points``, ``anchor/range`` and
``anchor/depth`` subscriptions, this test as its camera, LiDAR, rangefinder and depth camera.

The true scale is known by construction: a first frame without anchors gives the network's own points ``P``
(optical frame) and scale ``s``; then a LiDAR cloud of ``1.7 P`` in a ``lidar`` frame (x forward, y left, z up,
10 cm above the camera) through ``anchor_points_extrinsic`` (and through one of a lidar turned 90 degrees, set
at run time), a Range reading of the closest surface of ``1.3 P`` in a narrow cone of a ``sonar`` frame (5 cm
below the camera) through ``anchor_range_extrinsic``, and a registered 16UC1 depth image of ``1.5 P`` at half
resolution with holes.  The node must publish the anchored
scale (1.7 s, 1.3 s, 1.5 s) and points, and name the source.  Malformed anchors (NaN cloud, empty cloud, wrong
frame_id, a stamp 5 s off, truncated data, 2 million random points, a bad quaternion at run time and at
start-up) must leave the node publishing with the network's scale and be counted in /diagnostics.

One node process serves the module (the demo model, 64x48 frames, 108 tokens, ``input_qos`` reliable: a
best-effort subscription rarely receives a 32 MB cloud whole); the anchoring filter is reset between the parts
by switching ``anchor_mode`` off and on (run-time parameter), so the parts do not depend on each other's scale.
A second, short-lived process checks the start-up refusal of a bad quaternion, and a third serves two cameras
(``cameras:=[front, left]``), each with its own anchor subscriptions and extrinsic.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("rclpy")

from sensor_msgs.msg import Image, PointCloud2, Range  # noqa: E402

from moge2_ros.anchors import Extrinsic  # noqa: E402
from moge2_ros.data.example import render_example_scene  # noqa: E402
from moge2_ros.ros.conversions import depth_to_image, points_to_cloud  # noqa: E402
from ros_helpers import (  # noqa: E402
    MESSAGE_TIMEOUT_S,
    NodeProcess,
    RosClient,
    RunningNode,
    camera_info,
    cloud_fields,
    diagnostics_values,
    header,
    node_args,
    rgb_image,
    stamp_ns,
    start_node,
)

pytestmark = pytest.mark.ros

WIDTH, HEIGHT = 64, 48
TOKENS = 108
FRAME_ID = "front_camera_optical_frame"
NAMESPACE = "/anc"
OUTPUTS = ("points", "geometry")
#: body (x forward, y left, z up) -> camera optical frame (x right, y down, z forward)
BODY_TO_OPTICAL = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
LIDAR = Extrinsic.from_matrix(BODY_TO_OPTICAL, (0.0, -0.10, 0.0))  # 10 cm above the camera (y down)
SONAR = Extrinsic.from_matrix(BODY_TO_OPTICAL, (0.0, 0.05, 0.0))  # 5 cm below
SONAR_FOV = 0.25  # radians, full cone angle
LIDAR_SCALE, RANGE_SCALE, DEPTH_SCALE = 1.7, 1.3, 1.5
#: the anchored scale must match the true one within (the fit is exact on this data up to pixel rounding)
SCALE_RTOL = 0.03
DIAGNOSTICS_PERIOD = 0.2


def as_param(extrinsic: Extrinsic) -> list[float]:
    return [*extrinsic.translation, *extrinsic.quaternion]


def scene_rgb() -> np.ndarray:
    return render_example_scene(WIDTH, HEIGHT, 60.0).rgb


def scene_k() -> np.ndarray:
    return render_example_scene(WIDTH, HEIGHT, 60.0).intrinsics


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def node(client: RosClient, env: dict[str, str], workdir: Path, tiny_model_path: Path) -> Iterator[RunningNode]:
    running = start_node(
        client, env, workdir, tiny_model_path, NAMESPACE, outputs=OUTPUTS, frame_id=FRAME_ID,
        precision="fp32", num_tokens=TOKENS, intrinsics_source="camera_info", diagnostics_period=DIAGNOSTICS_PERIOD,
        input_qos="reliable", anchor_mode="scale", anchor_points=True, anchor_range=True, anchor_depth=True,
        anchor_points_frame="lidar", anchor_points_extrinsic=as_param(LIDAR),
        anchor_range_frame="sonar", anchor_range_extrinsic=as_param(SONAR), anchor_max_age=0.1)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def anchor_pubs(node: RunningNode) -> dict[str, Any]:
    pubs = {"points": node.client.publisher(PointCloud2, f"{NAMESPACE}/anchor/points"),
            "range": node.client.publisher(Range, f"{NAMESPACE}/anchor/range"),
            "depth": node.client.publisher(Image, f"{NAMESPACE}/anchor/depth")}
    for pub in pubs.values():
        node.client.wait_for_subscribers(pub, process=node.process)
    return pubs


@pytest.fixture(scope="module")
def network(node: RunningNode, anchor_pubs: dict[str, Any]) -> dict[str, Any]:
    """The network's own output for the scene, without anchors: points (H, W, 3) and scale."""
    reset_filter(node)
    geometry, points = frame_at(node, node.client.now())
    assert geometry.scale_source == "network"
    assert geometry.metric_scale == pytest.approx(geometry.network_scale, rel=1e-6)
    assert np.isfinite(points).all(axis=-1).sum() > 0.5 * WIDTH * HEIGHT
    return {"points": points, "scale": float(geometry.network_scale)}


# ------------------------------------------------------------------------------------------------ helpers
def reset_filter(node: RunningNode, **params: Any) -> None:
    """A fresh anchoring filter (mode off, then scale), the start-up extrinsics, and ``params`` set."""
    node.client.set_ok(node.fqn, anchor_mode="off")
    params = {"anchor_points_extrinsic": as_param(LIDAR), "anchor_range_extrinsic": as_param(SONAR), **params}
    node.client.set_ok(node.fqn, anchor_mode="scale", **params)


def frame_at(node: RunningNode, stamp: Any) -> tuple[Any, np.ndarray]:
    """Publish the scene (CameraInfo + image) stamped ``stamp`` to ``node``'s camera; its geometry message and
    points (H, W, 3)."""
    rgb, k = scene_rgb(), scene_k()
    image = rgb_image(stamp, rgb, node.frame_id)
    info = camera_info(stamp, k, WIDTH, HEIGHT, node.frame_id)

    def publish() -> None:
        node.info_pub.publish(info)
        node.image_pub.publish(image)

    got = node.client.request(publish, stamp, [node.outputs[t] for t in OUTPUTS], process=node.process)
    fields = cloud_fields(got[node.outputs["points"].topic])
    points = np.stack([fields["x"], fields["y"], fields["z"]], axis=-1).astype(np.float64)
    return got[node.outputs["geometry"].topic], points


def diagnostics(node: RunningNode, predicate: Callable[[dict[str, str]], bool], what: str, since: int = 0,
                timeout: float = MESSAGE_TIMEOUT_S, after_ns: int = 0) -> dict[str, str]:
    """The first /diagnostics values of the node (received after index ``since``, stamped at or after
    ``after_ns``) that satisfy ``predicate``."""
    def found() -> dict[str, str] | None:
        for _, array in node.diagnostics.items[since:]:
            values = diagnostics_values(array, node.status_prefix)
            if values is not None and stamp_ns(array.header.stamp) >= after_ns and predicate(values):
                return values
        return None

    return node.client.spin_until(found, timeout, what, node.process)


def counter(values: dict[str, str], key: str) -> int:
    return int(values.get(key, "0"))


def settled(node: RunningNode, margin_s: float = 0.05) -> dict[str, str]:
    """/diagnostics values of a message the node stamped ``margin_s`` after this call: they count every frame
    whose outputs the test had received before the call (the node counts a frame right after publishing it)."""
    after = node.client.now_ns() + int(margin_s * 1e9)
    return diagnostics(node, lambda v: True, "a new /diagnostics message", max(0, len(node.diagnostics) - 2),
                       after_ns=after)


def deliver(node: RunningNode, pub: Any, msg: Any, key: str, resend_s: float = 3.0) -> dict[str, str]:
    """Publish ``msg`` until the node's counter ``key`` (e.g. ``anchor_points_received``) has grown; returns those
    diagnostics (an anchor published before the image is then waiting in the node's buffer)."""
    before = counter(settled(node, margin_s=0.0), key)
    since = len(node.diagnostics)
    deadline = time.monotonic() + MESSAGE_TIMEOUT_S
    while True:
        pub.publish(msg)
        try:
            return diagnostics(node, lambda v: counter(v, key) > before, f"{key} > {before}", since,
                               timeout=min(resend_s, max(0.0, deadline - time.monotonic())))
        except AssertionError:
            if not node.process.alive() or time.monotonic() > deadline:
                raise


def lidar_cloud(points_cam: np.ndarray, stamp: Any, frame: str = "lidar", extrinsic: Extrinsic = LIDAR) \
        -> PointCloud2:
    """``points_cam`` (N, 3), camera optical frame, as a 1 x N cloud in the lidar frame (``extrinsic``: lidar ->
    camera)."""
    r, t = extrinsic.matrix()
    in_lidar = (np.asarray(points_cam, dtype=np.float64) - t) @ r  # R^T (p - t), row vectors
    return points_to_cloud(header(stamp, frame), in_lidar.astype(np.float32).reshape(1, -1, 3), organized=True)


def stamp_plus(stamp: Any, seconds: float) -> Any:
    from builtin_interfaces.msg import Time

    ns = int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec) + int(round(seconds * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def valid_points(points: np.ndarray) -> np.ndarray:
    flat = points.reshape(-1, 3)
    return flat[np.isfinite(flat).all(axis=1)]


# ------------------------------------------------------------------------------------------------ tests
def test_lidar_cloud_in_its_own_frame_sets_the_scale(node: RunningNode, anchor_pubs: dict[str, Any],
                                                     network: dict[str, Any]) -> None:
    reset_filter(node)
    stamp = node.client.now()
    truth = LIDAR_SCALE * valid_points(network["points"])[::2]  # every other pixel: a sparse "LiDAR"
    deliver(node, anchor_pubs["points"], lidar_cloud(truth, stamp), "anchor_points_received")
    geometry, points = frame_at(node, stamp)

    assert geometry.scale_source == "points"
    assert geometry.network_scale == pytest.approx(network["scale"], rel=1e-5)  # same image, same network
    assert geometry.metric_scale / geometry.network_scale == pytest.approx(LIDAR_SCALE, rel=SCALE_RTOL)
    both = np.isfinite(points[..., 2]) & np.isfinite(network["points"][..., 2])
    ratio = np.median(points[..., 2][both] / network["points"][..., 2][both])
    assert ratio == pytest.approx(LIDAR_SCALE, rel=SCALE_RTOL)  # the published points follow the scale
    assert geometry.anchor_count >= 0.3 * len(truth) and geometry.anchor_inliers >= 0.9 * geometry.anchor_count
    assert geometry.anchor_residual_m < 0.02 * float(np.median(truth[:, 2]))
    assert math.isfinite(geometry.scale_log_std) and 0 < geometry.scale_log_std < 0.1
    values = diagnostics(node, lambda v: counter(v, "anchored") >= 1, "an anchored frame in /diagnostics")
    assert counter(values, "anchor_points_used") >= 1


def test_extrinsic_changed_at_run_time_is_used(node: RunningNode, anchor_pubs: dict[str, Any],
                                               network: dict[str, Any]) -> None:
    # the lidar turned 90 degrees to the left (its x axis along the camera's -x): the start-up extrinsic would put
    # this cloud beside the camera, outside the image
    turned = Extrinsic.from_matrix(BODY_TO_OPTICAL @ np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
                                   (0.2, -0.1, 0.0))
    reset_filter(node, anchor_points_extrinsic=as_param(turned))
    stamp = node.client.now()
    truth = LIDAR_SCALE * valid_points(network["points"])[::2]
    deliver(node, anchor_pubs["points"], lidar_cloud(truth, stamp, extrinsic=turned), "anchor_points_received")
    geometry, _ = frame_at(node, stamp)
    assert geometry.scale_source == "points"
    assert geometry.metric_scale / geometry.network_scale == pytest.approx(LIDAR_SCALE, rel=SCALE_RTOL)


def test_range_reading_sets_the_scale(node: RunningNode, anchor_pubs: dict[str, Any],
                                      network: dict[str, Any]) -> None:
    reset_filter(node)
    stamp = node.client.now()
    rot, apex = SONAR.matrix()
    axis = rot[:, 0]  # the Range cone looks along the sensor's +x
    d = RANGE_SCALE * valid_points(network["points"]) - apex
    dist = np.linalg.norm(d, axis=1)
    inside = d @ axis >= math.cos(SONAR_FOV / 2) * dist
    assert inside.sum() >= 10, "the sonar cone must see some of the scene"
    reading = Range(header=header(stamp, "sonar"), radiation_type=Range.ULTRASOUND, field_of_view=SONAR_FOV,
                    min_range=0.05, max_range=50.0, range=float(dist[inside].min()))  # the closest surface
    deliver(node, anchor_pubs["range"], reading, "anchor_range_received")
    geometry, _ = frame_at(node, stamp)

    assert geometry.scale_source == "range"
    assert geometry.metric_scale / geometry.network_scale == pytest.approx(RANGE_SCALE, rel=SCALE_RTOL)


def test_registered_depth_image_at_half_resolution_sets_the_scale(node: RunningNode, anchor_pubs: dict[str, Any],
                                                                  network: dict[str, Any]) -> None:
    reset_filter(node)
    stamp = node.client.now()
    z = DEPTH_SCALE * network["points"][::2, ::2, 2]  # a 32x24 depth camera registered to the image, with holes
    z[np.arange(z.shape[0]) % 3 == 0] = np.nan
    deliver(node, anchor_pubs["depth"], depth_to_image(header(stamp, FRAME_ID), z.astype(np.float32), "16UC1"),
            "anchor_depth_received")
    geometry, _ = frame_at(node, stamp)
    assert geometry.scale_source == "depth"
    assert geometry.metric_scale / geometry.network_scale == pytest.approx(DEPTH_SCALE, rel=SCALE_RTOL)


def test_malformed_anchors_are_counted_and_the_network_scale_kept(node: RunningNode, anchor_pubs: dict[str, Any],
                                                                  network: dict[str, Any]) -> None:
    reset_filter(node)
    truth = LIDAR_SCALE * valid_points(network["points"])
    rng = np.random.default_rng(0)
    big = np.column_stack([rng.uniform(0.5, 30.0, 2_000_000), rng.uniform(-10, 10, 2_000_000),
                           rng.uniform(-5, 5, 2_000_000)])  # 2 million points that fit nothing, camera frame
    # (name, source, message of the stamp, image stamp offset s, counter -> increase: exact for anchor_bad,
    # anchor_wrong_frame and anchored, at least for anchors_rejected); a frame uses
    # per source the reading nearest its stamp: the case's own (older leftovers of the points buffer are stale
    # and add to anchors_rejected in the range case)
    cases: list[tuple[str, str, Callable[[Any], Any], float, dict[str, int]]] = [
        ("range limits", "range", lambda s: Range(header=header(s, "sonar"), field_of_view=SONAR_FOV, min_range=5.0,
                                                  max_range=1.0, range=2.0), 0.0, {"anchor_bad": 1}),
        ("nan", "points", lambda s: lidar_cloud(np.full((500, 3), np.nan), s), 0.0, {"anchors_rejected": 500}),
        ("empty", "points", empty_cloud, 0.0, {"anchors_rejected": 1}),
        ("wrong frame", "points", lambda s: lidar_cloud(truth, s, frame="radar"), 0.0, {"anchor_wrong_frame": 1}),
        ("truncated data", "points", lambda s: truncated_cloud(lidar_cloud(truth, s)), 0.0, {"anchor_bad": 1}),
        ("2 million points", "points", lambda s: lidar_cloud(big, s), 0.0, {}),
        # a good cloud, the image 5 s later (last: the next frames' stamps go back in time, which must not hurt)
        ("stale", "points", lambda s: lidar_cloud(truth, s), 5.0, {"anchors_rejected": 1}),
    ]
    exact = ("anchor_bad", "anchor_wrong_frame", "anchored")
    timings, samples = {}, {}
    before = settled(node, margin_s=0.2)
    for name, source, make, offset, grows in cases:
        stamp = node.client.now()
        deliver(node, anchor_pubs[source], make(stamp), f"anchor_{source}_received")
        t0 = time.monotonic()
        geometry, _ = frame_at(node, stamp_plus(stamp, offset))
        timings[name] = round(time.monotonic() - t0, 3)
        samples[name] = geometry.anchor_count
        assert geometry.scale_source == "network", name
        assert geometry.metric_scale == pytest.approx(geometry.network_scale, rel=1e-6), name
        assert geometry.network_scale == pytest.approx(network["scale"], rel=1e-5), name
        frames = counter(before, "anchored") + counter(before, "anchor_fallback")
        after = diagnostics(node, lambda v: counter(v, "anchored") + counter(v, "anchor_fallback") > frames,
                            f"the frame of case {name!r} in /diagnostics")
        growth = {key: counter(after, key) - counter(before, key)
                  for key in ("anchor_bad", "anchor_wrong_frame", "anchors_rejected", "anchored", "anchor_fallback")}
        before = after
        assert growth["anchor_fallback"] >= 1 and growth["anchored"] == 0, (name, growth)  # >1: image resent
        for key in exact:
            assert growth[key] == grows.get(key, 0), (name, growth)
        assert growth["anchors_rejected"] >= grows.get("anchors_rejected", 0), (name, growth)
    # only the big cloud reached the fit (and was refused: random points); the others left no usable sample
    assert samples.pop("2 million points") >= 100 and set(samples.values()) == {0}, samples
    assert node.process.alive()
    print(f"frame round trips with malformed anchors (s): {timings}")


def truncated_cloud(msg: PointCloud2) -> PointCloud2:
    msg.data = bytes(msg.data)[: len(msg.data) // 2]
    return msg


def empty_cloud(stamp: Any) -> PointCloud2:
    msg = lidar_cloud(np.zeros((1, 3)), stamp)
    msg.width, msg.row_step, msg.data = 0, 0, b""
    return msg


def test_bad_quaternion_is_refused_at_run_time_and_at_start(node: RunningNode, env: dict[str, str], workdir: Path,
                                                            tiny_model_path: Path) -> None:
    results = node.client.set_parameters(node.fqn, anchor_points_extrinsic=[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0])
    assert not results[0].successful
    assert "anchor_points_extrinsic" in results[0].reason and "quaternion" in results[0].reason
    # the node keeps its extrinsic and serves frames
    geometry, _ = frame_at(node, node.client.now())
    assert geometry.scale_source == "network"

    bad = as_param(LIDAR)[:3] + [0.1, 0.2, 0.3, 0.4]  # norm 0.55
    process = NodeProcess(node_args(tiny_model_path, "/bad_quaternion", anchor_points=True,
                                    anchor_points_extrinsic=bad), env, workdir / "bad_quaternion.log")
    try:
        status = process.wait_exit(timeout=60.0)
    finally:
        process.stop()
    assert status != 0
    log = process.output()
    assert "cannot start" in log and "anchor_points_extrinsic" in log and "quaternion" in log, log[-2000:]


def test_each_camera_of_a_node_has_its_own_anchors(client: RosClient, env: dict[str, str], workdir: Path,
                                                   tiny_model_path: Path, network: dict[str, Any]) -> None:
    """Two cameras of one node: ``front`` with a lidar through its own extrinsic override, ``left`` with a cloud
    in its own optical frame (no extrinsic: identity); neither uses the other's readings."""
    from multi_camera_helpers import camera_statuses, start_multi

    namespace = "/multi"
    process, ios = start_multi(
        client, env, workdir, tiny_model_path, namespace, ["front", "left"], outputs=OUTPUTS, precision="fp32",
        num_tokens=TOKENS, intrinsics_source="camera_info", diagnostics_period=DIAGNOSTICS_PERIOD,
        input_qos="reliable", anchor_mode="scale", anchor_points=True,
        **{"front.anchor_points_extrinsic": as_param(LIDAR), "front.anchor_points_frame": "lidar"})
    try:
        diag = client.inboxes["/diagnostics"]
        cams = {name: RunningNode(process, client, namespace, io.image_pub, io.info_pub, io.outputs, diag,
                                  io.frame_id) for name, io in ios.items()}
        pubs = {name: client.publisher(PointCloud2, f"{io.prefix}/anchor/points") for name, io in ios.items()}
        for pub in pubs.values():
            client.wait_for_subscribers(pub, process=process)
        truth = valid_points(network["points"])[::2]  # the same scene and K: the same network output

        stamp = client.now()
        deliver(cams["front"], pubs["front"], lidar_cloud(LIDAR_SCALE * truth, stamp), "anchor_points_received")
        front, _ = frame_at(cams["front"], stamp)
        left, _ = frame_at(cams["left"], stamp)  # same stamp, but its own buffer is empty
        assert front.scale_source == "points" and left.scale_source == "network"
        assert front.metric_scale / front.network_scale == pytest.approx(LIDAR_SCALE, rel=SCALE_RTOL)

        stamp = client.now()
        in_left = points_to_cloud(header(stamp, ios["left"].frame_id),
                                  (RANGE_SCALE * truth).astype(np.float32).reshape(1, -1, 3), organized=True)
        deliver(cams["left"], pubs["left"], in_left, "anchor_points_received")
        left, _ = frame_at(cams["left"], stamp)
        assert left.scale_source == "points"
        assert left.metric_scale / left.network_scale == pytest.approx(RANGE_SCALE, rel=SCALE_RTOL)

        statuses = diagnostics(cams["left"], lambda v: True, "per-camera statuses", len(diag))  # a fresh message
        per_camera = camera_statuses(diag, f"{namespace}/moge2_node")
        used = {name: counter(per_camera[name], "anchor_points_used") for name in ("front", "left")}
        assert min(used.values()) >= 1, per_camera  # more than 1 only when a frame was sent again
        assert counter(statuses, "anchor_points_used") == sum(used.values())  # the node's status sums its cameras
        assert all(counter(per_camera[name], "anchor_wrong_frame") == 0 for name in ("front", "left"))
        # left has no extrinsic and this venv no tf2_ros: said once, at start-up
        assert process.output().count("tf2_ros is not importable") == 1, process.output()[-3000:]
    finally:
        process.stop()
