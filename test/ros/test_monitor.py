"""``moge2-ros monitor`` (:mod:`moge2_ros.ros.monitor`): against a running demo camera + moge2_node it prints the
rates of the outputs and writes a valid snapshot; with nothing running it says what it waits for and exits 1.

The monitor runs as the user runs it (``python -m moge2_ros monitor ...`` in a subprocess, in the test module's
isolated ROS environment). No speed is asserted: only that lines and files appear.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from sensor_msgs.msg import CameraInfo

from moge2_ros.io.ply import read_ply
from moge2_ros.ros.monitor import message_to_dict
from ros_helpers import STARTUP_TIMEOUT_S, NodeProcess, node_args

pytestmark = pytest.mark.ros

WIDTH, HEIGHT = 160, 120


def test_message_to_dict_is_plain_json() -> None:
    info = CameraInfo(width=4, height=3, distortion_model="plumb_bob", d=[0.0] * 5)
    info.header.frame_id = "f"
    info.k = [2.0, 0.0, 1.5, 0.0, 2.0, 1.0, 0.0, 0.0, 1.0]
    data = message_to_dict(info)
    assert data["header"] == {"stamp": {"sec": 0, "nanosec": 0}, "frame_id": "f"}
    assert data["k"][0] == 2.0 and len(data["k"]) == 9 and data["d"] == [0.0] * 5
    assert data["roi"]["do_rectify"] is False
    json.dumps(data, allow_nan=False)


@pytest.fixture(scope="module")
def graph(env: dict[str, str], workdir: Path, tiny_model_path: Path) -> Iterator[tuple[NodeProcess, NodeProcess]]:
    """demo_camera + moge2_node in /mon, small frames, the tiny model (as README's "See the outputs" commands)."""
    remap = ["-r", "__ns:=/mon", "-r", "image:=image_raw"]
    camera = NodeProcess([*remap, "-p", f"width:={WIDTH}", "-p", f"height:={HEIGHT}", "-p", "rate_hz:=5.0"], env,
                         workdir / "demo_camera.log", module="moge2_ros.ros.demo_camera")
    node = NodeProcess(node_args(tiny_model_path, "/mon", "-r", "image:=image_raw", num_tokens=100,
                                 input_qos="reliable", diagnostics_period=0.5),
                       env, workdir / "moge2_node.log")
    try:
        yield camera, node
    finally:
        node.stop()
        camera.stop()


def _monitor(env: dict[str, str], *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "moge2_ros", "monitor", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_monitor_prints_rates_and_writes_a_snapshot(graph: tuple[NodeProcess, NodeProcess], env: dict[str, str],
                                                    tmp_path: Path) -> None:
    snap = tmp_path / "snap"
    run = _monitor(env, "--namespace", "/mon", "--count", "4", "--period", "0.5", "--input", "image_raw",
                   "--timeout", str(STARTUP_TIMEOUT_S), "--snapshot", str(snap), timeout=STARTUP_TIMEOUT_S + 60)
    camera, node = graph
    out = run.stdout
    assert run.returncode == 0, f"{out}\n{run.stderr}\nnode log:\n{node.output()[-3000:]}"
    assert "data flowing on /mon/depth/image" in out, out
    rates = [line for line in out.splitlines() if "rates (Hz" in line]
    assert rates, out
    for topic in ("image_raw", "depth/image", "points", "geometry"):
        assert re.search(rf"\b{re.escape(topic)} \d+\.\d", rates[-1]), rates[-1]
    assert re.search(r"depth \(160x120 32FC1\) [\d.]+-[\d.]+ m, median [\d.]+ m, [\d.]+ % valid", out), out
    assert re.search(r"summary over \d+ s \(\d+ depth/image messages\)", out), out

    with PILImage.open(snap / "depth.png") as png:
        assert png.size == (WIDTH, HEIGHT) and png.mode.startswith("I")
        mm = np.asarray(png)
    depth = np.load(snap / "depth.npy")
    assert depth.shape == (HEIGHT, WIDTH) and depth.dtype == np.float32
    valid = np.isfinite(depth)
    assert valid.any()
    np.testing.assert_allclose(mm[valid] / 1000.0, depth[valid], atol=1e-3)  # the same frame in both files

    header = (snap / "points.ply").read_bytes().split(b"end_header\n", 1)[0].decode("ascii")
    vertices = int(re.search(r"element vertex (\d+)", header).group(1))  # type: ignore[union-attr]
    assert 0 < vertices <= WIDTH * HEIGHT
    cloud = read_ply(snap / "points.ply")
    assert cloud.shape == (vertices,) and {"x", "y", "z"} <= set(cloud.dtype.names or ())
    assert np.isfinite(cloud["z"]).all() and (cloud["z"] > 0).all()

    geometry = json.loads((snap / "geometry.json").read_text())
    assert {"header", "camera_info", "intrinsics_estimated", "metric_scale", "fov_x_deg", "fov_y_deg", "num_tokens",
            "inference_ms", "model_id", "valid_fraction"} <= set(geometry)
    assert geometry["num_tokens"] == 100 and 0 < geometry["valid_fraction"] <= 1
    assert (snap / "camera_info.json").exists(), out
    info = json.loads((snap / "camera_info.json").read_text())
    assert (info["width"], info["height"]) == (WIDTH, HEIGHT) and info["k"][0] > 0
    assert info["header"] == geometry["header"], "the snapshot files come from one frame"


def test_monitor_without_data_waits_then_fails_in_one_line(env: dict[str, str]) -> None:
    run = _monitor(env, "--namespace", "/nobody_here", "--timeout", "1.5", "--period", "0.5", timeout=60)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "waiting for /nobody_here/depth/image (no publisher yet" in run.stdout, run.stdout
    errors = run.stderr.strip().splitlines()
    assert len(errors) == 1, run.stderr
    assert errors[0].startswith("moge2-ros: error: nothing arrived within 1.5 s; waiting for /nobody_here/depth/image")


def test_monitor_picks_the_status_of_the_watched_camera() -> None:
    """A single-camera node's status in the watched namespace; with several cameras, the node's own status of the
    camera whose topics are under the watched namespace (not the node's summary, not another camera's)."""
    from types import SimpleNamespace

    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    from moge2_ros.ros.monitor import Monitor

    def status(name: str, processed: int) -> DiagnosticStatus:
        return DiagnosticStatus(name=name, message="running", values=[KeyValue(key="processed", value=str(processed))])

    array = DiagnosticArray(status=[status("/robot/moge2_node: MoGe-2 inference", 30),
                                    status("/robot/moge2_node: camera left", 10),
                                    status("/robot/moge2_node: camera right", 20),
                                    status("/other/driver: camera left", 99)])
    for namespace, expected in (("/robot/left", "10"), ("/robot/right", "20"), ("/robot", "30"), ("/nowhere", None)):
        watcher = SimpleNamespace(namespace=namespace, node_status=None)
        Monitor._on_diagnostics(watcher, array)  # type: ignore[arg-type]
        got = watcher.node_status[2]["processed"] if watcher.node_status else None
        assert got == expected, namespace


def test_stream_keeps_the_first_receipt_and_stamp_and_rates_young_streams_from_them() -> None:
    """The demo's "data flowing" line uses the first message's header stamp (the camera image a depth image came
    from), which can be earlier than the monitor's own first receipt."""
    from moge2_ros.ros.monitor import Stream

    stream = Stream()
    assert stream.first is None and stream.first_stamp is None and stream.rate(10.0) == 0.0
    for k in range(5):
        stream.add(100.0 + 0.2 * k, 99.9 + 0.2 * k)
    assert (stream.first, stream.first_stamp) == (100.0, 99.9)
    assert stream.rate(100.8) == pytest.approx(5.0)  # 4 intervals over 0.8 s: a young stream
    assert np.allclose(stream.latencies(100.8), 0.1)
