#!/usr/bin/env python3
"""Several cameras, one node (issue 16): memory and throughput of one moge2_node serving N cameras against N
single-camera nodes, and batched against sequential inference.

    .venv/bin/python bench/bench_multi_camera.py                 # full run (~10 min on 2 cores)
    .venv/bin/python bench/bench_multi_camera.py --quick         # smoke run
    .venv/bin/python bench/bench_multi_camera.py --models demo --cameras 1 2

Table 1 (in this process, no ROS): N cameras' frames (320x240, each camera its own FramePipeline, outputs depth,
camera_info and points, K estimated) through the pipeline one by one (``FramePipeline.process`` N times) or as
one network batch (``process_batch``): median seconds per round over ``--repeats`` rounds, frames/s, and the
ratio sequential / batched.
Table 2 (processes): one node with N cameras against N nodes with one camera each; every camera gets a few frames
(so the model, its buffers and the frame-sized allocations exist), then the resident memory of the node
processes is read: VmRSS summed (counts shared pages once per process) and Pss summed (shared pages split
between the processes that map them: the memory the N processes really occupy together).
Table 3 (processes): every camera publishes at 30 Hz for ``--seconds`` s; frames/s the node(s) published in all
(depth/image received here), for one node with ``batch`` always / never and for N separate nodes.

Models: ``demo`` (the bundled demo model, 1.5 M parameters) and ``reference`` (../shared/reference/public/model.pt,
the official-format random-weight checkpoint), each at a fixed token budget (``--tokens``), CPU, the node's default
precision (auto).  All numbers of a table come from this run on this machine.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _harness import REFERENCE, REPO, log, machine_info, machine_line, rss_mb

WIDTH, HEIGHT = 320, 240
OUTPUTS = ("depth", "camera_info", "points")


def model_sources() -> dict[str, str]:
    from moge2_ros.assets import demo_model_path

    return {"demo": str(demo_model_path()), "reference": str(REFERENCE / "public" / "model.pt")}


# ---------------------------------------------------------------------------------------------- table 1
def frames(n: int) -> list[np.ndarray]:
    from moge2_ros.data.example import render_example_scene

    return [render_example_scene(WIDTH, HEIGHT, 70.0, camera_position=(0.1 * i, 0.0, 0.05 * i)).rgb for i in range(n)]


def inference_table(models: dict[str, str], tokens: dict[str, int], cameras: list[int], repeats: int) -> str:
    from moge2_ros.inference import PredictorOptions, load_predictor
    from moge2_ros.pipeline.frame import BatchItem, FrameConfig, FramePipeline, process_batch

    rows = ["| model | tokens | cameras | sequential s/round | batched s/round | sequential frames/s "
            "| batched frames/s | sequential / batched |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, source in models.items():
        predictor = load_predictor(PredictorOptions(model=source, device="cpu", precision="auto",
                                                    num_tokens=tokens[name]))
        for n in cameras:
            log(f"inference: {name}, {n} camera(s)")
            pipes = [FramePipeline(predictor, FrameConfig(intrinsics_source="estimate")) for _ in range(n)]
            images = frames(n)

            def sequential() -> None:
                for pipe, rgb in zip(pipes, images):
                    pipe.process(rgb, OUTPUTS)

            def batched() -> None:
                results = process_batch([BatchItem(pipe, rgb, OUTPUTS) for pipe, rgb in zip(pipes, images)])
                bad = [r for r in results if isinstance(r, Exception)]
                assert not bad, bad

            seq, bat = [], []
            sequential(), batched()  # warm-up
            for _ in range(repeats):  # interleaved, so that a change of load hits both alike
                t = time.perf_counter()
                sequential()
                seq.append(time.perf_counter() - t)
                t = time.perf_counter()
                batched()
                bat.append(time.perf_counter() - t)
            s, b = statistics.median(seq), statistics.median(bat)
            rows.append(f"| {name} | {tokens[name]} | {n} | {s:.3f} | {b:.3f} | {n / s:.2f} | {n / b:.2f} | "
                        f"{s / b:.2f} |")
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------------- processes
def pss_mb(pid: int) -> float:
    """Proportional set size of ``pid`` in MiB (``Pss`` of /proc/PID/smaps_rollup); NaN where unreadable."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


