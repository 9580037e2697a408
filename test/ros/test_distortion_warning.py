"""Lens distortion in a CameraInfo: rectified by default (the outputs are the rectified camera P's, no warning);
with ``rectify:=false`` the CameraInfo's K is used on the raw image and the node warns once that the distortion
is ignored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from moge2_ros.data.example import render_example_scene
from ros_helpers import RosClient, RunningNode, camera_info, start_node

pytestmark = pytest.mark.ros

WIDTH, HEIGHT = 96, 72
K = np.array([[83.0, 0.0, 47.5], [0.0, 83.0, 35.5], [0.0, 0.0, 1.0]])
P = np.array([[75.0, 0.0, 48.0, 0.0], [0.0, 75.0, 36.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
NOTE = "plumb_bob distortion (D = [-0.3, 0.1, 0, 0, 0]) that is ignored"


@pytest.fixture(scope="module")
def cam(client: RosClient, env: dict[str, str], workdir: Path, tiny_model_path: Path) -> Iterator[RunningNode]:
    node = start_node(client, env, workdir, tiny_model_path, "/distorted", outputs=("depth/camera_info",),
                      num_tokens=108)
    try:
        yield node
    finally:
        node.stop()


def _distorted(cam: RunningNode) -> object:
    info = camera_info(cam.client.now(), K, WIDTH, HEIGHT)
    info.distortion_model = "plumb_bob"
    info.d = [-0.3, 0.1, 0.0, 0.0, 0.0]
    info.p = P.ravel().tolist()
    return info


def test_distortion_is_rectified_into_p_without_warning(cam: RunningNode) -> None:
    rgb = render_example_scene(WIDTH, HEIGHT, 60.0).rgb
    for _ in range(2):
        _, out = cam.frame(rgb, info_msg=_distorted(cam))
        msg = out["depth/camera_info"]
        np.testing.assert_array_equal(np.array(msg.k).reshape(3, 3), P[:, :3])
        np.testing.assert_array_equal(np.array(msg.d), np.zeros(5))
    assert "that is ignored" not in cam.process.output()


def test_rectify_false_uses_k_and_warns_once(cam: RunningNode) -> None:
    rgb = render_example_scene(WIDTH, HEIGHT, 60.0).rgb
    cam.client.set_ok(cam.fqn, rectify=False)
    try:
        for _ in range(3):
            _, out = cam.frame(rgb, info_msg=_distorted(cam))
            np.testing.assert_array_equal(np.array(out["depth/camera_info"].k).reshape(3, 3), K)
        log = cam.process.output()
        assert log.count(NOTE) == 1, log[-3000:]
        assert "give rectified images" in log and "(rectify is false)" in log
    finally:
        cam.client.set_ok(cam.fqn, rectify=True)
