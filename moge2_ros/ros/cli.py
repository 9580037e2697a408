"""``moge2-ros demo``: the demo camera and ``moge2_node``, run and monitored (registered through ``add_parsers``).

No ROS at module level: the handler imports :mod:`moge2_ros.ros.run_demo` (rclpy), so ``moge2-ros --help`` works
without ROS.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from moge2_ros.cli_args import add_model_arguments, note, positive_float, positive_int

__all__ = ["add_parsers", "cmd_demo"]


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
    demo.add_argument("--log-dir", type=Path, metavar="DIR", help="where the processes' logs go (default: a temp dir)")
    demo.set_defaults(handler=cmd_demo)


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
                    startup_timeout=args.startup_timeout)
