"""``moge2-ros monitor``: watch a running ``moge2_node`` without the ``ros2`` command line or RViz.

:class:`Monitor` subscribes to the node's outputs in one namespace (relative names as the node publishes them:
``depth/image``, ``depth/camera_info``, ``points``, ``normals``, ``mask``, ``depth/colorized``, ``geometry``), to
``/diagnostics`` and optionally to the camera topic that feeds the node, and keeps what :func:`run_monitor`
prints every ``period`` seconds:

* rates: messages received over the last ``window`` seconds (or since the topic's first message, when that is
  more recent: :class:`Stream`), so a burst does not read as a high rate and a stall shows as a falling one;
* latency: receipt time here minus the header stamp (the capture time of the camera image the output belongs to);
* depth: the newest depth image's range (metres) and valid fraction (finite and > 0);
* the node's own ``/diagnostics`` status (level, message, received / processed / dropped frames).

Until data flows it says what it waits for (no publisher yet, or a publisher but no image reaching the node), and
gives up with one line after ``timeout`` seconds.  ``snapshot`` writes the newest frame whose outputs all arrived
(:meth:`Monitor.write_snapshot`).  The node computes only the outputs someone subscribes to, so the monitor
subscribing to all of them makes the node compute all of them; ``topics`` narrows it.

``moge2-ros demo`` (:mod:`moge2_ros.ros.run_demo`) runs the same :class:`Monitor`, :func:`wait_for_data` and
:func:`measure`, and adds its ground-truth depth error and the processes it starts.
"""

from __future__ import annotations

import array
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from ..errors import Moge2RosError
from ..io import msg_codec as codec
from ..io.ply import write_ply
from ..io.writers import write_depth_npy, write_depth_png_mm, write_json
from .topics import OUTPUTS
from .conversions import image_to_float

__all__ = ["LEVELS", "NAMESPACE", "OUTPUTS", "REPORT_PERIOD_S", "WINDOW_S", "Monitor", "NoDataError", "Stream",
           "measure", "message_to_dict", "run_monitor", "wait_for_data"]

NAMESPACE = "/camera"
#: Seconds of history behind the printed rates and latency.
WINDOW_S = 4.0
#: Seconds between two printed lines.
REPORT_PERIOD_S = 2.0
#: diagnostic_msgs/DiagnosticStatus levels in words.
LEVELS = {0: "OK", 1: "WARN", 2: "ERROR", 3: "STALE"}
#: Messages kept per topic for the snapshot (enough to find one frame whose every output arrived).
SNAPSHOT_HISTORY = 10


class NoDataError(Moge2RosError):
    """Nothing arrived on the awaited topics within the timeout; ``waiting`` says what was still missing."""

    def __init__(self, message: str, waiting: str) -> None:
        super().__init__(message)
        self.waiting = waiting


class Stream:
    """Receipt times and latencies of one topic (seconds, the monitor's wall clock)."""

    def __init__(self, max_samples: int = 10000) -> None:
        self.samples: deque[tuple[float, float]] = deque(maxlen=max_samples)  # (receipt, latency)
        self.count = 0
        self.first: float | None = None  # receipt time of the first message
        self.first_stamp: float | None = None  # header stamp of the first message

    def add(self, now: float, stamp_s: float) -> None:
        """One message received at ``now`` whose header stamp is ``stamp_s``."""
        self.count += 1
        if self.first is None:
            self.first, self.first_stamp = now, stamp_s
        self.samples.append((now, now - stamp_s))

    def rate(self, now: float, window_s: float = WINDOW_S) -> float:
        """Messages per second over the last ``window_s`` seconds (or since the first message, if later)."""
        if self.first is None:
            return 0.0
        recent = sum(1 for t, _ in self.samples if t > now - window_s)
        if self.first > now - window_s:  # a young stream: intervals since its first message
            span = now - self.first
            return (recent - 1) / span if span > 0 else 0.0
        return recent / window_s

    def latencies(self, now: float, window_s: float = WINDOW_S) -> np.ndarray:
        """Latencies (s) of the messages of the last ``window_s`` seconds."""
        return np.array([lat for t, lat in self.samples if t > now - window_s])


