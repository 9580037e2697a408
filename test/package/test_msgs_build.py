"""The ROS 2 message package ``moge2_ros_msgs`` (``ros/moge2_ros_msgs``) as built by the set-up.

``scripts/setup.sh`` builds the package into ``.venv`` (``scripts/build_msgs.sh``); with a system ROS it is built
by colcon. Either way these tests import it directly: a missing or stale build FAILS them (it is never skipped),
with a hint how to build it.

Tests that start ROS processes isolate them: ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``, a per-run
``ROS_DOMAIN_ID``, ``ROS_LOG_DIR`` and ``TMPDIR`` in a temporary directory; they poll for discovery with
deadlines and always stop the processes they start.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import math
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _paths import REPO

pytestmark = pytest.mark.ros

PKG_DIR = REPO / "ros" / "moge2_ros_msgs"
MSG_FILE = PKG_DIR / "msg" / "MonocularGeometry.msg"
BUILD_HINT = "(re)build it with `bash scripts/setup.sh` (pip set-up) or `colcon build` (system ROS)"

# Field name -> type, in message order, as rosidl reports it (``get_fields_and_field_types``).
FIELDS = {
    "header": "std_msgs/Header",
    "camera_info": "sensor_msgs/CameraInfo",
    "intrinsics_estimated": "boolean",
    "metric_scale": "float",
    "fov_x_deg": "float",
    "fov_y_deg": "float",
    "num_tokens": "uint32",
    "inference_ms": "float",
    "model_id": "string",
    "valid_fraction": "float",
    "scale_source": "string",
    "network_scale": "float",
    "scale_log_std": "float",
    "anchor_count": "uint32",
    "anchor_inliers": "uint32",
    "anchor_residual_m": "float",
}
SCALAR_DEFAULTS = {
    "intrinsics_estimated": False,
    "metric_scale": 0.0,
    "fov_x_deg": 0.0,
    "fov_y_deg": 0.0,
    "num_tokens": 0,
    "inference_ms": 0.0,
    "model_id": "",
    "valid_fraction": 0.0,
    "scale_source": "",
    "network_scale": 0.0,
    "scale_log_std": 0.0,
    "anchor_count": 0,
    "anchor_inliers": 0,
    "anchor_residual_m": 0.0,
}

# Seconds: discovery takes 0.1-3 s between processes (../shared/notes/ROS_PIP.md); process start-up ~1 s each.
DISCOVERY_TIMEOUT_S = 20.0
PROCESS_TIMEOUT_S = 40.0


def load_geometry_type() -> Any:
    """The ``MonocularGeometry`` class; fails the calling test (never skips it) when the package is not built."""
    try:
        module = importlib.import_module("moge2_ros_msgs.msg")
    except ImportError as exc:
        pytest.fail(f"cannot import moge2_ros_msgs.msg ({exc}): {BUILD_HINT}")
    return module.MonocularGeometry


def sample_message(geometry_type: Any) -> Any:
    """A message with every field set to a non-default value exactly representable in its wire type."""
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import CameraInfo
    from std_msgs.msg import Header

    header = Header(stamp=Time(sec=1_700_000_123, nanosec=456_789_000), frame_id="camera_color_optical_frame")
    fx, fy, cx, cy = 512.5, 510.25, 319.5, 239.5
    info = CameraInfo(
        header=header,
        height=480,
        width=640,
        distortion_model="plumb_bob",
        d=[0.0] * 5,
        k=[fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0],
        r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        p=[fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0],
    )
    return geometry_type(
        header=header,
        camera_info=info,
        intrinsics_estimated=True,
        metric_scale=1.75,
        fov_x_deg=64.0,
        fov_y_deg=50.125,
        num_tokens=3600,
        inference_ms=87.5,
        model_id="Ruicheng/moge-2-vitl-normal",
        valid_fraction=0.9375,
    )


# ------------------------------------------------------------------------------------------------- definition
def test_fields_and_types() -> None:
    geometry_type = load_geometry_type()
    assert geometry_type.get_fields_and_field_types() == FIELDS
    assert list(geometry_type.get_fields_and_field_types()) == list(FIELDS), "field order changed"


def test_defaults() -> None:
    geometry_type = load_geometry_type()
    msg = geometry_type()
    for name, value in SCALAR_DEFAULTS.items():
        assert getattr(msg, name) == value, name
        assert type(getattr(msg, name)) is type(value), name
    assert msg.header.frame_id == "" and msg.header.stamp.sec == 0 and msg.header.stamp.nanosec == 0
    assert msg.camera_info.width == 0 and msg.camera_info.height == 0
    assert list(msg.camera_info.k) == [0.0] * 9


def test_every_field_is_documented() -> None:
    """Each field (or group of fields on consecutive lines) has a comment block right above it."""
    documented, fields = False, []
    for number, raw in enumerate(MSG_FILE.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line:
            documented = False
        elif line.startswith("#"):
            documented = True
        else:
            name = line.split("#", 1)[0].split()[1]
            assert documented, f"{MSG_FILE.name}:{number}: field '{name}' has no comment above it"
            fields.append(name)
    assert fields == list(FIELDS)
    assert MSG_FILE.read_text(encoding="utf-8").isascii()


def test_installed_definition_matches_source() -> None:
    """The built package is not stale: its installed .msg equals ros/moge2_ros_msgs/msg/MonocularGeometry.msg."""
    load_geometry_type()
    package = importlib.import_module("moge2_ros_msgs")
    # <prefix>/lib/python3.X/site-packages/moge2_ros_msgs/__init__.py -> <prefix>/share/moge2_ros_msgs/msg
    prefix = Path(package.__file__).resolve().parents[4]
    installed = prefix / "share" / "moge2_ros_msgs" / "msg" / "MonocularGeometry.msg"
    assert installed.is_file(), f"{installed} not found: {BUILD_HINT}"
    assert installed.read_text(encoding="utf-8") == MSG_FILE.read_text(encoding="utf-8"), (
        f"the installed moge2_ros_msgs is stale (differs from {MSG_FILE.relative_to(REPO)}): {BUILD_HINT}"
    )


# ------------------------------------------------------------------------------------------------ serialization
def test_serialization_round_trip() -> None:
    from rclpy.serialization import deserialize_message, serialize_message

    geometry_type = load_geometry_type()
    msg = sample_message(geometry_type)
    data = serialize_message(msg)
    assert isinstance(data, bytes) and len(data) > 0
    back = deserialize_message(data, geometry_type)
    assert back == msg
    assert back.camera_info.k.tolist() == msg.camera_info.k.tolist()
    assert back.header.frame_id == "camera_color_optical_frame"
    assert back.metric_scale == 1.75 and back.num_tokens == 3600 and back.intrinsics_estimated is True

    empty = deserialize_message(serialize_message(geometry_type()), geometry_type)
    assert empty == geometry_type()


def test_float32_fields_round_to_single_precision() -> None:
    """The float fields are float32 on the wire: values come back rounded, NaN survives (documented)."""
    from rclpy.serialization import deserialize_message, serialize_message

    geometry_type = load_geometry_type()
    msg = geometry_type(metric_scale=0.1, inference_ms=float("nan"))
    back = deserialize_message(serialize_message(msg), geometry_type)
    assert back.metric_scale == pytest.approx(0.1, rel=1e-7) and back.metric_scale != 0.1
    assert math.isnan(back.inference_ms)


# ----------------------------------------------------------------------------------------- across processes
PUBLISHER = r"""
import sys, time
import rclpy
from rclpy.serialization import deserialize_message
from moge2_ros_msgs.msg import MonocularGeometry

