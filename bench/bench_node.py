#!/usr/bin/env python3
"""Node benchmark of moge2_ros: per-stage costs of one frame, end-to-end latency, and a soak with RSS growth.

    .venv/bin/python bench/bench_node.py                      # full run (stages, 20 s end-to-end, 60 s soak)
    .venv/bin/python bench/bench_node.py --quick              # smoke run
    .venv/bin/python bench/bench_node.py --model path/to/model.pt --tokens 1200

Table 1 times every stage of the node's per-frame path in this process (no transport; with the node's heap
setting, :func:`moge2_ros.ros.host_memory.keep_freed_memory`): decode of the input
message, preprocessing, the network, post-processing (``predict`` minus network minus preprocessing), the copies
to numpy, each output message conversion, and ``publish()`` of each output with one subscriber present.
Table 2 runs the real node as a process, publishes rgb8 frames stamped with the publisher's clock at the given
rate and measures, in the subscriber, ``receive time - input stamp`` of ``depth/image``.
Table 3 (soak) feeds the node at full input rate and samples its resident memory (VmRSS) once per second.
Medians are over ``--repeats`` runs after warm-up; all numbers come from this run.
"""

from __future__ import annotations

import argparse
import io
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import rclpy
import torch
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header

from moge2_ros import Predictor, load_model
from moge2_ros.data.example import render_example_scene
from moge2_ros.demo import make_demo_model
from moge2_ros.inference.preprocess import image_to_batch
from moge2_ros.ros import conversions as conv
from moge2_ros.ros.host_memory import keep_freed_memory

from _harness import log, machine_info, machine_line, rss_mb