def message_to_dict(msg: Any) -> Any:
    """A ROS message as plain dicts / lists / numbers (field names as in the .msg file), for JSON."""
    fields = getattr(msg, "get_fields_and_field_types", None)
    if fields is not None:
        return {name: message_to_dict(getattr(msg, name)) for name in fields()}
    if isinstance(msg, (list, tuple, array.array, np.ndarray)):
        return [message_to_dict(v) for v in msg]
    if isinstance(msg, bytes):
        return list(msg)
    return msg


def _geometry_type() -> Any:
    try:
        from moge2_ros_msgs.msg import MonocularGeometry
    except ImportError:
        return None
    return MonocularGeometry


def _stamp_key(msg: Any) -> tuple[int, int]:
    return (msg.header.stamp.sec, msg.header.stamp.nanosec)


class Monitor(Node):
    """Subscribes to a moge2_node's outputs in ``namespace`` and keeps rates, latencies, depth statistics, the
    node's /diagnostics status and (for a snapshot) the last messages of each topic.

    Args:
        namespace: the node's namespace (``/camera``); ``/`` for none.
        topics: output topics (relative names, a subset of :data:`OUTPUTS`); the first is the one that says
            "data flows" and that ``count`` counts.
        input_topic: also measure the node's input (relative to ``namespace`` unless it starts with ``/``).
        input_reliable: subscribe to the input with reliable QoS (default best effort, which also reads reliable
            publishers; a best-effort reader of large images loses one whenever a fragment is lost).
        clock: wall-clock time in seconds (receipts are compared with header stamps).
        node_name: this monitor's ROS node name.
    """

    def __init__(self, namespace: str = NAMESPACE, topics: Sequence[str] = OUTPUTS, input_topic: str | None = None,
                 input_reliable: bool = False, clock: Callable[[], float] = time.time,
                 node_name: str = "moge2_monitor") -> None:
        super().__init__(node_name)
        self.clock = clock
        self.namespace = "/" + namespace.strip("/") if namespace.strip("/") else ""
        self.notes: list[str] = []  # things the monitor cannot watch, said once at start
        self.topics: dict[str, Stream] = {}
        self.latest: dict[str, Any] = {}  # topic -> newest message
        self.history: dict[str, deque[Any]] = {}  # topic -> last SNAPSHOT_HISTORY messages
        self.node_status: tuple[int, str, dict[str, str]] | None = None  # level, message, values
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        types = {"depth/camera_info": CameraInfo, "points": PointCloud2, "geometry": _geometry_type()}
        self.outputs: list[str] = []
        for topic in topics:
            msg_type = types.get(topic, Image)
            if msg_type is None:
                self.notes.append(f"{self.full(topic)} not watched: moge2_ros_msgs is not installed here")
                continue
            self.outputs.append(topic)
            self._subscribe(msg_type, topic, qos)
        self.primary = self.outputs[0] if self.outputs else None
        self.input = input_topic
        if input_topic is not None:
            in_qos = qos if input_reliable else qos_profile_sensor_data
            self._subscribe(Image, input_topic, in_qos)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    # ------------------------------------------------------------------------------------------------ topics
    def full(self, topic: str) -> str:
        """The absolute name of ``topic`` (relative names are in the monitored namespace)."""
        return topic if topic.startswith("/") else f"{self.namespace}/{topic}"

    def _subscribe(self, msg_type: Any, topic: str, qos: Any) -> None:
        self.topics[topic] = Stream()
        self.history[topic] = deque(maxlen=SNAPSHOT_HISTORY)
        self.create_subscription(msg_type, self.full(topic), lambda msg: self._on_message(topic, msg), qos)

    def _on_message(self, topic: str, msg: Any) -> None:
        stamp = msg.header.stamp
        now = self.clock()
        self.topics[topic].add(now, stamp.sec + stamp.nanosec * 1e-9)
        self.latest[topic] = msg
        self.history[topic].append(msg)
        if topic == "depth/image":
            self.on_depth(msg, now)

    def on_depth(self, msg: Image, now: float) -> None:
        """Called for every depth image (received at ``now``): a hook for subclasses (the demo's AbsRel)."""

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        """Keep the status of the watched camera: a multi-camera node's own status of the camera whose topics are
        under :attr:`namespace` (``<node>: camera <name>``, with ``<node namespace>/<name>`` = the namespace), else
        the status of a node in the namespace (``<namespace>/<node>: MoGe-2 inference``)."""
        prefix = f"{self.namespace}/"
        chosen = None
        for status in msg.status:
            if "moge2" not in status.name.lower():
                continue
            node_name, _, what = status.name.partition(": ")
            node_ns = node_name.rsplit("/", 1)[0]
            if what.startswith("camera ") and f"{node_ns}/{what[len('camera '):]}" == self.namespace:
                chosen = status
                break
            if status.name.startswith(prefix) and not what.startswith("camera "):
                chosen = status
        if chosen is not None:
            level = chosen.level
            self.node_status = (int.from_bytes(level, "little") if isinstance(level, bytes) else int(level),
                                chosen.message, {kv.key: kv.value for kv in chosen.values})

    def publishers(self, topic: str) -> int:
        return self.count_publishers(self.full(topic))

    def node_values(self) -> dict[str, str]:
        """The node's latest /diagnostics values (``received``, ``processed``, ...), or {}."""
        return self.node_status[2] if self.node_status else {}

    # ------------------------------------------------------------------------------------------------ words
    def waiting_for(self) -> str:
        """What the monitor waits for before the first message of its primary topic, with the likely reason."""
        topic = self.full(self.primary or "")
        ns = self.namespace or "/"
        if self.publishers(self.primary or "") == 0:
            return (f"{topic} (no publisher yet: is moge2_node running with -r __ns:={ns} in this "
                    "ROS_DOMAIN_ID, and has it loaded its model?)")
        values = self.node_values()
        if values.get("received") == "0":
            return (f"{topic} (moge2_node is up but has received no image: is a camera publishing on the node's "
                    "input, e.g. -r image:=<camera topic>?)")
        if values.get("received") and values.get("processed") == "0":
            return f"{topic} (moge2_node receives images but has published none yet: {self.status_text()})"
        return f"{topic} (a publisher is up; the node computes on its next camera image)"

    def rates_text(self, now: float, window_s: float = WINDOW_S) -> str:
        """``topic rate`` of every watched topic, the input first."""
        names = ([self.input] if self.input else []) + self.outputs
        return "  ".join(f"{name} {self.topics[name].rate(now, window_s):.1f}" for name in names)

    def latency_text(self, now: float, window_s: float = WINDOW_S) -> str:
        if self.primary is None:
            return ""
        lat = self.topics[self.primary].latencies(now, window_s) * 1e3
        if not lat.size:
            return f"latency: no {self.primary} in the last {window_s:.0f} s"
        p50, p95 = np.percentile(lat, (50, 95))
        return f"latency p50 {p50:.0f} ms, p95 {p95:.0f} ms"

    def depth_text(self) -> str:
        """Range, median and valid fraction (finite and > 0) of the newest depth image, or ''."""
        msg = self.latest.get("depth/image")
        if msg is None:
            return ""
        size = f"{msg.width}x{msg.height} {msg.encoding}"
        try:
            depth = image_to_float(msg)
        except codec.ConversionError as exc:
            return f"depth ({size}): unreadable: {exc}"
        valid = np.isfinite(depth) & (depth > 0)
        if not valid.any():
            return f"depth ({size}): no valid pixel"
        lo, median, hi = np.percentile(depth[valid], (0, 50, 100))
        return f"depth ({size}) {lo:.2f}-{hi:.2f} m, median {median:.2f} m, {100 * valid.mean():.1f} % valid"

    def status_text(self) -> str:
        """``moge2_node OK: running (12 received, 12 processed, 0 dropped)`` from /diagnostics, or ''."""
        if self.node_status is None:
            return ""
        level, message, values = self.node_status
        failures = ("unwatched", "bad_input", "over_budget", "errors")  # shown when not zero
        counts = ", ".join(f"{values[k]} {k.replace('_', ' ')}" for k in ("received", "processed", "dropped", *failures)
                           if k in values and (k not in failures or values[k] != "0"))
        return f"moge2_node {LEVELS.get(level, str(level))}: {message}" + (f" ({counts})" if counts else "")

    def details_text(self, now: float, window_s: float = WINDOW_S) -> str:
        """Latency, depth and node status in one line."""
        return " | ".join(t for t in (self.latency_text(now, window_s), self.depth_text(), self.status_text()) if t)

    def report(self, now: float, window_s: float = WINDOW_S) -> list[str]:
        """The lines printed every period: rates, then latency / depth / node status."""
        return [f"rates (Hz, last {window_s:g} s): {self.rates_text(now, window_s)}", self.details_text(now, window_s)]

    # ------------------------------------------------------------------------------------------------ snapshot
    def complete_frame(self) -> dict[str, Any] | None:
        """The newest frame (stamp of the primary topic) whose every watched output arrived: topic -> message."""
        if self.primary is None:
            return None
        by_stamp = {t: {_stamp_key(m): m for m in self.history[t]} for t in self.outputs}
        for msg in reversed(self.history[self.primary]):
            key = _stamp_key(msg)
            if all(key in by_stamp[t] for t in self.outputs):
                return {t: by_stamp[t][key] for t in self.outputs}
        return None

    def snapshot_frame(self) -> dict[str, Any]:
        """:meth:`complete_frame`, else each watched output's newest message."""
        return self.complete_frame() or {t: self.latest[t] for t in self.outputs if t in self.latest}

    def write_snapshot(self, folder: Path) -> list[str]:
        """Write one frame's outputs into ``folder``; returns one line per file written.

        Files: ``depth.png`` (16-bit millimetres, 0 invalid) and ``depth.npy`` (float32 metres, NaN invalid),
        ``points.ply`` (the cloud's finite points, x y z in metres, binary little-endian), ``geometry.json``
        and ``camera_info.json`` (the messages field by field).
        """
        frame = self.snapshot_frame()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        if "depth/image" in frame:
            depth = image_to_float(frame["depth/image"])
            write_depth_png_mm(folder / "depth.png", depth)
            write_depth_npy(folder / "depth.npy", depth)
            lines.append(f"{folder / 'depth.png'} and depth.npy: {depth.shape[1]}x{depth.shape[0]} depth "
                         "(PNG in millimetres, 0 = invalid; npy in metres, NaN = invalid)")
        if "points" in frame:
            points = codec.decode_cloud_xyz(frame["points"], finite_only=True)
            write_ply(folder / "points.ply", points)
            lines.append(f"{folder / 'points.ply'}: {len(points)} points (x y z, metres)")
        for topic, name in (("geometry", "geometry.json"), ("depth/camera_info", "camera_info.json")):
            if topic in frame:
                write_json(folder / name, message_to_dict(frame[topic]))
                lines.append(f"{folder / name}: the {topic} message")
        stamps = {_stamp_key(m) for m in frame.values()}
        if len(stamps) > 1:
            lines.append("note: these files come from different frames (no frame had every output)")
        return lines