timeout = float(sys.argv[1])
msg = deserialize_message(bytes.fromhex(sys.argv[2]), MonocularGeometry)
rclpy.init()
node = rclpy.create_node("moge2_msgs_test_publisher")
publisher = node.create_publisher(MonocularGeometry, "geometry", 10)
deadline = time.monotonic() + timeout
try:
    while publisher.get_subscription_count() == 0:
        if time.monotonic() > deadline:
            sys.exit("publisher: no subscriber discovered before the deadline")
        rclpy.spin_once(node, timeout_sec=0.05)
    print("publisher: subscriber matched", flush=True)
    # Publish until stopped: the subscriber may match this writer slightly after this side matched it.
    while time.monotonic() < deadline:
        publisher.publish(msg)
        rclpy.spin_once(node, timeout_sec=0.1)
finally:
    node.destroy_node()
    rclpy.try_shutdown()
"""

SUBSCRIBER = r"""
import json, sys, time
import rclpy
from rclpy.serialization import serialize_message
from moge2_ros_msgs.msg import MonocularGeometry

timeout = float(sys.argv[1])
rclpy.init()
node = rclpy.create_node("moge2_msgs_test_subscriber")
received = []
node.create_subscription(MonocularGeometry, "geometry", received.append, 10)
deadline = time.monotonic() + timeout
try:
    while not received:
        if time.monotonic() > deadline:
            sys.exit("subscriber: no message before the deadline")
        rclpy.spin_once(node, timeout_sec=0.1)
    types = dict(node.get_topic_names_and_types()).get("/geometry", [])
    print(json.dumps({"types": types, "data": serialize_message(received[0]).hex()}), flush=True)
