"""``moge2-ros demo`` (the demo camera and ``moge2_node``, run and monitored) and ``moge2-ros monitor`` (watch a
running node's outputs, save a snapshot), registered through ``add_parsers``.

No ROS at module level: the handlers import :mod:`moge2_ros.ros.run_demo` / :mod:`moge2_ros.ros.monitor` (rclpy),
so ``moge2-ros --help`` works without ROS.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from moge2_ros.cli_args import add_model_arguments, note, positive_float, positive_int
from moge2_ros.ros.topics import OUTPUTS

__all__ = ["add_parsers", "cmd_demo", "cmd_monitor"]

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


def namespace(text: str) -> str:
    """A ROS namespace: ``/camera``, ``robot/front``, or ``/`` for none."""
    if text.strip("/") and not re.fullmatch(rf"{_NAME}(/{_NAME})*", text.strip("/")):
        raise argparse.ArgumentTypeError(f"not a ROS namespace: {text!r} (letters, digits, '_' and '/')")
    return "/" + text.strip("/")


def topic_name(text: str) -> str:
    """A ROS topic name, relative (to the namespace) or absolute."""
    if not re.fullmatch(rf"/?{_NAME}(/{_NAME})*", text):
        raise argparse.ArgumentTypeError(f"not a ROS topic name: {text!r}")
    return text


def output_topics(text: str) -> tuple[str, ...]:
    """A comma-separated subset of the node's outputs."""
    topics = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [t for t in topics if t not in OUTPUTS]
    if unknown or not topics:
        raise argparse.ArgumentTypeError(f"unknown output {', '.join(unknown) or '(none)'}; choose from "
                                         f"{','.join(OUTPUTS)}")
    return topics


def add_parsers(sub: Any) -> None:
    """Register ``demo`` on the ``moge2-ros`` subparsers ``sub``."""
    demo = sub.add_parser(
        "demo",
        help="run moge2_node on the rendered demo camera stream and print what it measures (needs ROS 2)",
        description="Start demo_camera and moge2_node (namespace /camera) as processes, say what they are "
                    "waiting for until the first depth image, then watch their topics for DURATION seconds from "
                    "it, printing rates, latency and the depth error against the rendered ground truth, and stop "
                    "both. Without --model the node runs the bundled demo model (trained on synthetic scenes only, "
                    "see docs/DEMO_MODEL.md).",
        epilog="Exit status: 0 success, 1 runtime error (a process exited, no depth image within the start-up "
               "timeout), 2 usage error.",
    )
    add_model_arguments(demo, default_level=0, model_help="model the node runs:")
    demo.add_argument("--duration", type=positive_float, default=20.0, metavar="S",
                      help="seconds measured from the first depth image (default 20)")
    demo.add_argument("--startup-timeout", type=positive_float, default=300.0, metavar="S",
                      help="give up when no depth image arrived after this many seconds (default 300: a large model "
                           "may first download)")
    demo.add_argument("--rate", type=positive_float, default=5.0, metavar="HZ", help="camera rate (default 5)")
    demo.add_argument("--width", type=positive_int, default=640, help="camera width (default 640)")
    demo.add_argument("--height", type=positive_int, default=480, help="camera height (default 480)")
    demo.add_argument("--cameras", type=int, choices=(1, 2), default=1,
                      help="demo cameras: 1 (default), or 2 (left 60 deg, right 75 deg) served by one node")
    demo.add_argument("--log-dir", type=Path, metavar="DIR", help="where the processes' logs go (default: a temp dir)")
    demo.set_defaults(handler=cmd_demo)

    monitor = sub.add_parser(
        "monitor",
        help="watch a running moge2_node: output rates, latency, depth range, status; save a snapshot (needs ROS 2)",
        description="Subscribe to the outputs of a moge2_node in NAMESPACE (depth/image, depth/camera_info, points, "
                    "normals, mask, depth/colorized, geometry) and /diagnostics, and print every PERIOD seconds the "
                    "rate of each output, the latency (receipt time minus header stamp), the newest depth image's "
                    "range and valid fraction and the node's own status. Until the first depth image it says what "
                    "it waits for. The node computes only the outputs someone subscribes to: --topics narrows what "
                    "it is asked for. Stops after --duration / --count, or on Ctrl-C, with a summary and the "
                    "--snapshot files. No ros2 command line or RViz needed.",
        epilog="Snapshot files (one frame): depth.png (16-bit, millimetres, 0 = invalid), depth.npy (float32 "
               "metres, NaN = invalid), points.ply (binary, x y z of the finite points), geometry.json, "
               "camera_info.json. Exit status: 0 success (also after Ctrl-C once data flowed), 1 nothing arrived "
               "within --timeout, 2 usage error.",
    )
    monitor.add_argument("--namespace", "-n", type=namespace, default="/camera", metavar="NS",
                         help="the node's namespace, as in -r __ns:=NS (default /camera; '/' for none)")
    monitor.add_argument("--topics", type=output_topics, default=OUTPUTS, metavar="T,T",
                         help="outputs to watch, comma-separated; the first one is counted and waited for "
                              "(default: all, depth/image first)")
    monitor.add_argument("--input", type=topic_name, metavar="TOPIC",
                         help="also measure the node's camera input (e.g. image_raw; relative to NS unless it "
                              "starts with '/'; best-effort QoS)")
    monitor.add_argument("--period", type=positive_float, default=2.0, metavar="S",
                         help="seconds between two reports (default 2)")
    monitor.add_argument("--window", type=positive_float, default=4.0, metavar="S",
                         help="seconds of history behind rates and latency (default 4)")
    monitor.add_argument("--duration", type=positive_float, metavar="S",
                         help="stop S seconds after the first depth image (default: run until Ctrl-C)")
    monitor.add_argument("--count", type=positive_int, metavar="N",
                         help="stop after N messages of the first topic")
    monitor.add_argument("--timeout", type=positive_float, default=60.0, metavar="S",
                         help="exit with status 1 when nothing arrived after S seconds (default 60)")
    monitor.add_argument("--snapshot", type=Path, metavar="DIR",
                         help="on exit, write the newest complete frame into DIR (see below)")
    monitor.set_defaults(handler=cmd_monitor)


def cmd_demo(args: argparse.Namespace) -> int:
    """``moge2-ros demo``: see :mod:`moge2_ros.ros.run_demo`.  The model options become the node's parameters."""
    from moge2_ros.assets import model_source

    model = model_source(args.model, say=note)
    params = ["-p", f"device:={args.device}", "-p", f"precision:={args.precision}"]
    if args.num_tokens is not None:
        params += ["-p", f"num_tokens:={args.num_tokens}"]
    from moge2_ros.ros.run_demo import run_demo

    return run_demo(model, duration=args.duration, rate_hz=args.rate, width=args.width, height=args.height,
                    resolution_level=args.resolution_level, extra_params=params, log_dir=args.log_dir,
                    startup_timeout=args.startup_timeout, cameras=args.cameras)


def cmd_monitor(args: argparse.Namespace) -> int:
    """``moge2-ros monitor``: see :mod:`moge2_ros.ros.monitor`."""
    from moge2_ros.ros.monitor import run_monitor

    return run_monitor(args.namespace, args.topics, input_topic=args.input, period=args.period,
                       window=args.window, duration=args.duration, count=args.count, timeout=args.timeout,
                       snapshot=args.snapshot)