# ------------------------------------------------------------------------------------------------ loops
def wait_for_data(monitor: Monitor, required: Sequence[str], timeout: float, waiting: Callable[[], str],
                  say: Callable[[str], None], alive: Callable[[], bool] = lambda: True,
                  period: float = REPORT_PERIOD_S) -> float | None:
    """Spin ``monitor`` until every topic in ``required`` has had a message; say ``waiting()`` when it changes
    and every ``period`` s.  Returns the time data flows (the latest first message), None when ``alive()``
    turns false.  Raises :class:`NoDataError` after ``timeout`` seconds."""
    streams = [monitor.topics[t] for t in required]
    start = last = time.time()
    said = ""
    while True:
        rclpy.spin_once(monitor, timeout_sec=0.1)
        if not alive():
            return None
        if all(s.first is not None for s in streams):
            return max(s.first for s in streams)  # type: ignore[type-var]
        now = time.time()
        text = waiting()
        if text != said or now - last >= period:
            say(f"{now - start:4.1f}s  waiting for {text}")
            said, last = text, now
        if now - start > timeout:
            raise NoDataError(f"nothing arrived within {timeout:g} s; waiting for {text}", text)


def measure(monitor: Monitor, first: float, duration: float | None, count: int | None,
            report: Callable[[float], None], alive: Callable[[], bool] = lambda: True,
            period: float = REPORT_PERIOD_S) -> bool:
    """Spin ``monitor`` and call ``report(now)`` half a period after ``first`` and then every ``period`` s, until
    ``duration`` s after ``first`` or ``count`` messages of the primary topic (None: no limit).  Returns False
    when ``alive()`` turned false."""
    primary = monitor.topics[monitor.primary] if monitor.primary else None
    last = first - period / 2
    while True:
        now = time.time()
        if duration is not None and now - first >= duration:
            return True
        if count is not None and primary is not None and primary.count >= count:
            return True
        rclpy.spin_once(monitor, timeout_sec=0.1)
        if not alive():
            return False
        now = time.time()
        if now - last >= period:
            last = now
            report(now)


