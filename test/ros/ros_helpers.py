"""Helpers of the ``moge2_node`` process tests (``test/ros/test_node_*.py``); import them by name
(``from ros_helpers import RosClient, start_node``). The module-scoped fixtures built on them (``workdir``,
``env``, ``client``) are in ``test/ros/conftest.py``; the model file is the suite's ``tiny_model_path``.

The tests run the node as a separate process (``python -m moge2_ros.ros.node --ros-args ...``) and act as its
camera (publisher) and its consumer (subscriber) from the test process.  Isolation and synchronisation rules:

* every run gets its own environment: ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` (no multicast out of the
  machine's interfaces), a random ``ROS_DOMAIN_ID`` in 1..101 (distinct per test module in this process),
  ``ROS_LOG_DIR`` and ``TMPDIR`` in a temporary directory. The same variables are set in ``os.environ`` of the
  test process while its own rclpy context lives (:class:`RosClient`), and restored afterwards;
* nothing waits with a bare sleep: discovery, messages, parameter services and process exits are polled with
  deadlines (:meth:`RosClient.spin_until`);
* every started process is stopped (SIGINT, then SIGKILL after a timeout) by :meth:`NodeProcess.stop`, which
  the fixtures and tests call in their teardown.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from _paths import REPO

#: Seconds. Discovery takes 0.1-3 s between processes (../shared/notes/ROS_PIP.md); a node process needs a few
#: seconds to import torch and load the model on a 2-core machine, and its first inference is slower.
DISCOVERY_TIMEOUT_S = 30.0
STARTUP_TIMEOUT_S = 90.0
MESSAGE_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0

#: Environment variables of other ROS set-ups that would change discovery or the middleware: removed.
_FOREIGN_VARIABLES = ("ROS_LOCALHOST_ONLY", "ROS_STATIC_PEERS", "RMW_IMPLEMENTATION",
                      "FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE", "ROS_DISCOVERY_SERVER")
_ROS_VARIABLES = ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "ROS_LOG_DIR", "TMPDIR", *_FOREIGN_VARIABLES)

_used_domain_ids: set[int] = set()


def new_domain_id() -> int:
    """A random ROS_DOMAIN_ID in 1..101 (valid with the default ports) not yet used by this test process."""
    rng = random.SystemRandom()
    free = [d for d in range(1, 102) if d not in _used_domain_ids] or list(range(1, 102))
    domain = rng.choice(free)
    _used_domain_ids.add(domain)
    return domain


def ros_env(tmp_dir: Path, domain_id: int | None = None) -> dict[str, str]:
    """Environment of the ROS child processes (and of the test's own rclpy context): isolated in ``tmp_dir``."""
    tmp_dir = Path(tmp_dir)
    (tmp_dir / "ros_log").mkdir(parents=True, exist_ok=True)
    (tmp_dir / "tmp").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    for name in _FOREIGN_VARIABLES:
        env.pop(name, None)
    env.update(
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_DOMAIN_ID=str(new_domain_id() if domain_id is None else domain_id),
        ROS_LOG_DIR=str(tmp_dir / "ros_log"),
        TMPDIR=str(tmp_dir / "tmp"),
        PYTHONUNBUFFERED="1",
    )
    return env


@contextlib.contextmanager
def ros_environ(env: dict[str, str]) -> Iterator[None]:
    """Set the ROS variables of ``env`` in ``os.environ`` (the test's rclpy reads them); restore them after."""
    saved = {name: os.environ.get(name) for name in _ROS_VARIABLES}
    try:
        for name in _ROS_VARIABLES:
            if name in env:
                os.environ[name] = env[name]
            else:
                os.environ.pop(name, None)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# ------------------------------------------------------------------------------------------------ processes
class NodeProcess:
    """``moge2_node`` as a child process; its stdout and stderr go to a log file (no pipe can fill up)."""

    def __init__(self, ros_args: list[str], env: dict[str, str], log_path: Path,
                 module: str = "moge2_ros.ros.node") -> None:
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        self.argv = [sys.executable, "-m", module, "--ros-args", *ros_args]
        self.proc = subprocess.Popen(self.argv, env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for_output(self, text: str, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Poll the log until it contains ``text``; fail early (with the log) if the process exits."""
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if not self.alive():
                raise AssertionError(f"moge2_node exited with status {self.proc.returncode} before printing "
                                     f"{text!r}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"moge2_node did not print {text!r} within {timeout:.0f} s:\n{self.output()}")
            time.sleep(0.05)  # polling interval of a deadline loop, not a synchronisation

    def wait_exit(self, timeout: float) -> int:
        """Exit status; fails if the process is still running after ``timeout`` seconds."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"moge2_node still running after {timeout:.0f} s:\n{self.output()}") from None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGINT (rclpy shuts down cleanly), then SIGKILL after ``timeout``; returns the exit status."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=timeout)
            return self.proc.returncode
        finally:
            self._log.close()


def node_args(model: Path | str, namespace: str = "/cam", *extra: str, **params: Any) -> list[str]:
    """``--ros-args`` of moge2_node: namespace, model, ``params`` as ``-p name:=value`` and ``extra`` verbatim."""
    args = ["-r", f"__ns:={namespace}", "-p", f"model:={model}"]
    for name, value in params.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        args += ["-p", f"{name}:={value}"]
    return [*args, *extra]


# ------------------------------------------------------------------------------------------------ test client
@dataclass
class Inbox:
    """Messages received on one topic: ``(receive time in ns of the client's clock, message)``."""

    topic: str
    items: list[tuple[int, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def with_stamp(self, stamp: Any) -> Any:
        """The newest message whose header stamp equals ``stamp`` (a ``builtin_interfaces/Time``), or None."""
        for _, msg in reversed(self.items):
            if msg.header.stamp.sec == stamp.sec and msg.header.stamp.nanosec == stamp.nanosec:
                return msg
        return None

    def clear(self) -> None:
        self.items.clear()


class RosClient:
    """The test's side of the graph: its own rclpy Context, node and single-threaded executor.

    ``os.environ`` carries the ROS variables of ``env`` from before ``rclpy.init`` until :meth:`close`.
    """

    def __init__(self, env: dict[str, str], name: str = "moge2_test_client") -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        self._environ = ros_environ(env)
        self._environ.__enter__()
        try:
            self.context = Context()
            rclpy.init(context=self.context, domain_id=int(env["ROS_DOMAIN_ID"]),
                       signal_handler_options=SignalHandlerOptions.NO)  # pytest keeps its own Ctrl-C handling
            self.node = rclpy.create_node(name, context=self.context)
            self.executor = SingleThreadedExecutor(context=self.context)
            self.executor.add_node(self.node)
        except BaseException:
            self._environ.__exit__(None, None, None)
            raise
        self.inboxes: dict[str, Inbox] = {}

    # -- graph
    def now(self) -> Any:
        """The client's ROS clock (system time) as a ``builtin_interfaces/Time``."""
        return self.node.get_clock().now().to_msg()

    def now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def publisher(self, msg_type: Any, topic: str, depth: int = 10, reliable: bool = True) -> Any:
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        reliability = ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
        qos = QoSProfile(depth=depth, reliability=reliability)
        return self.node.create_publisher(msg_type, topic, qos)

    def subscribe(self, msg_type: Any, topic: str, depth: int = 10) -> Inbox:
        """Subscribe (reliable, keep last ``depth``) and collect into the returned :class:`Inbox`."""
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        inbox = Inbox(topic)
        clock = self.node.get_clock()

        def callback(msg: Any) -> None:
            inbox.items.append((clock.now().nanoseconds, msg))

        qos = QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(msg_type, topic, callback, qos)
        self.inboxes[topic] = inbox
        return inbox

    # -- waiting
    def spin_until(self, predicate: Callable[[], Any], timeout: float = MESSAGE_TIMEOUT_S, what: str = "condition",
                   process: NodeProcess | None = None, step: float = 0.05) -> Any:
        """Spin until ``predicate()`` is truthy (returned); AssertionError naming ``what`` after ``timeout`` s.

        With ``process``, fail at once (showing its log) if that process has exited.
        """
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if process is not None and not process.alive():
                raise AssertionError(f"moge2_node exited (status {process.proc.returncode}) while waiting for "
                                     f"{what}:\n{process.output()[-4000:]}")
            if time.monotonic() > deadline:
                tail = f"\nnode log:\n{process.output()[-4000:]}" if process is not None else ""
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{tail}")
            self.executor.spin_once(timeout_sec=step)

    def wait_for_subscribers(self, publisher: Any, timeout: float = DISCOVERY_TIMEOUT_S,
                             process: NodeProcess | None = None) -> None:
        self.spin_until(lambda: publisher.get_subscription_count() > 0, timeout,
                        f"a subscriber of {publisher.topic_name}", process)

    def wait_for_publishers(self, topics: list[str], timeout: float = DISCOVERY_TIMEOUT_S,
                            process: NodeProcess | None = None) -> None:
        """Until every topic in ``topics`` has a publisher on the graph (the node's outputs are discovered)."""
        self.spin_until(lambda: all(self.node.count_publishers(t) > 0 for t in topics), timeout,
                        f"publishers of {topics}", process)

    def request(self, publish: Callable[[], None], stamp: Any, inboxes: list[Inbox],
                timeout: float = MESSAGE_TIMEOUT_S, process: NodeProcess | None = None,
                retry_s: float = 2.0) -> dict[str, Any]:
        """Call ``publish()`` (which sends a frame stamped ``stamp``) until every inbox holds a message with that
        stamp; returns ``{topic: message}``.

        The frame is sent again every ``retry_s`` seconds while outputs are missing: a best-effort input can be
        lost, and the node only serves outputs whose subscribers it has discovered when the frame is processed.
        """
        def done() -> bool:
            return all(inbox.with_stamp(stamp) is not None for inbox in inboxes)

        deadline = time.monotonic() + timeout
        while True:
            publish()
            try:
                self.spin_until(done, min(retry_s, max(0.0, deadline - time.monotonic())), "outputs", process)
                return {inbox.topic: inbox.with_stamp(stamp) for inbox in inboxes}
            except AssertionError:
                if process is not None and not process.alive():
                    raise
                if time.monotonic() > deadline:
                    missing = [i.topic for i in inboxes if i.with_stamp(stamp) is None]
                    tail = f"\nnode log:\n{process.output()[-4000:]}" if process is not None else ""
                    raise AssertionError(f"no outputs on {missing} for the frame stamped {stamp} within "
                                         f"{timeout:.0f} s{tail}") from None

    # -- parameters
    def set_parameters(self, node_fqn: str, timeout: float = MESSAGE_TIMEOUT_S, **values: Any) -> list[Any]:
        """Call ``<node_fqn>/set_parameters`` (rcl_interfaces/SetParameters); returns the SetParametersResults."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        client = self.node.create_client(SetParameters, f"{node_fqn}/set_parameters")
        try:
            self.spin_until(client.service_is_ready, timeout, f"service {node_fqn}/set_parameters")
            parameters = [Parameter(name, value=value).to_parameter_msg() for name, value in values.items()]
            request = SetParameters.Request(parameters=parameters)
            future = client.call_async(request)
            self.spin_until(future.done, timeout, f"the reply of {node_fqn}/set_parameters")
            return list(future.result().results)
        finally:
            self.node.destroy_client(client)

    def set_ok(self, node_fqn: str, **values: Any) -> None:
        """Set parameters that must be accepted."""
        results = self.set_parameters(node_fqn, **values)
        bad = [(name, r.reason) for name, r in zip(values, results) if not r.successful]
        assert not bad, f"parameters rejected: {bad}"

    def close(self) -> None:
        import rclpy

        try:
            self.executor.shutdown(timeout_sec=1.0)
            self.node.destroy_node()
        finally:
            rclpy.try_shutdown(context=self.context)
            self._environ.__exit__(None, None, None)


# ------------------------------------------------------------------------------------------------ a running node
#: Output topics of moge2_node (relative names).
OUTPUT_TOPICS = ("depth/image", "depth/camera_info", "points", "normals", "mask", "depth/colorized", "geometry")


def output_type(topic: str) -> Any:
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    if topic == "geometry":
        from moge2_ros_msgs.msg import MonocularGeometry

        return MonocularGeometry
    return {"depth/camera_info": CameraInfo, "points": PointCloud2}.get(topic, Image)


@dataclass
class RunningNode:
    """A moge2_node process and the test's publishers / subscriptions of its topics."""

    process: NodeProcess
    client: RosClient
    namespace: str
    image_pub: Any
    info_pub: Any
    outputs: dict[str, Inbox]  # relative output topic -> inbox
    diagnostics: Inbox
    frame_id: str = "camera_optical_frame"

    @property
    def fqn(self) -> str:
        """Fully qualified node name, e.g. ``/cam/moge2_node``."""
        return f"{self.namespace.rstrip('/')}/moge2_node"

    @property
    def status_prefix(self) -> str:
        """Start of the node's DiagnosticStatus name."""
        return f"{self.fqn}: "

    def frame(self, rgb: np.ndarray, k: np.ndarray | None = None, topics: tuple[str, ...] | None = None,
              info_msg: Any = None) -> tuple[Any, dict[str, Any]]:
        """Publish ``rgb`` (after a CameraInfo with ``k``, or ``info_msg``); its outputs by relative topic."""
        stamp = self.client.now()
        image = rgb_image(stamp, rgb, self.frame_id)
        height, width = rgb.shape[:2]
        info = info_msg
        if info is None and k is not None:
            info = camera_info(stamp, k, width, height, self.frame_id)

        def publish() -> None:
            if info is not None:
                self.info_pub.publish(info)
            self.image_pub.publish(image)

        topics = topics or tuple(self.outputs)
        got = self.client.request(publish, stamp, [self.outputs[t] for t in topics], process=self.process)
        prefix = f"{self.namespace.rstrip('/')}/"
        return stamp, {topic[len(prefix):]: msg for topic, msg in got.items()}

    def stable_counters(self, stable_s: float = 1.0) -> dict[str, Any]:
        return wait_for_stable_counters(self.client, self.diagnostics, self.status_prefix, self.process, stable_s)

    def stop(self) -> int | None:
        return self.process.stop()


def start_node(client: RosClient, env: dict[str, str], log_dir: Path, model: Path | str, namespace: str,
               outputs: tuple[str, ...] = OUTPUT_TOPICS, input_topic: str = "image", input_type: Any = None,
               extra: tuple[str, ...] = (), frame_id: str = "camera_optical_frame", **params: Any) -> RunningNode:
    """Start moge2_node in ``namespace`` (``params`` as ``-p``, ``extra`` verbatim ros-args); subscribe to
    ``outputs`` and /diagnostics; wait until the node is ready and the inputs and outputs are matched."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CameraInfo, Image

    log = Path(log_dir) / f"moge2_node{namespace.replace('/', '_')}.log"
    process = NodeProcess(node_args(model, namespace, *extra, **params), env, log)
    ns = namespace.rstrip("/")
    try:
        process.wait_for_output("ready:")
        inboxes = {topic: client.subscribe(output_type(topic), f"{ns}/{topic}") for topic in outputs}
        diagnostics = client.inboxes.get("/diagnostics") or client.subscribe(DiagnosticArray, "/diagnostics", 100)
        image_pub = client.publisher(input_type or Image, f"{ns}/{input_topic}")
        info_pub = client.publisher(CameraInfo, f"{ns}/camera_info")
        client.wait_for_subscribers(image_pub, process=process)
        client.wait_for_subscribers(info_pub, process=process)
        client.wait_for_publishers([f"{ns}/{t}" for t in outputs], process=process)
    except BaseException:
        process.stop()
        raise
    return RunningNode(process, client, namespace, image_pub, info_pub, inboxes, diagnostics, frame_id)


# ------------------------------------------------------------------------------------------------ messages
def header(stamp: Any, frame_id: str = "camera_optical_frame") -> Any:
    from std_msgs.msg import Header

    return Header(stamp=stamp, frame_id=frame_id)


def rgb_image(stamp: Any, rgb: np.ndarray, frame_id: str = "camera_optical_frame", encoding: str = "rgb8") -> Any:
    """An rgb8 (or bgr8) ``sensor_msgs/Image`` of ``rgb`` (H, W, 3) uint8 (data handed over as bytes)."""
    from moge2_ros.ros.conversions import rgb_to_image

    return rgb_to_image(header(stamp, frame_id), np.ascontiguousarray(rgb), encoding)


def jpeg_image(stamp: Any, rgb: np.ndarray, frame_id: str = "camera_optical_frame", quality: int = 95) -> Any:
    """A ``sensor_msgs/CompressedImage`` (format 'jpeg') of ``rgb`` and the RGB the JPEG decodes to."""
    import io

    from PIL import Image as PILImage
    from sensor_msgs.msg import CompressedImage

    buffer = io.BytesIO()
    PILImage.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    data = buffer.getvalue()
    decoded = np.asarray(PILImage.open(io.BytesIO(data)).convert("RGB"))
    return CompressedImage(header=header(stamp, frame_id), format="jpeg", data=data), decoded


def camera_info(stamp: Any, k: np.ndarray, width: int, height: int, frame_id: str = "camera_optical_frame") -> Any:
    from moge2_ros.ros.conversions import make_camera_info

    return make_camera_info(header(stamp, frame_id), np.asarray(k, dtype=np.float64), width, height)


def cloud_fields(msg: Any) -> dict[str, np.ndarray]:
    """Decode a ``sensor_msgs/PointCloud2`` by its fields and offsets: name -> ``(height, width)`` array.

    FLOAT32 fields are float32; the packed ``rgb`` field is returned as its uint32 bit pattern.
    """
    from sensor_msgs.msg import PointField

    types = {PointField.FLOAT32: "f4", PointField.FLOAT64: "f8", PointField.UINT32: "u4", PointField.INT32: "i4",
             PointField.UINT8: "u1", PointField.INT8: "i1", PointField.UINT16: "u2", PointField.INT16: "i2"}
    order = ">" if msg.is_bigendian else "<"
    names, formats, offsets = [], [], []
    for f in msg.fields:
        assert f.count == 1, f"field {f.name}: count {f.count}"
        code = "u4" if f.name == "rgb" else types[f.datatype]
        names.append(f.name)
        formats.append(order + code)
        offsets.append(f.offset)
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": msg.point_step})
    assert msg.row_step == msg.point_step * msg.width
    raw = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    assert raw.size == msg.row_step * msg.height, (raw.size, msg.row_step, msg.height)
    points = raw.view(dtype).reshape(msg.height, msg.width)
    return {name: np.asarray(points[name]).astype(points[name].dtype.newbyteorder("=")) for name in names}


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """PCL packed rgb (uint32 0x00RRGGBB) -> ``(..., 3)`` uint8 RGB."""
    packed = packed.astype(np.uint32)
    return np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], axis=-1).astype(np.uint8)


def image_array(msg: Any) -> np.ndarray:
    """Decode an unpadded little-endian mono8 / bgr8 / 32FC3 output image into ``(H, W[, C])``."""
    kinds = {"mono8": ("u1", 1), "bgr8": ("u1", 3), "rgb8": ("u1", 3), "32FC3": ("<f4", 3), "32FC1": ("<f4", 1)}
    dtype, channels = kinds[msg.encoding]
    itemsize = np.dtype(dtype).itemsize
    assert msg.step == msg.width * channels * itemsize, (msg.encoding, msg.step, msg.width)
    assert msg.is_bigendian == 0
    values = np.frombuffer(bytes(msg.data), dtype=dtype)
    assert values.size == msg.height * msg.width * channels
    shape = (msg.height, msg.width) if channels == 1 else (msg.height, msg.width, channels)
    return values.reshape(shape)


def diagnostics_values(array: Any, name_contains: str = "moge2_node") -> dict[str, str] | None:
    """The key/value pairs of the first status of a ``DiagnosticArray`` whose name contains ``name_contains``."""
    for status in array.status:
        if name_contains in status.name:
            return {kv.key: kv.value for kv in status.values}
    return None


#: Frame counters of the node's /diagnostics (moge2_ros.ros.stats.PipelineStats).
COUNTERS = ("received", "processed", "dropped", "unwatched", "bad_input", "over_budget", "errors")


def wait_for_stable_counters(client: RosClient, diagnostics: Inbox, status_prefix: str,
                             process: NodeProcess | None = None, stable_s: float = 1.0,
                             timeout: float = MESSAGE_TIMEOUT_S) -> dict[str, Any]:
    """Values of the node's /diagnostics once its frame counters have not changed for ``stable_s`` seconds.

    Only messages that arrive after the call count. With no input any more, the slot is empty and no frame is
    in flight then, so the counters are final. Counters are returned as ints, everything else as strings.
    """
    start = len(diagnostics)

    def stable() -> dict[str, Any] | None:
        entries = []
        for received_ns, array in diagnostics.items[start:]:
            values = diagnostics_values(array, status_prefix)
            if values is not None:
                entries.append((received_ns, values))
        if not entries:
            return None
        last_ns, last = entries[-1]
        key = tuple(last.get(name) for name in COUNTERS)
        first_ns = last_ns
        for received_ns, values in reversed(entries):
            if tuple(values.get(name) for name in COUNTERS) != key:
                break
            first_ns = received_ns
        if last_ns - first_ns < stable_s * 1e9:
            return None
        return {**last, **{name: int(last[name]) for name in COUNTERS}}

    return client.spin_until(stable, timeout, f"stable frame counters in /diagnostics of {status_prefix}", process)


def publish_paced(client: RosClient, publish: Callable[[int], None], count: int, rate_hz: float,
                  process: NodeProcess | None = None) -> float:
    """Call ``publish(i)`` for i in 0..count-1 at ``rate_hz`` (spinning in between); returns the seconds taken."""
    start = time.monotonic()
    for i in range(count):
        due = start + i / rate_hz
        while True:
            left = due - time.monotonic()
            if left <= 0:
                break
            client.executor.spin_once(timeout_sec=min(left, 0.02))
        publish(i)
        if process is not None and i % 100 == 0 and not process.alive():
            raise AssertionError(f"moge2_node exited (status {process.proc.returncode}) while receiving frame {i}:"
                                 f"\n{process.output()[-4000:]}")
    return time.monotonic() - start


def stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
