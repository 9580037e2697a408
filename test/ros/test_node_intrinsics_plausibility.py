"""``moge2_node`` as a process with implausible given intrinsics: a CameraInfo with fx = 1e30 (depths of ~1e27 m
before issue 18) and fixed intrinsics that do not fit the image.  The node keeps publishing depth with
ESTIMATED intrinsics, and counts the refused intrinsics in /diagnostics (``bad_input``, ``last_error`` naming the
rule).  The rules themselves: test/io/test_plausibility.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from moge2_ros.data.example import render_example_scene
from moge2_ros.ros.conversions import image_to_float
from ros_helpers import MESSAGE_TIMEOUT_S, RosClient, RunningNode, start_node

pytestmark = pytest.mark.ros

WIDTH, HEIGHT = 96, 72
TOKENS = 108
BAD_K = np.array([[1e30, 0.0, 47.5], [0.0, 1e30, 35.5], [0.0, 0.0, 1.0]])
OUTPUTS = ("depth/image", "depth/camera_info", "geometry")


@pytest.fixture(scope="module")
def cam(client: RosClient, env: dict[str, str], workdir: Path, tiny_model_path: Path) -> Iterator[RunningNode]:
    node = start_node(client, env, workdir, tiny_model_path, "/plausible", outputs=OUTPUTS, num_tokens=TOKENS,
                      diagnostics_period=0.25, intrinsics_source="camera_info")
    try:
        yield node
        assert node.process.alive(), f"moge2_node died during the tests:\n{node.process.output()}"
    finally:
        node.stop()


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return render_example_scene(WIDTH, HEIGHT, 60.0).rgb


def check_estimated(out: dict[str, Any], refused: np.ndarray) -> None:
    """Depth published with estimated intrinsics (not ``refused``), finite and metric-sized."""
    assert out["geometry"].intrinsics_estimated is True
    k = np.array(out["depth/camera_info"].k, dtype=np.float64).reshape(3, 3)
    assert np.isfinite(k).all() and 0 < k[0, 0] < 1e4 and not np.allclose(k, refused), k
    depth = image_to_float(out["depth/image"])
    assert depth.shape == (HEIGHT, WIDTH)
    finite = depth[np.isfinite(depth)]
    assert finite.size > 0 and finite.max() < 1e3, "estimated K gives a metric depth, not ~1e27 m"


def frames_until_counted(cam: RunningNode, rgb: np.ndarray, before: int, k: np.ndarray | None,
                         refused: np.ndarray) -> dict[str, Any]:
    """Send frames (with a CameraInfo of ``k`` when given) until /diagnostics counts more bad input than
    ``before``; every frame's outputs must use estimated intrinsics.  The stable counters are returned."""
    deadline = time.monotonic() + 3 * MESSAGE_TIMEOUT_S
    while True:
        _, out = cam.frame(rgb, k, topics=OUTPUTS)
        check_estimated(out, refused)
        counters = cam.stable_counters(stable_s=0.5)
        if counters["bad_input"] > before:
            return counters
        # the image can overtake its CameraInfo (another topic): then that frame used no CameraInfo at all
        assert time.monotonic() < deadline, f"refused intrinsics never counted: {counters}"


def test_camera_info_with_absurd_focal_length_is_refused_and_k_estimated(cam: RunningNode, rgb: np.ndarray) -> None:
    cam.client.set_ok(cam.fqn, intrinsics_source="camera_info")
    before = cam.stable_counters(stable_s=0.5)
    after = frames_until_counted(cam, rgb, before["bad_input"], BAD_K, BAD_K)
    assert after["errors"] == before["errors"] and after["processed"] > before["processed"], (before, after)
    assert after["last_error"] == ("camera_info.k: horizontal field of view 5.50039e-27 deg (fx = 1e+30 px over "
                                   "96 px) is outside [1, 175] deg"), after["last_error"]
    # frames without a new CameraInfo: the refused one is not used again, nor counted again
    for _ in range(2):
        _, out = cam.frame(rgb, topics=OUTPUTS)
        check_estimated(out, BAD_K)
    again = cam.stable_counters(stable_s=0.5)
    assert again["bad_input"] == after["bad_input"] and again["errors"] == before["errors"], (after, again)


def test_fixed_intrinsics_are_checked(cam: RunningNode, rgb: np.ndarray) -> None:
    client = cam.client
    try:
        # values no image allows are refused when the parameters are set (the node keeps its configuration)
        client.set_ok(cam.fqn, intrinsics_source="camera_info", fixed_intrinsics=[1e30, 1e30, 48.0, 36.0])
        (result,) = client.set_parameters(cam.fqn, intrinsics_source="fixed")
        assert not result.successful and "fixed_intrinsics: fx = 1e+30 px is above 3.75e+06 px" in result.reason, \
            result.reason
        # values a larger image allows (a 0.6 deg view of this 96 px frame): K is estimated for each frame
        far = np.array([[9000.0, 0.0, 48.0], [0.0, 9000.0, 36.0], [0.0, 0.0, 1.0]])
        client.set_ok(cam.fqn, fixed_intrinsics=[9000.0, 9000.0, 48.0, 36.0])
        client.set_ok(cam.fqn, intrinsics_source="fixed")
        before = cam.stable_counters(stable_s=0.5)
        after = frames_until_counted(cam, rgb, before["bad_input"], None, far)
        assert after["last_error"].startswith("fixed_intrinsics: horizontal field of view 0.611"), after["last_error"]
        assert after["errors"] == before["errors"]
    finally:
        client.set_ok(cam.fqn, intrinsics_source="camera_info")