def _say(line: str) -> None:
    print(f"[monitor] {line}", flush=True)


def run_monitor(namespace: str = NAMESPACE, topics: Sequence[str] = OUTPUTS, input_topic: str | None = None,
                period: float = REPORT_PERIOD_S, window: float = WINDOW_S, duration: float | None = None,
                count: int | None = None, timeout: float = 60.0, snapshot: Path | None = None) -> int:
    """Watch a moge2_node (see the module docstring) until ``duration`` s after data flows, ``count`` messages of
    the first topic, or Ctrl-C; then print a summary and write the snapshot.  Returns 0.

    Raises:
        NoDataError: nothing arrived on the first topic within ``timeout`` seconds.
    """
    rclpy.init()
    monitor = Monitor(namespace, topics, input_topic)
    try:
        names = ", ".join(monitor.full(t) for t in ([input_topic] if input_topic else []) + monitor.outputs)
        _say(f"watching {names} and /diagnostics")
        for line in monitor.notes:
            _say(line)
        if monitor.primary is None:
            raise NoDataError("no topic to watch", "")
        start = time.time()
        first = wait_for_data(monitor, [monitor.primary], timeout, monitor.waiting_for, _say, period=period)
        assert first is not None
        _say(f"{first - start:4.1f}s  data flowing on {monitor.full(monitor.primary)}")

        def report(now: float) -> None:
            for line in monitor.report(now, window):
                _say(f"t={now - first:4.0f}s  {line}")

        try:
            measure(monitor, first, duration, count, report, period=period)
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        now = time.time()
        whole = now - first + 1e-3
        _say(f"summary over {now - first:.0f} s ({monitor.topics[monitor.primary].count} {monitor.primary} "
             f"messages): rates (Hz) {monitor.rates_text(now, whole)}")
        _say(monitor.details_text(now, whole))
        if snapshot is not None:
            deadline = time.time() + max(5.0, 3 * period)  # an output of the last frames may have been lost
            while monitor.complete_frame() is None and time.time() < deadline:
                rclpy.spin_once(monitor, timeout_sec=0.1)
            for line in monitor.write_snapshot(snapshot):
                _say(f"snapshot: {line}")
        return 0
    finally:
        monitor.destroy_node()
        rclpy.try_shutdown()