def timeit(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> float:
    """Median milliseconds of ``fn()``."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return 1e3 * statistics.median(samples)


# ================================================================================================ stages


def stage_table(model_path: str, tokens: int, sizes: list[tuple[int, int]], repeats: int) -> str:
    reuse = keep_freed_memory()  # as moge2_node does at start-up
    log(f"freed host buffers kept in the heap (mallopt): {reuse}")
    model = load_model(model_path)
    predictor = Predictor(model, num_tokens=tokens, edge_rtol=0.04)
    rclpy.init()
    node = rclpy.create_node("bench_node_publisher")
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    pubs = {name: node.create_publisher(kind, f"bench/{name}", qos) for name, kind in
            (("depth", Image), ("info", CameraInfo), ("points", PointCloud2), ("normals", Image), ("mask", Image),
             ("colorized", Image))}
    subs = [node.create_subscription(pub.msg_type, pub.topic_name, lambda m: None, qos) for pub in pubs.values()]
    assert subs
    rows = []
    for width, height in sizes:
        log(f"stages at {width}x{height}")
        scene = render_example_scene(width, height)
        header = Header(frame_id="camera_optical_frame")
        raw = conv.rgb_to_image(header, scene.rgb)
        from PIL import Image as PILImage

        buf = io.BytesIO()
        PILImage.fromarray(scene.rgb).save(buf, format="JPEG", quality=90)
        compressed = CompressedImage(header=header, format="jpeg", data=buf.getvalue())
        rgb = conv.image_to_rgb(raw)
        batch = image_to_batch(rgb, predictor.device)
        t = {}
        t["decode rgb8 Image"] = timeit(lambda: conv.image_to_rgb(raw), repeats)
        t["decode JPEG CompressedImage"] = timeit(lambda: conv.compressed_to_rgb(compressed), repeats)
        t["preprocess (to tensor)"] = timeit(lambda: image_to_batch(rgb, predictor.device), repeats)
        model_ms = timeit(lambda: predictor.forward_raw(batch), repeats)
        raw_out = predictor.forward_raw(batch)
        t["post-process (focal/shift, scale, mask, edges, normals)"] = timeit(lambda: predictor.postprocess(raw_out), repeats)
        geo = predictor.predict(rgb)
        t["tensors to numpy"] = timeit(lambda: (geo.depth[0].cpu().numpy(), geo.points[0].cpu().numpy(),
                                                geo.normal[0].cpu().numpy(), geo.mask[0].cpu().numpy()), repeats)
        depth, points = geo.depth[0].numpy(), geo.points[0].numpy()
        normal, mask = geo.normal[0].numpy(), geo.mask[0].numpy()
        k = geo.intrinsics[0].numpy().astype(np.float64)
        msgs = {
            "depth": conv.depth_to_image(header, depth), "info": conv.make_camera_info(header, k, width, height),
            "points": conv.points_to_cloud(header, points, rgb), "normals": conv.normals_to_image(header, normal),
            "mask": conv.mask_to_image(header, mask), "colorized": conv.colorize_depth_to_image(header, depth),
        }
        t["convert depth/image (32FC1)"] = timeit(lambda: conv.depth_to_image(header, depth), repeats)
        t["convert depth/camera_info"] = timeit(lambda: conv.make_camera_info(header, k, width, height), repeats)
        t["convert points (organized, rgb)"] = timeit(lambda: conv.points_to_cloud(header, points, rgb), repeats)
        t["convert normals (32FC3)"] = timeit(lambda: conv.normals_to_image(header, normal), repeats)
        t["convert mask (mono8)"] = timeit(lambda: conv.mask_to_image(header, mask), repeats)
        t["convert depth/colorized (bgr8)"] = timeit(lambda: conv.colorize_depth_to_image(header, depth), repeats)
        for name, msg in msgs.items():
            t[f"publish {name}"] = timeit(lambda p=pubs[name], m=msg: p.publish(m), repeats)
        rows.append(((width, height), model_ms, t))
    node.destroy_node()
    rclpy.shutdown()

    names = list(rows[0][2])
    lines = ["| stage (median ms) | " + " | ".join(f"{w}x{h}" for (w, h), _, _ in rows) + " |",
             "| --- | " + " | ".join("---:" for _ in rows) + " |"]
    lines.append("| network forward (model) | " + " | ".join(f"{m:.1f}" for _, m, _ in rows) + " |")
    for name in names:
        lines.append(f"| {name} | " + " | ".join(f"{t[name]:.2f}" for _, _, t in rows) + " |")
    core = [n for n in names if not n.startswith("decode JPEG") and not n.startswith("convert depth/colorized")
            and n != "publish colorized"]
    lines.append("| **everything except the model** (raw input, no preview) | "
                 + " | ".join(f"**{sum(t[n] for n in core):.1f}**" for _, _, t in rows) + " |")
    lines.append("| everything except the model, with JPEG input and the preview | "
                 + " | ".join(f"{sum(t.values()) - t['decode rgb8 Image']:.1f}" for _, _, t in rows) + " |")
    return "\n".join(lines)


# ================================================================================================ processes


class NodeProcess:
    """moge2_node as a child process in an isolated ROS domain."""

    def __init__(self, model: str, tokens: int, env: dict[str, str], log_path: Path) -> None:
        self.log = log_path.open("wb")
        args = [sys.executable, "-m", "moge2_ros.ros.node", "--ros-args", "-r", "__ns:=/bench", "-p", f"model:={model}",
                "-p", f"num_tokens:={tokens}", "-p", "intrinsics_source:=estimate"]
        self.proc = subprocess.Popen(args, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def rss_mb(self) -> float:
        value = rss_mb(self.proc.pid)
        return float("nan") if value is None else value

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(2)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def stream(model: str, tokens: int, width: int, height: int, rate_hz: float, seconds: float, sample_rss: bool,
           tmp: Path) -> dict[str, Any]:
    """Publish frames at ``rate_hz`` into a node process for ``seconds``; latency of depth/image and RSS samples."""
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(150 + os.getpid() % 50),
               ROS_LOG_DIR=str(tmp / "roslog"), TMPDIR=str(tmp))
    os.environ.update({k: env[k] for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "ROS_LOG_DIR")})
    node_proc = NodeProcess(model, tokens, env, tmp / "node.log")
    rclpy.init()
    node = rclpy.create_node("bench_node_stream")
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    pub = node.create_publisher(Image, "/bench/image", qos)
    latencies: list[tuple[float, float]] = []  # (time since start, latency s)
    start = time.monotonic()

    def on_depth(msg: Image) -> None:
        now_ns = node.get_clock().now().nanoseconds
        stamp_ns = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        latencies.append((time.monotonic() - start, (now_ns - stamp_ns) * 1e-9))

    node.create_subscription(Image, "/bench/depth/image", on_depth, qos)
    scene = render_example_scene(width, height)
    rss: list[tuple[float, float]] = []
    sent = 0
    try:
        deadline = time.monotonic() + 60
        while pub.get_subscription_count() == 0 or node.count_publishers("/bench/depth/image") == 0:
            rclpy.spin_once(node, timeout_sec=0.1)
            if time.monotonic() > deadline or node_proc.proc.poll() is not None:
                raise RuntimeError(f"node did not come up; see {tmp / 'node.log'}")
        start = time.monotonic()
        next_t, next_rss = start, start
        while time.monotonic() - start < seconds:
            now = time.monotonic()
            if now >= next_t:
                header = Header(stamp=node.get_clock().now().to_msg(), frame_id="camera_optical_frame")
                pub.publish(conv.rgb_to_image(header, scene.rgb))
                sent += 1
                next_t += 1.0 / rate_hz
            if sample_rss and now >= next_rss:
                rss.append((now - start, node_proc.rss_mb()))
                next_rss += 1.0
            rclpy.spin_once(node, timeout_sec=max(0.0, min(next_t, next_rss if sample_rss else next_t) - time.monotonic()))
    finally:
        node.destroy_node()
        rclpy.shutdown()
        node_proc.stop()
    return {"sent": sent, "latencies": latencies, "rss": rss, "seconds": seconds}


def latency_table(results: list[tuple[str, dict[str, Any]]]) -> str:
    lines = ["| run | input Hz | frames sent | depth msgs | output Hz | latency p50 ms | p95 ms | p99 ms | max ms |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for label, r in results:
        lat = np.array([x[1] for x in r["latencies"]]) * 1e3
        if lat.size == 0:
            lines.append(f"| {label} | {r['sent'] / r['seconds']:.1f} | {r['sent']} | 0 | 0 | – | – | – | – |")
            continue
        lines.append(f"| {label} | {r['sent'] / r['seconds']:.1f} | {r['sent']} | {lat.size} | {lat.size / r['seconds']:.1f} | "
                     f"{np.percentile(lat, 50):.0f} | {np.percentile(lat, 95):.0f} | {np.percentile(lat, 99):.0f} | {lat.max():.0f} |")
    return "\n".join(lines)


def soak_table(r: dict[str, Any], warmup_s: float = 5.0) -> str:
    rss = [(t, m) for t, m in r["rss"] if t >= warmup_s]
    lat = [(t, l) for t, l in r["latencies"]]
    first = [l for t, l in lat if t < 10.0]
    last = [l for t, l in lat if t > r["seconds"] - 10.0]
    lines = ["| soak | value |", "| --- | ---: |",
             f"| duration / input rate | {r['seconds']:.0f} s / {r['sent'] / r['seconds']:.1f} Hz |",
             f"| depth messages received | {len(lat)} |"]
    if len(rss) >= 2:
        growth = rss[-1][1] - rss[0][1]
        minutes = (rss[-1][0] - rss[0][0]) / 60.0
        lines += [f"| node RSS after {warmup_s:.0f} s warm-up | {rss[0][1]:.0f} MB |",
                  f"| node RSS at the end | {rss[-1][1]:.0f} MB |",
                  f"| node RSS max | {max(m for _, m in rss):.0f} MB |",
                  f"| growth | {growth:+.1f} MB ({growth / minutes:+.1f} MB/min) |"]
        half = r["seconds"] / 2.0
        second_half = [(t, m) for t, m in rss if t >= half]
        if len(second_half) >= 2:
            lines.append(f"| growth over the second half ({half:.0f}-{r['seconds']:.0f} s) | "
                         f"{second_half[-1][1] - second_half[0][1]:+.1f} MB |")
        marks = [m for t, m in rss if t >= 60.0]
        per_minute = [next(m for t, m in rss if t >= 60.0 * k) for k in range(1, int(rss[-1][0] // 60) + 1)] if marks else []
        if per_minute:
            lines.append("| RSS at each full minute | " + " / ".join(f"{m:.0f}" for m in per_minute) + " MB |")
    if first and last:
        lines.append(f"| latency p50 first 10 s / last 10 s | {1e3 * np.median(first):.0f} / {1e3 * np.median(last):.0f} ms |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model source (default: the untrained demo model, built in a temp dir)")
    parser.add_argument("--tokens", type=int, default=1200, help="ViT token budget (default 1200)")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per stage (default 20; 0 = skip the stage table)")
    parser.add_argument("--e2e-seconds", type=float, default=20.0, help="end-to-end run length (default 20; 0 = skip)")
    parser.add_argument("--e2e-rate", type=float, default=10.0, help="end-to-end input rate in Hz (default 10)")
    parser.add_argument("--soak-seconds", type=float, default=60.0, help="soak length (default 60; 0 = skip)")
    parser.add_argument("--soak-rate", type=float, default=30.0, help="soak input rate in Hz (default 30)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 640x480 only, few repeats, short runs")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.e2e_seconds, args.soak_seconds = 3, 5.0, 8.0
    sizes = [(640, 480)] if args.quick else [(640, 480), (1280, 720)]
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="bench_node_") as tmp_name:
        tmp = Path(tmp_name)
        model = args.model or str(make_demo_model(tmp / "demo_model.pt"))
        print("# moge2_node benchmark\n")
        print(f"Command: `{shlex.join([Path(sys.executable).name, *sys.argv])}`  ")
        info = machine_info()
        print(f"Machine: {machine_line(info)}, {info['date']}  ")
        print(f"Model: {'untrained demo model (MoGe2Config.tiny)' if not args.model else args.model}, "
              f"{args.tokens} tokens, CPU fp32, edge filter on\n")
        if args.repeats > 0:
            print("## Per-stage cost of one frame (in-process)\n")
            print(stage_table(model, args.tokens, sizes, args.repeats) + "\n")
        if args.e2e_seconds > 0:
            log("end-to-end run")
            e2e = stream(model, args.tokens, 640, 480, args.e2e_rate, args.e2e_seconds, False, tmp)
            print("## End-to-end latency through the node process (640x480 rgb8 in, depth/image out)\n")
            print(latency_table([(f"{args.e2e_rate:g} Hz for {args.e2e_seconds:.0f} s", e2e)]) + "\n")
        if args.soak_seconds > 0:
            log("soak run")
            soak = stream(model, args.tokens, 640, 480, args.soak_rate, args.soak_seconds, True, tmp)
            print(f"## Soak: {args.soak_seconds:.0f} s at {args.soak_rate:g} Hz input\n")
            print(soak_table(soak) + "\n")
            print(latency_table([("soak", soak)]) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
