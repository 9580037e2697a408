"""The main job without ``ros2 launch``: demo camera + moge2_node as processes, monitored from here.

``moge2-ros demo --model M`` starts ``demo_camera`` and ``moge2_node`` in the ``/camera`` namespace (the same
graph as ``launch/demo.launch.py``), subscribes to the node's outputs and prints, every 2 s, the input / output
rates, the latency and the depth error against the rendered ground truth, then stops both processes (also on
Ctrl-C).  Works with the pip ROS wheels (no ``ros2`` command line needed).  The watching is ``moge2-ros monitor``'s
(:mod:`moge2_ros.ros.monitor`: :class:`~moge2_ros.ros.monitor.Monitor`, its waiting and measuring loops); this
module adds the processes, the demo's "waiting for" words and the AbsRel against the ground truth.

Until the first depth image arrives the monitor says what it is waiting for (the camera's first image, the node
loading its model, the first inference); the ``duration`` is counted from that first depth image, so a slow
model load does not eat the measured time.  What the numbers mean (:meth:`DemoMonitor.demo_report`):

* rates: messages received over the last :data:`WINDOW_S` seconds (or since the topic's first message, when
  that is more recent), so a burst does not read as a high rate and a stall shows as a falling one;
* latency: receipt time at the monitor minus the header stamp (the camera's wall-clock capture time);
* AbsRel: ``mean(|depth - gt| / gt)`` of the valid pixels, against the ``depth_gt`` image of the same stamp.

With ``cameras=2`` (:func:`run_demo`) two demo cameras (``/camera/left`` and ``/camera/right``, the second seeing
the room from another place) feed one ``moge2_node`` (``cameras:=[left, right]``, one model): the report follows
the left camera as above and adds the node's own counts of each camera from its per-camera /diagnostics status.

The graph is set up for a small CPU: the node takes the camera's images with reliable QoS (the demo camera
publishes reliable; a best-effort reader of a 0.9 MB image loses it whenever one fragment is lost, which a busy
2-core machine does all the time), and it gets all CPU cores but one for torch (the camera and this monitor need
one: an OpenMP thread that loses its core stalls every parallel operation of its process).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image

from .conversions import image_to_float
from .monitor import NAMESPACE, REPORT_PERIOD_S, WINDOW_S, Monitor, NoDataError, Stream, measure, wait_for_data

__all__ = ["NAMESPACE", "REPORT_PERIOD_S", "WINDOW_S", "DemoMonitor", "Stream", "node_threads", "run_demo",
           "waiting_for"]


def waiting_for(camera_seen: bool, node_ready: bool) -> str:
    """What the demo waits for before the first depth image, in words."""
    missing = []
    if not camera_seen:
        missing.append("demo_camera's first image")
    if not node_ready:
        missing.append("moge2_node to load the model")
    return " and ".join(missing) if missing else "moge2_node's first depth image (first inference)"


class DemoMonitor(Monitor):
    """The :class:`Monitor` of the demo graph (camera input, depth, points, camera_info) plus the depth error
    against the camera's ``depth_gt`` of the same stamp."""

    def __init__(self, clock: object = time.time, namespace: str = NAMESPACE) -> None:
        super().__init__(namespace, topics=("depth/image", "points", "depth/camera_info"), input_topic="image_raw",
                         input_reliable=True, clock=clock, node_name="moge2_demo_monitor")  # type: ignore[arg-type]
        self.camera_status: dict[str, dict[str, str]] = {}  # camera -> its latest /diagnostics values (several)
        self.also_received: dict[str, int] = {}  # depth/image of the other cameras -> messages received
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_camera_status, 10)
        self.gt: dict[tuple[int, int], Image] = {}  # stamp -> ground-truth message (decoded only when used)
        self.abs_rel: deque[tuple[float, float]] = deque(maxlen=10000)  # (receipt, AbsRel)
        # (receipt, median ground truth / predicted depth, AbsRel after multiplying the depth by that ratio)
        self.scale_split: deque[tuple[float, float, float]] = deque(maxlen=10000)
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(Image, self.full("depth_gt"), self._on_gt, qos)

    @property
    def fx(self) -> float | None:
        info = self.latest.get("depth/camera_info")
        return None if info is None else float(info.k[0])

    def node_ready(self) -> bool:
        """moge2_node has loaded its model: it creates its output publishers only afterwards."""
        return self.publishers("depth/image") > 0

    def _on_camera_status(self, msg: DiagnosticArray) -> None:
        prefix = f"{NAMESPACE}/moge2_node: camera "
        for status in msg.status:
            if status.name.startswith(prefix):
                self.camera_status[status.name[len(prefix):]] = {kv.key: kv.value for kv in status.values}

    def also_watch(self, topic: str) -> None:
        """Subscribe to another camera's ``depth/image`` (absolute ``topic``): the node computes only what someone
        listens to; the depth images received are counted in :attr:`also_received`."""
        self.also_received[topic] = 0

        def count(msg: Image) -> None:
            self.also_received[topic] += 1

        self.create_subscription(Image, topic, count, QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))

    def camera_counts(self) -> str:
        """Each camera's frames received / processed / dropped and latency p50 from the node's per-camera
        /diagnostics statuses (a node with several cameras), or ''."""
        return "; ".join(f"{name}: {v.get('received', '?')} received, {v.get('processed', '?')} processed, "
                         f"{v.get('dropped', '?')} dropped, "
                         + (f"{v['unwatched']} with no subscriber, " if v.get("unwatched", "0") != "0" else "")
                         + f"latency p50 {v.get('latency_p50_ms', '?')} ms"
                         for name, v in sorted(self.camera_status.items()))

    def _on_gt(self, msg: Image) -> None:
        self.gt[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = msg
        while len(self.gt) > 50:
            self.gt.pop(next(iter(self.gt)))

    def on_depth(self, msg: Image, now: float) -> None:
        gt_msg = self.gt.get((msg.header.stamp.sec, msg.header.stamp.nanosec))
        if gt_msg is None:
            return
        pred, gt = image_to_float(msg), image_to_float(gt_msg)
        valid = np.isfinite(pred) & np.isfinite(gt) & (gt > 0)
        if valid.any():
            p, g = pred[valid], gt[valid]
            self.abs_rel.append((now, float(np.mean(np.abs(p - g) / g))))
            ratio = float(np.median(g / p))
            self.scale_split.append((now, ratio, float(np.mean(np.abs(ratio * p - g) / g))))

    def scale_report(self, since: float, bundled_model: bool = False) -> str:
        """The depth error since ``since`` (receipt time) split into the metric scale and the shape, in one line
        (with what it means for the bundled demo model when ``bundled_model``), or ''."""
        rows = np.array([(r, a) for t, r, a in self.scale_split if t >= since])
        if not rows.size:
            return ""
        ratio, aligned = float(np.median(rows[:, 0])), float(np.mean(rows[:, 1]))
        line = (f"depth scale: median ground truth / predicted {ratio:.2f} (1.00 = metres right); AbsRel {aligned:.3f} "
                "once each frame's scale is fitted (the shape)")
        if bundled_model:
            line += ("; the bundled demo model gets the shape, not a room's size (docs/DEMO_MODEL.md): a metric "
                     "anchor (README, Metric anchors) or the official weights give the metres")
        return line

    def demo_report(self, now: float | None = None, window_s: float = WINDOW_S) -> str:
        """Rates, latency p50 and AbsRel over the last ``window_s`` seconds, in one line (the demo's format)."""
        now = self.clock() if now is None else now  # type: ignore[operator]
        image, depth, points = (self.topics[k] for k in ("image_raw", "depth/image", "points"))
        parts = [f"camera {image.rate(now, window_s):5.1f} Hz", f"depth {depth.rate(now, window_s):5.1f} Hz",
                 f"points {points.rate(now, window_s):5.1f} Hz"]
        lat = depth.latencies(now, window_s) * 1e3
        if lat.size:
            parts.append(f"latency p50 {np.percentile(lat, 50):5.0f} ms")
        errors = [e for t, e in self.abs_rel if t > now - window_s]
        if errors:
            parts.append(f"depth AbsRel {np.mean(errors):.3f}")
        if self.fx is not None:
            parts.append(f"fx {self.fx:.1f} px")
        return " | ".join(parts)

    def node_counts(self) -> str:
        """The node's own counters from /diagnostics (frames received, processed, dropped), or ''."""
        s = self.node_values()
        if not s:
            return ""
        failed = ", ".join(f"{s[k]} {k.replace('_', ' ')}" for k in ("bad_input", "over_budget", "errors")
                           if s.get(k, "0") != "0")
        if s.get("unwatched", "0") != "0":  # e.g. frames before the monitor's subscriptions matched
            failed = ", ".join(t for t in (f"{s['unwatched']} with no subscriber (not computed)", failed) if t)
        who = f"moge2_node, camera {s['camera']}" if s.get("camera") else "moge2_node"
        return (f"{who}: {s.get('received', '?')} frames received, {s.get('processed', '?')} processed, "
                f"{s.get('dropped', '?')} dropped (it keeps only the newest frame){', ' + failed if failed else ''}, "
                f"inference p50 {s.get('inference_p50_ms', '?')} ms")


def _spawn(module: str, ros_args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    handle = log.open("wb")
    return subprocess.Popen([sys.executable, "-m", module, "--ros-args", *ros_args], env=env, stdout=handle,
                            stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(2)  # SIGINT: rclpy shuts down cleanly
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def node_threads(env: dict[str, str], cpus: int | None = None) -> dict[str, str]:
    """The node process's environment: ``OMP_NUM_THREADS`` = all CPUs but one, unless the caller set it."""
    if "OMP_NUM_THREADS" in env:
        return env
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return {**env, "OMP_NUM_THREADS": str(max(1, cpus - 1))}


#: Demo cameras of ``run_demo(cameras=2)``: name -> horizontal field of view (degrees), so that they differ.
TWO_CAMERAS: dict[str, float] = {"left": 60.0, "right": 75.0}


def run_demo(model: str, duration: float = 20.0, rate_hz: float = 5.0, width: int = 640, height: int = 480,
             resolution_level: int = 0, extra_params: list[str] | None = None, log_dir: Path | None = None,
             startup_timeout: float = 300.0, cameras: int = 1) -> int:
    """Run the demo graph, measure for ``duration`` seconds from the first depth image, print what it measures.

    Returns an exit status: 0, or 1 when a process exits or no depth image arrives within ``startup_timeout``
    seconds, 2 for ``cameras`` other than 1 or 2.  ``resolution_level`` defaults to 0 (the fewest tokens) so that
    the demo stays interactive on a CPU.  ``cameras=2``: two demo cameras into one node (see the module docstring).
    """
    if cameras not in (1, 2):
        print(f"[demo] cameras must be 1 or 2, found {cameras!r}", file=sys.stderr)
        return 2
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="moge2_demo_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("ROS_LOG_DIR", str(log_dir / "ros"))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", env["ROS_AUTOMATIC_DISCOVERY_RANGE"])
    os.environ.setdefault("ROS_LOG_DIR", env["ROS_LOG_DIR"])
    names = list(TWO_CAMERAS) if cameras == 2 else [""]
    shown = f"{NAMESPACE}/{names[0]}" if names[0] else NAMESPACE  # the camera the report follows
    node_args = ["-r", f"__ns:={NAMESPACE}"]
    if names == [""]:
        node_args += ["-r", "image:=image_raw"]
    else:
        node_args += ["-p", "cameras:=[" + ",".join(names) + "]"]
        node_args += [arg for name in names for arg in ("-r", f"{name}/image:={name}/image_raw")]
    node_env = node_threads(env)
    rclpy.init()
    monitor = DemoMonitor(namespace=shown)  # before the processes, so that its discovery runs while they start
    procs: dict[str, subprocess.Popen] = {}
    try:
        for name in names:
            key = f"demo_camera_{name}" if name else "demo_camera"
            ns = f"{NAMESPACE}/{name}" if name else NAMESPACE
            procs[key] = _spawn(
                "moge2_ros.ros.demo_camera", ["-r", f"__ns:={ns}", "-r", "image:=image_raw", "-p",
                                              f"rate_hz:={rate_hz}", "-p", f"width:={width}", "-p",
                                              f"height:={height}", "-p", f"frame_id:={name or 'camera'}_optical_frame",
                                              *(["-p", f"fov_x_deg:={TWO_CAMERAS[name]}"] if name else [])],
                env, log_dir / f"{key}.log")
        procs["moge2_node"] = _spawn(
            "moge2_ros.ros.node", [*node_args, "-p", f"model:={model}", "-p", "intrinsics_source:=camera_info",
                                   "-p", f"resolution_level:={resolution_level}", "-p", "input_qos:=reliable",
                                   *(extra_params or [])], node_env, log_dir / "moge2_node.log")
        cams = ", ".join(f"{key} (pid {proc.pid})" for key, proc in procs.items() if key != "moge2_node")
        print(f"[demo] started {cams} and moge2_node (pid {procs['moge2_node'].pid}, OMP_NUM_THREADS="
              f"{node_env['OMP_NUM_THREADS']}); logs in {log_dir}")
        for name in names:
            ns = f"{NAMESPACE}/{name}" if name else NAMESPACE
            print(f"[demo] topics: {ns}/image_raw, {ns}/camera_info, {ns}/depth_gt (input);")
            print(f"[demo]         {ns}/depth/image, {ns}/depth/camera_info, {ns}/points, {ns}/normals, {ns}/mask, "
                  f"{ns}/depth/colorized, {ns}/geometry, /diagnostics")
        for name in names[1:]:
            monitor.also_watch(f"{NAMESPACE}/{name}/depth/image")
        if len(names) > 1:
            print(f"[demo] one moge2_node ({NAMESPACE}/moge2_node) serves both cameras; the report follows {shown}")
        return _watch(monitor, procs, log_dir, duration, startup_timeout, _is_bundled(model))
    except KeyboardInterrupt:
        return 0
    finally:
        monitor.destroy_node()
        rclpy.try_shutdown()
        for proc in reversed(procs.values()):  # the node first, then the camera
            _stop(proc)


def _say(line: str) -> None:
    print(f"[demo] {line}", flush=True)


def _watch(monitor: DemoMonitor, procs: dict[str, subprocess.Popen], log_dir: Path, duration: float,
           startup_timeout: float, bundled_model: bool = False) -> int:
    """Spin ``monitor``: say what is awaited until data flows (the monitor has the camera's first image and the
    node's first depth image), then report every :data:`REPORT_PERIOD_S` for ``duration`` s from then on."""
    image, depth = monitor.topics["image_raw"], monitor.topics["depth/image"]
    start = time.time()

    def alive() -> bool:
        return not _exited(procs, log_dir)

    try:
        first = wait_for_data(monitor, ["image_raw", "depth/image"], startup_timeout,
                              lambda: waiting_for(image.first is not None, monitor.node_ready()), _say, alive)
    except NoDataError as exc:
        _say(f"gave up after {startup_timeout:.0f} s waiting for {exc.waiting}; see the logs in {log_dir}")
        return 1
    if first is None:
        return 1
    # The monitor's own image subscription may match after the node's: the first depth image's stamp (the camera
    # image it was computed from) can be earlier than the first image the monitor saw.
    camera_first = min(image.first, depth.first_stamp)  # type: ignore[type-var]
    _say(f"{first - start:4.1f}s  data flowing (camera images from {camera_first - start:.1f} s, first depth image "
         f"{depth.first - start:.1f} s after start); measuring for {duration:.0f} s")  # type: ignore[operator]
    for topic in ("image_raw", "depth/image"):
        count = monitor.publishers(topic)
        if count > 1:
            _say(f"warning: {count} publishers on {NAMESPACE}/{topic} (another demo in this ROS_DOMAIN_ID?): "
                 "the numbers below mix them")
    def report(now: float) -> None:
        _say(f"t={now - first:4.0f}s  {monitor.demo_report(now)}")

    if not measure(monitor, first, duration, None, report, alive):
        return 1
    now = time.time()
    print(f"[demo] summary over {now - first:.0f} s: {monitor.demo_report(now, window_s=now - first + 1e-3)}")
    counts = monitor.node_counts()
    if counts:
        print(f"[demo] {counts}")
    per_camera = monitor.camera_counts()
    if per_camera:
        print(f"[demo] per camera: {per_camera}")
    for topic, received in monitor.also_received.items():
        print(f"[demo] {topic}: {received} depth images received")
    split = monitor.scale_report(first, bundled_model)
    if split:
        print(f"[demo] {split}")
    print("[demo] to look at it: ros2 launch moge2_ros demo.launch.py model:=... use_rviz:=true "
          "(RViz config rviz/moge2.rviz); without ros2 or RViz, run a node and watch it with "
          "'moge2-ros monitor --namespace /camera --snapshot DIR' (README: See the outputs without ros2 or RViz).")
    return 0


def _is_bundled(model: str) -> bool:
    """Whether ``model`` is the bundled demo model's file."""
    from ..assets import demo_model_path
    from ..errors import Moge2RosError

    try:
        return Path(model).resolve() == demo_model_path().resolve()
    except (Moge2RosError, OSError):
        return False


def _exited(procs: dict[str, subprocess.Popen], log_dir: Path) -> bool:
    """True (and the log's tail printed) when one of ``procs`` has exited."""
    for name, proc in procs.items():
        if proc.poll() is not None:
            print(f"[demo] {name} exited with status {proc.returncode}; see {log_dir / (name + '.log')}")
            tail = (log_dir / f"{name}.log").read_text(errors="replace").strip().splitlines()[-5:]
            print("\n".join(f"    {line}" for line in tail))
            return True
    return False
