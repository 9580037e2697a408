"""``moge2_node`` as a process with real (distorted) cameras: a distorted image stream with its CameraInfo gives
rectified depth with a consistent depth/camera_info (K' = P, no distortion, the image's header) and points that
project onto their depth pixels; a CameraInfo that changes mid-stream (D, P, image size) is followed without a
restart; malformed CameraInfos are counted as bad input (once per message), the node keeps the last good camera of
the image size and says so in /diagnostics; with ``output_grid:=raw`` depth/camera_info is the input CameraInfo."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from moge2_ros.data.example import render_example_scene
from moge2_ros.ros.conversions import image_to_float
from ros_helpers import MESSAGE_TIMEOUT_S, RosClient, RunningNode, camera_info, cloud_fields, start_node

pytestmark = pytest.mark.ros

WIDTH, HEIGHT = 96, 72
K = np.array([[80.0, 0.0, 47.5], [0.0, 80.0, 35.5], [0.0, 0.0, 1.0]])
P = np.array([[70.0, 0.0, 48.0, 0.0], [0.0, 70.0, 36.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
D = [-0.3, 0.1, 0.0, 0.0, 0.0]
OUTPUTS = ("depth/image", "depth/camera_info", "points")


@pytest.fixture(scope="module")
def cam(client: RosClient, env: dict[str, str], workdir: Path, tiny_model_path: Path) -> Iterator[RunningNode]:
    node = start_node(client, env, workdir, tiny_model_path, "/real", outputs=OUTPUTS, num_tokens=108,
                      diagnostics_period=0.25)
    try:
        yield node
        assert node.process.alive(), f"moge2_node died during the tests:\n{node.process.output()}"
    finally:
        node.stop()


def rgb_of(width: int, height: int) -> np.ndarray:
    return render_example_scene(width, height, 70.0).rgb


def distorted(cam: RunningNode, k: np.ndarray = K, p: np.ndarray = P, d: Any = D, width: int = WIDTH,
              height: int = HEIGHT, model: str = "plumb_bob") -> Any:
    info = camera_info(cam.client.now(), k, width, height, cam.frame_id)
    info.distortion_model = model
    info.d = list(d)
    info.p = np.asarray(p, dtype=np.float64).ravel().tolist()
    return info


def frame_until(cam: RunningNode, rgb: np.ndarray, info: Any, expected_k: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """Send ``rgb`` after ``info`` until depth/camera_info shows ``expected_k`` (an image can overtake its
    CameraInfo on the other topic: that frame used the previous one)."""
    deadline = time.monotonic() + 3 * MESSAGE_TIMEOUT_S
    while True:
        stamp, out = cam.frame(rgb, info_msg=info, topics=OUTPUTS)
        if np.array_equal(np.array(out["depth/camera_info"].k).reshape(3, 3), expected_k):
            return stamp, out
        assert time.monotonic() < deadline, f"depth/camera_info never showed {expected_k.tolist()}"


def check_consistent(stamp: Any, out: dict[str, Any], k: np.ndarray, width: int, height: int) -> None:
    """depth/camera_info describes depth/image (rectified: no distortion, binning, ROI; the image's header) and
    every point projects through it onto its own depth pixel."""
    info, depth_msg = out["depth/camera_info"], out["depth/image"]
    for msg in (info, depth_msg, out["points"]):
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (stamp.sec, stamp.nanosec)
        assert msg.header.frame_id == "camera_optical_frame"
    assert (info.width, info.height, depth_msg.width, depth_msg.height) == (width, height, width, height)
    np.testing.assert_array_equal(np.array(info.k).reshape(3, 3), k)
    np.testing.assert_array_equal(np.array(info.d), np.zeros(5))
    np.testing.assert_array_equal(np.array(info.p).reshape(3, 4), np.hstack([k, np.zeros((3, 1))]))
    assert (info.binning_x, info.binning_y, info.roi.width, info.roi.height) == (0, 0, 0, 0)
    depth = image_to_float(depth_msg)
    cloud = cloud_fields(out["points"])
    valid = np.isfinite(depth)
    assert valid.mean() > 0.5
    x, y, z = (cloud[n][valid].astype(np.float64) for n in ("x", "y", "z"))
    v, u = np.mgrid[0:height, 0:width]
    np.testing.assert_allclose(z, depth[valid], rtol=1e-6)
    np.testing.assert_allclose(k[0, 0] * x / z + k[0, 2], u[valid], atol=2e-3)
    np.testing.assert_allclose(k[1, 1] * y / z + k[1, 2], v[valid], atol=2e-3)


def test_distorted_stream_gives_rectified_depth_and_camera_info(cam: RunningNode) -> None:
    rgb = rgb_of(WIDTH, HEIGHT)
    for _ in range(2):
        stamp, out = frame_until(cam, rgb, distorted(cam), P[:, :3])
        check_consistent(stamp, out, P[:, :3], WIDTH, HEIGHT)
    fisheye = distorted(cam, d=[0.05, -0.01, 0.0, 0.0], model="equidistant")
    stamp, out = frame_until(cam, rgb, fisheye, P[:, :3])
    check_consistent(stamp, out, P[:, :3], WIDTH, HEIGHT)


def test_camera_info_change_mid_stream_is_followed_without_restart(cam: RunningNode) -> None:
    pid = cam.process.pid
    rgb = rgb_of(WIDTH, HEIGHT)
    p2 = P.copy()
    p2[0, 0] = p2[1, 1] = 64.0
    stamp, out = frame_until(cam, rgb, distorted(cam, p=p2, d=[-0.1, 0.02, 0.0, 0.0, 0.0]), p2[:, :3])
    check_consistent(stamp, out, p2[:, :3], WIDTH, HEIGHT)
    # a smaller stream (the same sensor binned 2x2): new size, new maps, K' = P binned
    small = rgb_of(WIDTH // 2, HEIGHT // 2)
    binned = distorted(cam)
    binned.binning_x = binned.binning_y = 2
    expected = np.array([[35.0, 0.0, 24.0], [0.0, 35.0, 18.0], [0.0, 0.0, 1.0]])
    stamp, out = frame_until(cam, small, binned, expected)
    check_consistent(stamp, out, expected, WIDTH // 2, HEIGHT // 2)
    assert cam.process.alive() and cam.process.pid == pid


def test_malformed_camera_info_is_counted_and_the_last_good_camera_kept(cam: RunningNode) -> None:
    rgb = rgb_of(WIDTH, HEIGHT)
    frame_until(cam, rgb, distorted(cam), P[:, :3])  # the last good camera of this size
    before = cam.stable_counters(stable_s=0.5)
    malformed = [distorted(cam, d=[np.nan, 0.0, 0.0, 0.0, 0.0]), distorted(cam, d=[0.1, 0.2]),
                 distorted(cam, model="kannala_brandt")]
    rotated = distorted(cam)
    rotated.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
    malformed.append(rotated)
    for info in malformed:
        for with_info in (True, False):  # then a frame without a new CameraInfo: the refused one is not recounted
            _, out = cam.frame(rgb, info_msg=info if with_info else None, topics=OUTPUTS)
            np.testing.assert_array_equal(np.array(out["depth/camera_info"].k).reshape(3, 3), P[:, :3])
    after = cam.stable_counters(stable_s=0.5)
    assert after["errors"] == before["errors"], after
    counted = after["bad_input"] - before["bad_input"]
    # each received message once (a frame re-sent after 2 s without outputs re-sends its CameraInfo too)
    assert len(malformed) <= counted <= 2 * len(malformed), (before, after)
    assert after["last_error"].endswith(f"; using the last good camera_info ({WIDTH}x{HEIGHT})"), after["last_error"]
    assert after["processed"] - before["processed"] >= 2 * len(malformed)
    for _ in range(3):
        cam.frame(rgb, topics=OUTPUTS)
    again = cam.stable_counters(stable_s=0.5)
    assert again["bad_input"] == after["bad_input"], (after, again)
    stamp, out = frame_until(cam, rgb, distorted(cam), P[:, :3])  # a good CameraInfo again
    check_consistent(stamp, out, P[:, :3], WIDTH, HEIGHT)


def test_raw_output_grid_carries_the_input_camera_info(cam: RunningNode) -> None:
    rgb = rgb_of(WIDTH, HEIGHT)
    cam.client.set_ok(cam.fqn, output_grid="raw")
    try:
        stamp, out = frame_until(cam, rgb, distorted(cam), K)
        info = out["depth/camera_info"]
        assert info.distortion_model == "plumb_bob"
        np.testing.assert_array_equal(np.array(info.d), D)
        np.testing.assert_array_equal(np.array(info.p).reshape(3, 4), P)
        depth = image_to_float(out["depth/image"])
        assert depth.shape == (HEIGHT, WIDTH) and 0.5 < np.isfinite(depth).mean() <= 1.0
        z = cloud_fields(out["points"])["z"]
        valid = np.isfinite(depth)
        np.testing.assert_allclose(z[valid], depth[valid], rtol=1e-6)
    finally:
        cam.client.set_ok(cam.fqn, output_grid="rectified")
