"""``moge2_node`` end to end: the node runs as a process, this test is its camera and its consumer.

One node process (namespace ``/cam``, the small untrained demo model, 108 tokens, small frames) serves most
checks; each test first sets the run-time parameters it relies on through ``/cam/moge2_node/set_parameters``,
so the tests do not depend on their order. Extra processes cover start-up options (namespace and remap,
compressed input) and start-up failures (a model that cannot load).

Checked per output topic: ``depth/image`` (32FC1 / 16UC1, size, header, NaN or +Inf exactly where ``mask`` is
0), ``depth/camera_info`` (size, K vs P, estimated or passed through exactly), ``points`` (decoded by fields
and offsets: organized / unorganized, z equals the depth image, x and y re-project with K, rgb equals the input
colours), ``normals`` (unit vectors), ``mask`` (mono8 0/255), ``depth/colorized`` (bgr8), ``geometry``
(moge2_ros_msgs/MonocularGeometry), ``/diagnostics``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, CompressedImage

from moge2_ros.data.example import render_example_scene
from moge2_ros.ros.conversions import image_to_float
from ros_helpers import (
    MESSAGE_TIMEOUT_S,
    NodeProcess,
    RosClient,
    RunningNode,
    camera_info,
    cloud_fields,
    diagnostics_values,
    image_array,
    jpeg_image,
    node_args,
    start_node,
    unpack_rgb,
)

pytestmark = pytest.mark.ros

WIDTH, HEIGHT = 96, 72
TOKENS = 108
FRAME_ID = "front_camera_optical_frame"
#: Off-centre principal point and fx != fy, values not representable in float32 (an exact pass-through test).
GIVEN_K = np.array([[70.123456789, 0.0, 40.3], [0.0, 90.987654321, 30.7], [0.0, 0.0, 1.0]])
#: Run-time parameters every test starts from (then overrides what it tests).
BASELINE: dict[str, Any] = dict(
    intrinsics_source="estimate", depth_encoding="32FC1", invalid_depth="nan", cloud_organized=True,
    cloud_stride=1, cloud_rgb=True, cloud_normals=False, min_depth=0.0, max_depth=0.0, num_tokens=TOKENS,
    edge_rtol=0.04, publish_colorized=True, intrinsics_stabilization="none",
)


def scene(index: int = 0, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """A rendered RGB frame (uint8); ``index`` moves the camera."""
    position = (0.3 * math.sin(index), 0.0, 0.2 * (index % 3))
    return render_example_scene(width, height, 60.0, camera_position=position).rgb


# ------------------------------------------------------------------------------------------------ fixtures
# workdir, env, client: module-scoped fixtures of test/ros/conftest.py; tiny_model_path: test/conftest.py

def configure(node: RunningNode, **overrides: Any) -> None:
    """Set the BASELINE run-time parameters with ``overrides`` (each test starts from a known state)."""
    node.client.set_ok(node.fqn, **{**BASELINE, **overrides})


def partial_mask(node: RunningNode, rgb: np.ndarray, **overrides: Any) -> None:
    """Configure, then set max_depth to the median valid depth of ``rgb``: about half the pixels invalid."""
    configure(node, **overrides)
    _, out = node.frame(rgb, topics=("depth/image",))
    depth = image_to_float(out["depth/image"])
    median = float(np.median(depth[np.isfinite(depth)]))
    node.client.set_ok(node.fqn, max_depth=median)


def start(client: RosClient, env: dict[str, str], workdir: Path, model: Path, namespace: str,
          **kwargs: Any) -> RunningNode:
    # fp32: the outputs are compared with this process's fp32 Predictor (the node's default, precision auto, is
    # bf16 on a CPU with native bf16; node vs bag-infer in bf16 is test_node_pipeline_parity.py).
    kwargs.setdefault("precision", "fp32")
    return start_node(client, env, workdir, model, namespace, frame_id=FRAME_ID, num_tokens=TOKENS,
                      diagnostics_period=0.25, **kwargs)


@pytest.fixture(scope="module")
def cam(client: RosClient, env: dict[str, str], workdir: Path, tiny_model_path: Path) -> Iterator[RunningNode]:
    node = start(client, env, workdir, tiny_model_path, "/cam")
    try:
        yield node
        assert node.process.alive(), f"moge2_node died during the tests:\n{node.process.output()}"
    finally:
        node.stop()


# ------------------------------------------------------------------------------------------------ checks
def same_header(msg: Any, stamp: Any) -> bool:
    return (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (stamp.sec, stamp.nanosec, FRAME_ID)


def k_of(info: CameraInfo) -> np.ndarray:
    return np.array(info.k, dtype=np.float64).reshape(3, 3)


def check_camera_info(info: CameraInfo, width: int, height: int) -> np.ndarray:
    k = k_of(info)
    p = np.array(info.p, dtype=np.float64).reshape(3, 4)
    assert (info.width, info.height) == (width, height)
    assert k[0, 0] > 0 and k[1, 1] > 0 and k[0, 1] == 0 and k[1, 0] == 0
    assert list(k[2]) == [0.0, 0.0, 1.0]
    np.testing.assert_array_equal(p[:, :3], k, err_msg="P must be [K | 0] for the rectified depth image")
    np.testing.assert_array_equal(p[:, 3], 0.0)
    return k


def check_points_project(cloud: dict[str, np.ndarray], depth: np.ndarray, k: np.ndarray) -> None:
    """Organized cloud: z equals depth exactly (NaN in the same places), x and y re-project through K."""
    np.testing.assert_array_equal(cloud["z"], depth)  # NaNs compare equal in assert_array_equal
    valid = np.isfinite(depth)
    assert np.array_equal(np.isfinite(cloud["x"]), valid) and np.array_equal(np.isfinite(cloud["y"]), valid)
    v, u = np.mgrid[0 : depth.shape[0], 0 : depth.shape[1]].astype(np.float64)
    z = depth.astype(np.float64)
    x_expected = (u - k[0, 2]) * z / k[0, 0]
    y_expected = (v - k[1, 2]) * z / k[1, 1]
    np.testing.assert_allclose(cloud["x"][valid], x_expected[valid], rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(cloud["y"][valid], y_expected[valid], rtol=2e-5, atol=2e-6)


# ------------------------------------------------------------------------------------------------ tests
def test_every_output_of_a_frame(cam: RunningNode, tiny_model_path: Path) -> None:
    rgb = scene(0)
    partial_mask(cam, rgb)
    stamp, out = cam.frame(rgb)

    for name, msg in out.items():
        assert same_header(msg, stamp), f"{name}: header {msg.header} is not the input's"

    # depth/image: 32FC1 metres, the input's size, NaN exactly where mask is 0
    depth_msg = out["depth/image"]
    assert depth_msg.encoding == "32FC1" and (depth_msg.width, depth_msg.height) == (WIDTH, HEIGHT)
    assert depth_msg.is_bigendian == 0 and depth_msg.step == WIDTH * 4
    depth = image_to_float(depth_msg)
    mask_msg = out["mask"]
    assert mask_msg.encoding == "mono8" and (mask_msg.width, mask_msg.height) == (WIDTH, HEIGHT)
    mask = image_array(mask_msg)
    assert set(np.unique(mask).tolist()) <= {0, 255}
    valid = mask == 255
    assert 0 < valid.sum() < valid.size, "the frame should have valid and invalid pixels (max_depth = median)"
    assert np.isnan(depth[~valid]).all(), "invalid pixels must be NaN"
    assert np.isfinite(depth[valid]).all() and (depth[valid] > 0).all(), "valid pixels must be finite metres > 0"

    # depth/camera_info: describes depth/image, estimated here
    k = check_camera_info(out["depth/camera_info"], WIDTH, HEIGHT)

    # points: organized H x W, NaN where invalid, z = depth, x/y re-project with K, rgb = the input colours
    cloud_msg = out["points"]
    assert (cloud_msg.height, cloud_msg.width) == (HEIGHT, WIDTH) and cloud_msg.is_dense is False
    assert [f.name for f in cloud_msg.fields][:3] == ["x", "y", "z"] and "rgb" in [f.name for f in cloud_msg.fields]
    cloud = cloud_fields(cloud_msg)
    check_points_project(cloud, depth, k)
    np.testing.assert_array_equal(unpack_rgb(cloud["rgb"]), rgb)

    # normals: 32FC3 unit vectors in the optical frame, NaN where invalid
    normals_msg = out["normals"]
    assert normals_msg.encoding == "32FC3" and (normals_msg.width, normals_msg.height) == (WIDTH, HEIGHT)
    normals = image_array(normals_msg)
    finite = np.isfinite(normals).all(axis=-1)
    assert not (finite & ~valid).any(), "normals of invalid pixels must be NaN"
    assert finite.sum() > 0.5 * valid.sum()
    np.testing.assert_allclose(np.linalg.norm(normals[finite], axis=-1), 1.0, atol=1e-4)

    # depth/colorized: bgr8 preview of the same size, black where invalid
    colorized_msg = out["depth/colorized"]
    assert colorized_msg.encoding == "bgr8" and (colorized_msg.width, colorized_msg.height) == (WIDTH, HEIGHT)
    colorized = image_array(colorized_msg)
    assert (colorized[~valid] == 0).all() and colorized[valid].any()

    # geometry: the same CameraInfo, the tokens used, timing, model
    geometry = out["geometry"]
    assert geometry.camera_info == out["depth/camera_info"]
    assert geometry.intrinsics_estimated is True
    assert geometry.num_tokens == TOKENS
    assert geometry.inference_ms > 0
    assert geometry.model_id == str(tiny_model_path)
    assert geometry.metric_scale > 0
    assert geometry.fov_x_deg == pytest.approx(math.degrees(2 * math.atan(WIDTH / (2 * k[0, 0]))), rel=1e-4)
    assert geometry.fov_y_deg == pytest.approx(math.degrees(2 * math.atan(HEIGHT / (2 * k[1, 1]))), rel=1e-4)
    assert geometry.valid_fraction == pytest.approx(valid.mean(), abs=1e-6)


def test_camera_info_is_used_and_passed_through_exactly(cam: RunningNode) -> None:
    configure(cam, intrinsics_source="camera_info")
    rgb = scene(1)
    for _ in range(5):  # the CameraInfo (best effort) may reach the node after the image: send both again
        stamp, out = cam.frame(rgb, k=GIVEN_K, topics=("depth/image", "depth/camera_info", "points", "geometry"))
        if not out["geometry"].intrinsics_estimated:
            break
    geometry = out["geometry"]
    assert geometry.intrinsics_estimated is False, "a valid CameraInfo was published but not used"
    k = check_camera_info(out["depth/camera_info"], WIDTH, HEIGHT)
    assert list(out["depth/camera_info"].k) == list(GIVEN_K.ravel()), "K must be passed through exactly (float64)"
    assert geometry.camera_info == out["depth/camera_info"]
    depth = image_to_float(out["depth/image"])
    assert np.isfinite(depth).any()
    check_points_project(cloud_fields(out["points"]), depth, k)


def test_bad_camera_info_is_counted_once_and_skipped(cam: RunningNode) -> None:
    """A CameraInfo with K = 0 (an uncalibrated camera) is counted once as bad input; the last good CameraInfo of
    the image size stays in use (with none before it, K is estimated: test_intrinsics_plausibility.py)."""
    configure(cam, intrinsics_source="camera_info")
    rgb = scene(2)

    def uses_given_k(out: dict) -> None:
        geometry = out["geometry"]
        assert geometry.intrinsics_estimated is False, "K = 0 must not be used"
        np.testing.assert_array_equal(np.array(geometry.camera_info.k).reshape(3, 3), GIVEN_K)

    uses_given_k(cam.frame(rgb, GIVEN_K, topics=("geometry",))[1])
    start = cam.stable_counters()
    zero = camera_info(cam.client.now(), GIVEN_K, WIDTH, HEIGHT, FRAME_ID)
    zero.k = [0.0] * 9
    zero.p = [0.0] * 12
    for _ in range(5):  # the image can overtake its CameraInfo: then that frame used the good one still
        _, out = cam.frame(rgb, topics=("geometry",), info_msg=zero)
        uses_given_k(out)
        before = cam.stable_counters()  # frames sent again by a retry are done
        if before["bad_input"] > start["bad_input"]:
            break
    assert before["bad_input"] == start["bad_input"] + 1, (start, before)
    assert before["last_error"].endswith(f"; using the last good camera_info ({WIDTH}x{HEIGHT})"), before
    for _ in range(3):  # frames without a new CameraInfo: the bad one is not counted again
        uses_given_k(cam.frame(rgb, topics=("geometry",))[1])
    after = cam.stable_counters()
    assert after["processed"] >= before["processed"] + 3, (before, after)
    assert after["bad_input"] == before["bad_input"], (before, after)
    assert after["errors"] == 0


def test_16uc1_depth_set_at_run_time(cam: RunningNode) -> None:
    rgb = scene(3)
    partial_mask(cam, rgb)
    _, metres = cam.frame(rgb, topics=("depth/image", "mask"))
    reference = image_to_float(metres["depth/image"])
    cam.client.set_ok(cam.fqn, depth_encoding="16UC1")
    _, out = cam.frame(rgb, topics=("depth/image", "mask", "depth/camera_info"))
    depth_msg = out["depth/image"]
    assert depth_msg.encoding == "16UC1" and (depth_msg.width, depth_msg.height) == (WIDTH, HEIGHT)
    assert depth_msg.step == WIDTH * 2
    millimetres = np.frombuffer(bytes(depth_msg.data), dtype="<u2").reshape(HEIGHT, WIDTH)
    valid = image_array(out["mask"]) == 255
    assert 0 < valid.sum() < valid.size
    assert (millimetres[~valid] == 0).all(), "16UC1: invalid is 0"
    assert (millimetres[valid] > 0).all()
    # the same image again, now in millimetres (rounded); a GPU may differ in the last bits, so pixels at the
    # max_depth threshold may flip
    both = valid & np.isfinite(reference)
    assert (valid != np.isfinite(reference)).mean() < 0.01
    np.testing.assert_allclose(millimetres[both], np.round(reference[both] * 1000.0), atol=1.0)
    np.testing.assert_allclose(image_to_float(depth_msg)[both], reference[both], atol=1.5e-3)
    check_camera_info(out["depth/camera_info"], WIDTH, HEIGHT)


def test_intrinsics_stabilization_at_run_time(cam: RunningNode) -> None:
    """average / lock run on estimated intrinsics; lock freezes the mean of the first window."""
    for mode in ("average", "lock"):
        configure(cam, intrinsics_stabilization=mode, intrinsics_window=2)
        ks = []
        for i in range(3):
            _, out = cam.frame(scene(i), topics=("depth/camera_info", "geometry"))
            ks.append(check_camera_info(out["depth/camera_info"], WIDTH, HEIGHT))
            assert out["geometry"].intrinsics_estimated
        if mode == "lock":
            np.testing.assert_allclose(ks[2], (ks[0] + ks[1]) / 2, rtol=1e-6)
    configure(cam)


def test_invalid_depth_inf(cam: RunningNode) -> None:
    rgb = scene(4)
    partial_mask(cam, rgb, invalid_depth="inf")
    _, out = cam.frame(rgb, topics=("depth/image", "mask", "points"))
    depth = image_to_float(out["depth/image"])
    valid = image_array(out["mask"]) == 255
    assert 0 < valid.sum() < valid.size
    assert not np.isnan(depth).any(), "invalid_depth:=inf publishes no NaN"
    assert np.isposinf(depth[~valid]).all()
    assert np.isfinite(depth[valid]).all() and (depth[valid] > 0).all()
    cloud = cloud_fields(out["points"])  # the cloud keeps NaN for invalid points
    assert np.isnan(cloud["z"][~valid]).all()
    np.testing.assert_array_equal(cloud["z"][valid], depth[valid])


def test_unorganized_cloud(cam: RunningNode) -> None:
    rgb = scene(5)
    partial_mask(cam, rgb, cloud_organized=False)
    _, out = cam.frame(rgb, topics=("depth/image", "points", "depth/camera_info"))
    depth = image_to_float(out["depth/image"])
    valid = np.isfinite(depth)
    assert 0 < valid.sum() < valid.size
    cloud_msg = out["points"]
    assert cloud_msg.height == 1 and cloud_msg.is_dense is True and cloud_msg.width == int(valid.sum())
    cloud = cloud_fields(cloud_msg)
    for name in ("x", "y", "z"):
        assert np.isfinite(cloud[name]).all(), f"unorganized cloud: no NaN in {name}"
    np.testing.assert_array_equal(cloud["z"][0], depth[valid])  # row-major pixel order
    np.testing.assert_array_equal(unpack_rgb(cloud["rgb"][0]), rgb[valid])
    k = k_of(out["depth/camera_info"])
    v, u = np.nonzero(valid)
    np.testing.assert_allclose(cloud["x"][0], (u - k[0, 2]) * depth[valid] / k[0, 0], rtol=2e-5, atol=2e-6)


def test_run_time_parameters(cam: RunningNode, tiny_model_path: Path) -> None:
    from moge2_ros.checkpoints import load_model

    level0 = load_model(str(tiny_model_path)).num_tokens_for_level(0)
    rgb = scene(6)
    configure(cam, num_tokens=150)
    _, out = cam.frame(rgb, topics=("geometry",))
    assert out["geometry"].num_tokens == 150
    configure(cam, num_tokens=0, resolution_level=0)
    _, out = cam.frame(rgb, topics=("geometry",))
    assert out["geometry"].num_tokens == level0

    # restart parameters are rejected with a reason; the read-only model cannot be set; ranges are enforced
    client = cam.client
    (device,) = client.set_parameters(cam.fqn, device="cpu")
    assert not device.successful and "restart" in device.reason, device.reason
    (transport,) = client.set_parameters(cam.fqn, image_transport="compressed")
    assert not transport.successful and "restart" in transport.reason
    (model,) = client.set_parameters(cam.fqn, model="/tmp/other_model.pt")
    assert not model.successful and "read-only" in model.reason.lower(), model.reason
    (level,) = client.set_parameters(cam.fqn, resolution_level=42)
    assert not level.successful
    (encoding,) = client.set_parameters(cam.fqn, depth_encoding="8UC1")
    assert not encoding.successful and "16UC1" in encoding.reason
    client.set_ok(cam.fqn, max_depth=1.0)
    (depths,) = client.set_parameters(cam.fqn, min_depth=2.0)
    assert not depths.successful and "max_depth" in depths.reason
    configure(cam, num_tokens=TOKENS)
    _, out = cam.frame(rgb, topics=("geometry",))
    assert out["geometry"].num_tokens == TOKENS
    assert out["geometry"].model_id == str(tiny_model_path), "the model must not have changed"


def latest_diagnostics(cam: RunningNode, predicate: Any, timeout: float = MESSAGE_TIMEOUT_S) -> dict[str, str]:
    """Values of the newest /diagnostics status of this node that satisfies ``predicate`` (waits for one)."""
    name = cam.status_prefix
    start = len(cam.diagnostics)

    def find() -> dict[str, str] | None:
        for _, array in reversed(cam.diagnostics.items[start:]):
            values = diagnostics_values(array, name)
            if values is not None and predicate(values):
                return values
        return None

    return cam.client.spin_until(find, timeout, f"/diagnostics of {cam.fqn}", cam.process)


def test_diagnostics(cam: RunningNode, tiny_model_path: Path) -> None:
    configure(cam)
    for index in range(3):
        cam.frame(scene(index), topics=("depth/image",))
    values = latest_diagnostics(cam, lambda d: "latency_p50_ms" in d)
    for key in ("input_rate_hz", "output_rate_hz", "dropped", "latency_p50_ms", "backend", "device", "model",
                "received", "processed", "bad_input", "errors", "num_tokens"):
        assert key in values, f"/diagnostics lacks {key}: {sorted(values)}"
    assert float(values["input_rate_hz"]) > 0 and float(values["output_rate_hz"]) > 0
    assert int(values["dropped"]) >= 0 and float(values["latency_p50_ms"]) > 0
    assert int(values["processed"]) >= 3 and int(values["errors"]) == 0
    assert values["backend"] == "torch"
    assert re.fullmatch(r"cpu|cuda(:\d+)?", values["device"]), values["device"]
    assert values["model"] == str(tiny_model_path)
    array = next(a for _, a in reversed(cam.diagnostics.items) if diagnostics_values(a, f"{cam.fqn}: "))
    status = next(s for s in array.status if s.name.startswith(f"{cam.fqn}: "))
    assert status.level in (b"\x00", 0), f"level {status.level!r}: {status.message}"


# ------------------------------------------------------------------------------------------------ other start-ups
def test_namespace_and_remap(client: RosClient, env: dict[str, str], workdir: Path, tiny_model_path: Path) -> None:
    node = start(client, env, workdir, tiny_model_path, "/robot/front", input_topic="image_raw",
                      extra=("-r", "image:=image_raw"))
    try:
        rgb = scene(7)
        _, out = node.frame(rgb, topics=("depth/image", "depth/camera_info", "points", "geometry"))
        assert (out["depth/image"].width, out["depth/image"].height) == (WIDTH, HEIGHT)
        topics = dict(client.node.get_topic_names_and_types())
        for topic in ("depth/image", "depth/camera_info", "points", "normals", "mask", "depth/colorized", "geometry"):
            assert f"/robot/front/{topic}" in topics, f"/robot/front/{topic} missing from {sorted(topics)}"
        subscribed = {t for t, _ in client.node.get_subscriber_names_and_types_by_node("moge2_node", "/robot/front")}
        assert "/robot/front/image_raw" in subscribed and "/robot/front/image" not in subscribed, subscribed
        assert "/robot/front/camera_info" in subscribed
        (result,) = client.set_parameters("/robot/front/moge2_node", num_tokens=120)
        assert result.successful
    finally:
        status = node.stop()
    log = node.process.output()
    assert status == 0, f"SIGINT must shut the node down cleanly (exit {status}):\n{log}"
    assert "Traceback" not in log and "[ERROR]" not in log, log


def test_compressed_input(client: RosClient, env: dict[str, str], workdir: Path, tiny_model_path: Path) -> None:
    node = start(client, env, workdir, tiny_model_path, "/cam_jpeg", input_topic="image/compressed",
                      input_type=CompressedImage, image_transport="compressed", intrinsics_source="estimate")
    try:
        rgb = scene(8)
        stamp = client.now()
        message, decoded = jpeg_image(stamp, rgb, FRAME_ID)
        got = client.request(lambda: node.image_pub.publish(message), stamp,
                             [node.outputs[t] for t in ("depth/image", "points", "geometry")], process=node.process)
        depth_msg = got["/cam_jpeg/depth/image"]
        assert same_header(depth_msg, stamp)
        assert (depth_msg.width, depth_msg.height) == (WIDTH, HEIGHT)
        assert np.isfinite(image_to_float(depth_msg)).any()
        cloud = cloud_fields(got["/cam_jpeg/points"])
        np.testing.assert_array_equal(unpack_rgb(cloud["rgb"]), decoded)  # the JPEG's colours
        assert got["/cam_jpeg/geometry"].num_tokens == TOKENS
        subscribed = {t for t, _ in client.node.get_subscriber_names_and_types_by_node("moge2_node", "/cam_jpeg")}
        assert "/cam_jpeg/image/compressed" in subscribed and "/cam_jpeg/image" not in subscribed
    finally:
        node.stop()


@pytest.mark.parametrize("kind", ["missing", "corrupt"])
def test_model_that_cannot_load_stops_the_node(kind: str, env: dict[str, str], workdir: Path) -> None:
    if kind == "missing":
        path = Path("/nonexistent.pt")
    else:
        path = workdir / "corrupt_model.pt"
        path.write_bytes(np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    started = time.monotonic()
    process = NodeProcess(node_args(path, "/cam_fail"), env, workdir / f"fail_{kind}.log")
    try:
        status = process.wait_exit(timeout=60.0)
    finally:
        process.stop()
    seconds = time.monotonic() - started
    output = process.output()
    assert status != 0, output
    assert seconds < 30.0, f"the node took {seconds:.0f} s to give up"
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if "cannot start" in line]
    assert len(lines) == 1 and str(path) in lines[0], output
    problems = [line for line in output.splitlines() if re.search(r"\[(ERROR|FATAL)\]", line)]
    assert problems == lines, output