finally:
    node.destroy_node()
    rclpy.try_shutdown()
"""


@pytest.fixture
def ros_env(tmp_path: Path) -> dict[str, str]:
    """Environment for ROS child processes: loopback discovery only, own domain, logs and temp files in tmp."""
    env = dict(os.environ)
    for name in ("ROS_LOCALHOST_ONLY", "ROS_STATIC_PEERS", "RMW_IMPLEMENTATION", "FASTRTPS_DEFAULT_PROFILES_FILE"):
        env.pop(name, None)
    (tmp_path / "ros_log").mkdir()
    (tmp_path / "tmp").mkdir()
    env.update(
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_DOMAIN_ID=str(random.SystemRandom().randint(1, 101)),  # 0-101 are valid with the default ports
        ROS_LOG_DIR=str(tmp_path / "ros_log"),
        TMPDIR=str(tmp_path / "tmp"),
        PYTHONUNBUFFERED="1",
    )
    return env


@contextlib.contextmanager
def started(*commands: list[str], env: dict[str, str]) -> Iterator[list[subprocess.Popen]]:
    """Start processes; always terminate (then kill) those still running on exit."""
    processes: list[subprocess.Popen] = []
    try:
        for argv in commands:
            processes.append(subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                              stderr=subprocess.PIPE, text=True))
        yield processes
    finally:
        for proc in processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in processes:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


def test_publish_subscribe_across_processes(ros_env: dict[str, str]) -> None:
    from rclpy.serialization import deserialize_message, serialize_message

    geometry_type = load_geometry_type()
    msg = sample_message(geometry_type)
    timeout = str(DISCOVERY_TIMEOUT_S)
    with started([sys.executable, "-c", SUBSCRIBER, timeout],
                 [sys.executable, "-c", PUBLISHER, timeout, serialize_message(msg).hex()],
                 env=ros_env) as (subscriber, publisher):
        try:
            out, err = subscriber.communicate(timeout=PROCESS_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail("the subscriber process did not finish in time")
        if publisher.poll() is not None:  # it publishes until stopped: it must still be running
            pytest.fail(f"publisher exited early (exit {publisher.returncode}):\n{publisher.stderr.read()}")
    assert subscriber.returncode == 0, f"subscriber failed (exit {subscriber.returncode}):\n{err}"
    result = json.loads(out.strip().splitlines()[-1])
    assert result["types"] == ["moge2_ros_msgs/msg/MonocularGeometry"]
    assert deserialize_message(bytes.fromhex(result["data"]), geometry_type) == msg


# -------------------------------------------------------------------------------------------------- colcon
def _colcon() -> str | None:
    """colcon of the set-up's tool venv (.venv-colcon), of this environment, or on PATH (a system ROS); else None."""
    tools = REPO / ".venv-colcon" / "bin" / "colcon"
    if tools.is_file():
        return str(tools)
    beside = Path(sys.executable).parent / "colcon"
    if importlib.util.find_spec("colcon_core") is not None and beside.is_file():
        return str(beside)
    return shutil.which("colcon")