class Node:
    """One moge2_node process serving ``cameras`` in namespace ``ns``."""

    def __init__(self, model: str, tokens: int, ns: str, cameras: list[str], env: dict[str, str], log_path: Path,
                 batch: str = "auto") -> None:
        self.log_path = log_path
        self.log = log_path.open("wb")
        cams = "[" + ",".join(f"'{c}'" for c in cameras) + "]"
        args = [sys.executable, "-m", "moge2_ros.ros.node", "--ros-args", "-r", f"__ns:={ns}", "-p", f"model:={model}",
                "-p", f"num_tokens:={tokens}", "-p", "intrinsics_source:=estimate", "-p", f"cameras:={cams}",
                "-p", f"batch:={batch}", "-p", "input_qos:=reliable"]
        self.proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Graph:
    """This process's side: a publisher of ``<topic>/image`` and a counter of ``<topic>/depth/image`` per camera."""

    def __init__(self, topics: list[str]) -> None:
        import rclpy
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        self.node = rclpy.create_node(f"bench_multi_camera_{os.getpid()}")
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        self.pubs = {t: self.node.create_publisher(Image, f"{t}/image", qos) for t in topics}
        self.received: dict[str, list[float]] = {t: [] for t in topics}
        for t in topics:
            self.node.create_subscription(Image, f"{t}/depth/image",
                                          lambda msg, t=t: self.received[t].append(time.monotonic()), qos)

    def spin(self, seconds: float) -> None:
        import rclpy

        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(self.node, timeout_sec=max(0.0, min(0.02, end - time.monotonic())))

    def wait_connected(self, nodes: list[Node], timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while not all(p.get_subscription_count() > 0 for p in self.pubs.values()) or \
                not all(self.node.count_publishers(f"{t}/depth/image") > 0 for t in self.pubs):
            for n in nodes:
                if n.proc.poll() is not None:
                    raise RuntimeError(f"a node exited; see {n.log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError("the nodes did not connect")
            self.spin(0.1)

    def publish(self, topic: str, rgb: np.ndarray) -> None:
        from std_msgs.msg import Header

        from moge2_ros.ros.conversions import rgb_to_image

        header = Header(stamp=self.node.get_clock().now().to_msg(), frame_id="cam")
        self.pubs[topic].publish(rgb_to_image(header, rgb))

    def warm(self, images: list[np.ndarray], per_camera: int = 3, timeout: float = 180.0) -> None:
        """Until every camera got ``per_camera`` depth images back (one frame in flight per camera)."""
        deadline = time.monotonic() + timeout
        for t in self.pubs:
            self.received[t].clear()
        while any(len(v) < per_camera for v in self.received.values()):
            for i, t in enumerate(self.pubs):
                if len(self.received[t]) < per_camera:
                    self.publish(t, images[i % len(images)])
            self.spin(0.5)
            if time.monotonic() > deadline:
                raise RuntimeError(f"no outputs from every camera: {({t: len(v) for t, v in self.received.items()})}")

    def flood(self, images: list[np.ndarray], rate_hz: float, seconds: float) -> float:
        """Every camera at ``rate_hz`` for ``seconds``; returns the depth images per second received in all."""
        for t in self.pubs:
            self.received[t].clear()
        start = time.monotonic()
        i = 0
        while time.monotonic() - start < seconds:
            due = start + i / rate_hz
            self.spin(max(0.0, due - time.monotonic()))
            for n, t in enumerate(self.pubs):
                self.publish(t, images[n % len(images)])
            i += 1
        end = time.monotonic()
        self.spin(1.0)
        return sum(sum(1 for x in v if start <= x <= end) for v in self.received.values()) / (end - start)

    def close(self) -> None:
        self.node.destroy_node()


def run_setup(model: str, tokens: int, n: int, separate: bool, tmp: Path, env: dict[str, str], images: list[np.ndarray],
              flood_s: float, batch: str = "auto") -> dict[str, float]:
    """Start one node with ``n`` cameras (or ``n`` one-camera nodes), warm every camera, read the memory, then
    flood for ``flood_s`` seconds (0 = skip) and measure the output rate."""
    names = [f"cam{i}" for i in range(n)]
    if separate:
        nodes = [Node(model, tokens, f"/sep{i}", [""], env, tmp / f"sep{i}.log", batch) for i in range(n)]
        topics = [f"/sep{i}" for i in range(n)]
    else:
        nodes = [Node(model, tokens, "/one", names, env, tmp / "one.log", batch)]
        topics = [f"/one/{c}" for c in names]
    graph = Graph(topics)
    try:
        graph.wait_connected(nodes)
        graph.warm(images)
        graph.spin(1.0)
        rss = sum(rss_mb(node.proc.pid) or float("nan") for node in nodes)
        pss = sum(pss_mb(node.proc.pid) for node in nodes)
        rate = graph.flood(images, 30.0, flood_s) if flood_s > 0 else float("nan")
        return {"rss": rss, "pss": pss, "rate": rate}
    finally:
        graph.close()
        for node in nodes:
            node.stop()


def process_tables(models: dict[str, str], tokens: dict[str, int], cameras: list[int], flood_s: float,
                   tmp: Path) -> tuple[str, str]:
    import rclpy

    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(random.randint(150, 200)),
               ROS_LOG_DIR=str(tmp / "roslog"), TMPDIR=str(tmp))
    os.environ.update({k: env[k] for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "ROS_LOG_DIR")})
    rclpy.init()
    images = frames(4)
    memory = ["| model | cameras | one node: VmRSS MiB | N nodes: VmRSS MiB | one node: Pss MiB | N nodes: Pss MiB | "
              "Pss N nodes / one node |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    speed = ["| model | cameras | one node, batch always: frames/s | one node, batch never: frames/s "
             "| N nodes: frames/s |", "| --- | ---: | ---: | ---: | ---: |"]
    try:
        for name, source in models.items():
            for n in cameras:
                log(f"processes: {name}, {n} camera(s): one node (batch always)")
                one = run_setup(source, tokens[name], n, False, tmp, env, images, flood_s, "always")
                log(f"processes: {name}, {n} camera(s): one node (batch never)")
                never = run_setup(source, tokens[name], n, False, tmp, env, images, flood_s, "never") \
                    if n > 1 and flood_s > 0 else one
                log(f"processes: {name}, {n} camera(s): {n} node(s)")
                sep = run_setup(source, tokens[name], n, True, tmp, env, images, flood_s) if n > 1 else one
                memory.append(f"| {name} | {n} | {one['rss']:.0f} | {sep['rss']:.0f} | {one['pss']:.0f} | "
                              f"{sep['pss']:.0f} | {sep['pss'] / one['pss']:.2f} |")
                if flood_s > 0:
                    speed.append(f"| {name} | {n} | {one['rate']:.2f} | {never['rate']:.2f} | {sep['rate']:.2f} |")
    finally:
        rclpy.shutdown()
    return "\n".join(memory), "\n".join(speed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=("demo", "reference"), default=["demo", "reference"])
    parser.add_argument("--cameras", nargs="+", type=int, default=[1, 2, 4], help="camera counts (default 1 2 4)")
    parser.add_argument("--tokens-demo", type=int, default=600, help="token budget of the demo model (default 600)")
    parser.add_argument("--tokens-reference", type=int, default=1200,
                        help="token budget of the reference model (default 1200)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds per row of table 1 (default 5)")
    parser.add_argument("--seconds", type=float, default=10.0, help="flood length of table 3 (default 10; 0 = skip)")
    parser.add_argument("--no-processes", action="store_true", help="table 1 only")
    parser.add_argument("--quick", action="store_true", help="smoke run: demo model, 1 and 2 cameras, short")
    args = parser.parse_args()
    if args.quick:
        args.models, args.cameras, args.repeats, args.seconds = ["demo"], [1, 2], 2, 3.0
    all_models = model_sources()
    models = {m: all_models[m] for m in args.models}
    tokens = {"demo": args.tokens_demo, "reference": args.tokens_reference}
    print("# One node for several cameras\n")
    print(f"Command: `{shlex.join([Path(sys.executable).name, *sys.argv])}`  ")
    info = machine_info()
    print(f"Machine: {machine_line(info)}, {info['date']}, load average {os.getloadavg()[0]:.2f}  ")
    print(f"Images {WIDTH}x{HEIGHT}, K estimated, CPU, precision auto; tokens: "
          + ", ".join(f"{m} {tokens[m]}" for m in models) + "\n")
    print("## Batched vs sequential inference (in-process, FramePipeline)\n")
    print(inference_table(models, tokens, args.cameras, args.repeats) + "\n")
    if not args.no_processes:
        with tempfile.TemporaryDirectory(prefix="bench_multi_camera_") as tmp_name:
            memory, speed = process_tables(models, tokens, args.cameras, args.seconds, Path(tmp_name))
        print("## Resident memory: one node with N cameras vs N nodes\n")
        print(memory + "\n")
        if args.seconds > 0:
            print(f"## Throughput: every camera at 30 Hz for {args.seconds:.0f} s (depth images out per second, "
                  "all cameras)\n")
            print(speed + "\n")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
