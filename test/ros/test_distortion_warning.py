"""Lens distortion in a CameraInfo is ignored (K alone is used) but never silently: the node warns once, and
keeps using the CameraInfo's K."""

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
NOTE = "plumb_bob distortion (D = [-0.3, 0.1, 0, 0, 0]) that is ignored"


@pytest.fixture(scope="module")
def cam(client: RosClient, env: dict[str, str], workdir: Path, tiny_model_path: Path) -> Iterator[RunningNode]:
    node = start_node(client, env, workdir, tiny_model_path, "/distorted", outputs=("depth/camera_info",),
                      num_tokens=108)
    try:
        yield node
    finally:
        node.stop()


def test_distortion_is_warned_about_once_and_k_is_still_used(cam: RunningNode):
    rgb = render_example_scene(WIDTH, HEIGHT, 60.0).rgb
    for _ in range(3):
        stamp = cam.client.now()
        info = camera_info(stamp, K, WIDTH, HEIGHT)
        info.distortion_model = "plumb_bob"
        info.d = [-0.3, 0.1, 0.0, 0.0, 0.0]
        _, out = cam.frame(rgb, info_msg=info)
        np.testing.assert_array_equal(np.array(out["depth/camera_info"].k).reshape(3, 3), K)
    log = cam.process.output()
    assert log.count(NOTE) == 1, log[-3000:]
    assert "give rectified images" in log