def _require_colcon() -> str:
    colcon = _colcon()
    if colcon is None:
        message = "colcon is not installed here (bash scripts/setup.sh installs it into .venv-colcon)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return colcon


def _workspace(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    workspace = tmp_path / "ws"
    (workspace / "src").mkdir(parents=True)
    (workspace / "src" / "moge2_ros_repo").symlink_to(REPO, target_is_directory=True)
    env = dict(os.environ, COLCON_HOME=str(tmp_path / "colcon_home"), COLCON_LOG_PATH=str(tmp_path / "log"))
    return workspace, env


@pytest.mark.slow
def test_colcon_discovers_both_packages(tmp_path: Path) -> None:
    """A workspace whose src/ holds the checkout: `colcon list` (no path flags) finds both packages, msgs first."""
    colcon = _require_colcon()
    workspace, env = _workspace(tmp_path)
    result = subprocess.run([colcon, "list", "--topological-order"], cwd=workspace, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines() if line.strip()]
    assert rows == [
        ["moge2_ros_msgs", "src/moge2_ros_repo/ros/moge2_ros_msgs", "(ros.ament_cmake)"],
        ["moge2_ros", "src/moge2_ros_repo/ros/moge2_ros", "(ros.ament_python)"],
    ], result.stdout


@pytest.mark.slow
def test_colcon_builds_both_packages(tmp_path: Path) -> None:
    """`colcon build` of a Jazzy workspace holding the checkout builds both packages; the workspace's install tree
    has the message module (importable from there), the executables, the launch/config/rviz files and the ament
    index entries. Here the ROS 2 prefix is the pip set-up's venv (a system ROS install needs no variables)."""
    colcon = _require_colcon()
    workspace, env = _workspace(tmp_path)
    if not os.environ.get("ROS_DISTRO"):
        venv = str(Path(sys.executable).parent.parent)
        env.update(CMAKE_PREFIX_PATH=venv, AMENT_PREFIX_PATH=venv)
    args = [colcon, "build", "--event-handlers", "console_direct-", "--cmake-args",
            f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"]
    result = subprocess.run(args, cwd=workspace, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    install = workspace / "install"
    for relative in [
        "moge2_ros/lib/moge2_ros/moge2_node",
        "moge2_ros/lib/moge2_ros/demo_camera",
        "moge2_ros/share/moge2_ros/package.xml",
        "moge2_ros/share/moge2_ros/launch/moge2.launch.py",
        "moge2_ros/share/moge2_ros/launch/demo.launch.py",
        "moge2_ros/share/moge2_ros/config/moge2.yaml",
        "moge2_ros/share/moge2_ros/rviz/moge2.rviz",
        "moge2_ros/share/ament_index/resource_index/packages/moge2_ros",
        "moge2_ros_msgs/share/ament_index/resource_index/packages/moge2_ros_msgs",
        "moge2_ros_msgs/share/moge2_ros_msgs/msg/MonocularGeometry.msg",
    ]:
        assert (install / relative).exists(), f"missing in the colcon install tree: {relative}"
    site = next((install / "moge2_ros_msgs").glob("lib/python3*/site-packages"))
    probe = ("import moge2_ros_msgs.msg as m; g = m.MonocularGeometry(); g.num_tokens = 7; "
             "print(m.__file__); print(g.num_tokens)")
    run_env = dict(env, PYTHONPATH=f"{site}{os.pathsep}{env.get('PYTHONPATH', '')}",
                   LD_LIBRARY_PATH=f"{install / 'moge2_ros_msgs' / 'lib'}{os.pathsep}{env.get('LD_LIBRARY_PATH', '')}")
    out = subprocess.run([sys.executable, "-c", probe], env=run_env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    module_file, tokens = out.stdout.split()
    assert Path(module_file).resolve().is_relative_to(install.resolve()), module_file
    assert tokens == "7"
