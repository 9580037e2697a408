"""Metric scale anchors (issue 14) on real 7-Scenes frames: accuracy, flicker and cost.

    .venv/bin/python bench/bench_anchors.py --frames 40 --stride 3 --threads 1

The network (default: the bundled demo model; ``--model`` another checkpoint) predicts every frame with the known
RGB intrinsics.  Anchors are derived from the registered Kinect depth (read in place from
``../shared/data/sevenscenes-redkitchen``, research licence, never copied):

* ``lidar16``: a 16-line scan pattern (elevations -15..+15 deg every 2 deg, 0.2 deg azimuth steps over the image
  width) from a LiDAR 8 cm above the camera (points in its own x-forward frame + the extrinsic), 2 cm range
  noise, 2 % gross outliers (range x U(0.3, 3));
* ``range``: one rangefinder on the optical axis, 5 deg cone: the closest Kinect point in the cone;
* ``depth30``: the Kinect depth image with 70 % of its pixels removed (uniformly at random).

``lidar16`` and ``depth30`` run with the default settings (truncation / inlier threshold 15 % relative depth error,
50 % inliers, network per-frame scale noise 3 %) and with relaxed ones (``--relaxed``, default 50 %, 30 % inliers,
per-frame noise 10 %) for a network whose depth *shape* is far off (the bundled demo model on real frames: median
relative error 20-40 % even at the best scale).  The filter never smooths the network's own scale (without anchors
the filtered scale is the network's), so there is no "network, filtered" row.

Two tables: the model's predictions, and a simulated network (the Kinect geometry divided by 1.3 with a known
per-frame scale jitter, smooth distortion and noise: what the anchors recover from real sensor sampling when the
network's shape is good).  Rows: the network's own scale, each anchored mode per frame (``temporal=False``) and filtered (the Kalman filter,
stamps 30 Hz / stride), and the per-frame oracle scale (median ratio to the ground truth).  Metrics on the pixels
with ground truth: AbsRel and delta1 of the metric depth (mean over frames), the scale error
``|log(scale / oracle)|`` (median, %), frame-to-frame flicker = std of the differences of
``log(scale / oracle)`` between consecutive frames (%), anchored frames.  Cost: :meth:`ScaleAnchoring.update` with a
30,000-point cloud at 640x480 (wall and CPU time of this process), and mode ``complete`` (log-depth Poisson
completion of the 70 %-removed depth) at 640x480 on the CPU with its AbsRel on the removed pixels against the
scaled network alone.  Markdown on stdout, then one ``RESULT {json}`` machine line.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from _harness import SHARED, log, machine_info, machine_line

SEVENSCENES = SHARED / "data" / "sevenscenes-redkitchen"
#: LiDAR / rangefinder frame (x forward, y left, z up) -> camera optical frame (x right, y down, z forward)
FORWARD = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
LIDAR_T = np.array([0.0, -0.08, 0.0])  # 8 cm above the camera


def lidar16(gt: np.ndarray, k: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 16-line scan of the ground-truth depth, in the LiDAR frame (see the module docstring)."""
    h, w = gt.shape
    half_az = math.atan((w / 2) / k[0, 0])
    el = np.radians(np.arange(-15.0, 15.1, 2.0))[:, None]
    az = np.arange(-half_az, half_az, math.radians(0.2))[None, :]
    d = np.stack(np.broadcast_arrays(np.cos(el) * np.sin(az), -np.sin(el), np.cos(el) * np.cos(az)), -1)
    d = d.reshape(-1, 3)
    u = np.floor(k[0, 0] * d[:, 0] / d[:, 2] + k[0, 2] + 0.5).astype(int)
    v = np.floor(k[1, 1] * d[:, 1] / d[:, 2] + k[1, 2] + 0.5).astype(int)
    ok = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    d, u, v = d[ok], u[ok], v[ok]
    z = gt[v, u]
    ok = np.isfinite(z) & (z > 0)
    d, z = d[ok], z[ok]
    rng_m = z / d[:, 2] + 0.02 * rng.standard_normal(z.size)
    bad = rng.random(z.size) < 0.02
    rng_m[bad] *= rng.uniform(0.3, 3.0, int(bad.sum()))
    cam = d * rng_m[:, None]
    return (cam - LIDAR_T) @ FORWARD  # camera -> LiDAR frame (R^T (p - t))


def rangefinder(gt: np.ndarray, k: np.ndarray, fov: float) -> float:
    """The closest ground-truth point (distance from the camera centre) in a cone on the optical axis."""
    h, w = gt.shape
    v, u = np.mgrid[0:h, 0:w]
    x, y = (u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1]
    inside = np.hypot(x, y) <= math.tan(fov / 2)
    z = gt[inside]
    dist = (z * np.sqrt(1 + x[inside] ** 2 + y[inside] ** 2))[np.isfinite(z)]
    return float(dist.min()) if dist.size else math.inf


def simulated_network(gt: np.ndarray, k: np.ndarray, rng: np.random.Generator) -> tuple:
    """A stand-in network with a known error: ``(points (H, W, 3) float32, mask (H, W), scale)`` (see the table)."""
    import torch

    h, w = gt.shape
    field = torch.from_numpy(0.05 * rng.standard_normal((1, 1, 4, 5)))
    field = torch.nn.functional.interpolate(field, size=(h, w), mode="bicubic", align_corners=True)[0, 0].numpy()
    jitter = math.exp(0.03 * rng.standard_normal())
    depth = gt / 1.3 * jitter * np.exp(field) * (1 + 0.02 * rng.standard_normal(gt.shape))
    v, u = np.mgrid[0:h, 0:w]
    pts = np.stack([(u - k[0, 2]) / k[0, 0] * depth, (v - k[1, 2]) / k[1, 1] * depth, depth], -1)
    return pts.astype(np.float32), np.isfinite(depth), jitter


def depth_metrics(depth: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    m = np.isfinite(gt) & (gt > 0) & np.isfinite(depth) & (depth > 0)
    r = depth[m] / gt[m]
    return float(np.mean(np.abs(r - 1))), float(np.mean(np.maximum(r, 1 / r) < 1.25))


def flicker(log_err: list[float]) -> float:
    x = np.array([e for e in log_err if math.isfinite(e)])
    return float(np.std(np.diff(x))) if x.size > 2 else math.nan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SEVENSCENES)
    parser.add_argument("--model", default=None, help="model source (default: the bundled demo model)")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--start", type=int, default=0, help="first frame index")
    parser.add_argument("--stride", type=int, default=3, help="frame step (the sequence is 30 Hz)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--relaxed", type=float, default=0.5,
                        help="truncation / inlier threshold of the 'relaxed' rows (default 0.5; min inlier ratio 0.3)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)

    import torch

    from moge2_ros.anchors import (
        AnchorConfig,
        DepthImageAnchor,
        FitOptions,
        Extrinsic,
        PointCloudAnchor,
        RangeAnchor,
        ScaleAnchoring,
    )
    from moge2_ros.anchors.complete import complete_depth
    from moge2_ros.data.sevenscenes import SevenScenesDataset
    from moge2_ros.inference.factory import PredictorOptions, load_predictor

    torch.set_num_threads(args.threads)
    info = machine_info("cpu", threads=args.threads)
    indices = [args.start + i * args.stride for i in range(args.frames)]
    data = SevenScenesDataset(args.data, indices=indices)
    predictor = load_predictor(PredictorOptions(model=args.model, device="cpu"))
    rng = np.random.default_rng(args.seed)
    lidar_ex = Extrinsic.from_matrix(FORWARD, LIDAR_T)
    range_ex = Extrinsic.from_matrix(FORWARD)
    range_fov = math.radians(5.0)
    relaxed = FitOptions(trunc=args.relaxed, inlier_threshold=args.relaxed, min_inlier_ratio=0.3)
    modes = ("lidar16", "lidar16 relaxed", "range", "depth30", "depth30 relaxed")
    configs = {m: dict(fit=relaxed, network_frame_log_std=0.1) if m.endswith("relaxed") else {} for m in modes}
    nets = ("model", "simulated")
    single = {(n, m): ScaleAnchoring(AnchorConfig(temporal=False, **configs[m])) for n in nets for m in modes}
    filtered = {(n, m): ScaleAnchoring(AnchorConfig(**configs[m])) for n in nets for m in modes}
    tables: dict[str, dict[str, dict[str, list[float]]]] = {n: {} for n in nets}

    def record(net_name: str, name: str, scale: float, net_scale: float, pred_depth: np.ndarray, gt: np.ndarray,
               oracle: float, anchored: bool) -> None:
        absrel, d1 = depth_metrics(pred_depth * (scale / net_scale), gt)
        r = tables[net_name].setdefault(name, {"absrel": [], "delta1": [], "log_err": [], "anchored": []})
        r["absrel"].append(absrel)
        r["delta1"].append(d1)
        r["log_err"].append(math.log(scale / oracle))
        r["anchored"].append(float(anchored))

    predict_s, complete_s, complete_rel, scaled_rel = [], [], [], []
    last = None
    for i in range(len(data)):
        sample = data[i]
        gt = sample.depth.astype(np.float64)
        k = np.asarray(sample.intrinsics, dtype=np.float64)
        t0 = time.perf_counter()
        geometry = predictor.predict(sample.image, intrinsics=k)
        predict_s.append(time.perf_counter() - t0)
        stamp = indices[i] / 30.0
        holes = rng.random(gt.shape) < 0.7
        sparse = np.where(holes, np.nan, gt).astype(np.float32)
        anchors = {
            "lidar16": [PointCloudAnchor(lidar16(gt, k, rng), lidar_ex, stamp=stamp)],
            "range": [RangeAnchor(rangefinder(gt, k, range_fov), 0.3, 8.0, range_fov, range_ex, stamp=stamp)],
            "depth30": [DepthImageAnchor(sparse, stamp=stamp)],
        }
        anchors["lidar16 relaxed"], anchors["depth30 relaxed"] = anchors["lidar16"], anchors["depth30"]
        predictions = {
            "model": (geometry.points[0].numpy(), geometry.mask[0].numpy(), float(geometry.metric_scale[0])),
            "simulated": simulated_network(gt, k, rng),
        }
        for net_name, (pts, mask, net) in predictions.items():
            pred_depth = np.where(mask, pts[..., 2], np.nan)
            m = np.isfinite(gt) & (gt > 0) & np.isfinite(pred_depth) & (pred_depth > 0)
            oracle = net * float(np.median(gt[m] / pred_depth[m]))
            record(net_name, "network", net, net, pred_depth, gt, oracle, False)
            record(net_name, "oracle (median ratio to GT)", oracle, net, pred_depth, gt, oracle, True)
            for mode in modes:
                d = single[net_name, mode].update(pts, mask, k, net, anchors[mode], stamp=stamp)
                record(net_name, mode, d.applied_scale, net, pred_depth, gt, oracle, d.anchored)
                d = filtered[net_name, mode].update(pts, mask, k, net, anchors[mode], stamp=stamp)
                record(net_name, f"{mode}, filtered", d.applied_scale, net, pred_depth, gt, oracle, d.anchored)
                if net_name == "model" and mode == "depth30 relaxed":
                    scaled = pred_depth * d.factor
                    t0 = time.perf_counter()
                    done = complete_depth(sparse, scaled)
                    complete_s.append(time.perf_counter() - t0)
                    hm = holes & np.isfinite(gt) & (gt > 0) & np.isfinite(done) & np.isfinite(scaled)
                    complete_rel.append(float(np.mean(np.abs(done[hm] / gt[hm] - 1))))
                    scaled_rel.append(float(np.mean(np.abs(scaled[hm] / gt[hm] - 1))))
            if net_name == "model":
                last = (pts, mask, k, net, gt)
        log(f"{i + 1}/{len(data)} frame {indices[i]}: " + "; ".join(
            f"{n}: " + ", ".join(f"{mode} {tables[n][mode]['log_err'][-1]:+.3f}" for mode in ("network", *modes))
            for n in nets))

    # cost: a 30,000-point cloud at 640x480 (the last frame), one update per call
    pts, mask, k, net, gt = last
    v, u = np.nonzero(np.isfinite(gt))
    pick = rng.choice(v.size, 30_000, replace=False)
    z = gt[v[pick], u[pick]]
    cloud = np.stack([(u[pick] - k[0, 2]) / k[0, 0] * z, (v[pick] - k[1, 2]) / k[1, 1] * z, z], -1)
    cloud = (cloud - LIDAR_T) @ FORWARD
    timing = ScaleAnchoring(AnchorConfig())
    wall, cpu = [], []
    for j in range(120):
        w0, c0 = time.perf_counter(), time.process_time()
        timing.update(pts, mask, k, net, [PointCloudAnchor(cloud, lidar_ex)], stamp=j / 30)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    wall, cpu = wall[20:], cpu[20:]

    summary = {
        net_name: {
            name: {"absrel": statistics.mean(r["absrel"]), "delta1": statistics.mean(r["delta1"]),
                   "scale_err_pct": 100 * statistics.median(abs(e) for e in r["log_err"]),
                   "flicker_pct": 100 * flicker(r["log_err"]), "anchored": statistics.mean(r["anchored"])}
            for name, r in rows.items()
        }
        for net_name, rows in tables.items()
    }
    h, w = gt.shape
    cost = {"update_30k_wall_ms": 1e3 * statistics.median(wall), "update_30k_cpu_ms": 1e3 * statistics.median(cpu),
            "update_30k_wall_p95_ms": 1e3 * float(np.percentile(wall, 95)),
            "complete_ms": 1e3 * statistics.median(complete_s), "complete_absrel_holes": statistics.mean(complete_rel),
            "scaled_absrel_holes": statistics.mean(scaled_rel), "size": f"{w}x{h}",
            "predict_s": statistics.median(predict_s)}

    print("# Metric scale anchors on 7-Scenes redkitchen\n")
    print(f"Command: `{info['command']}`  ")
    print(f"Machine: {machine_line(info)}; load average at start {info['loadavg_start']}  ")
    print(f"Model: {args.model or 'bundled demo model'}; {len(data)} frames {indices[0]}..{indices[-1]} step "
          f"{args.stride} ({30 / args.stride:g} Hz), {w}x{h}, known K; predict {cost['predict_s']:.2f} s/frame\n")
    titles = {"model": f"Network: {args.model or 'the bundled demo model'}",
              "simulated": "Simulated network: the Kinect geometry / 1.3, times a per-frame scale jitter of 3 %, a "
                           "smooth 5 % depth distortion and 2 % per-pixel noise"}
    for net_name, rows in summary.items():
        print(f"\n{titles[net_name]}\n")
        print("| scale from | AbsRel | delta1 | scale error vs oracle (median) | flicker (std of d log s) | "
              "anchored frames |")
        print("|---|---|---|---|---|---|")
        for name, s in rows.items():
            print(f"| {name} | {s['absrel']:.4f} | {s['delta1']:.3f} | {s['scale_err_pct']:.2f} % | "
                  f"{s['flicker_pct']:.2f} % | {100 * s['anchored']:.0f} % |")
    print()
    print(f"Cost at {cost['size']}: `ScaleAnchoring.update` with a 30,000-point cloud: median "
          f"{cost['update_30k_wall_ms']:.2f} ms wall (p95 {cost['update_30k_wall_p95_ms']:.2f} ms), "
          f"{cost['update_30k_cpu_ms']:.2f} ms CPU time; mode `complete` (Poisson, scipy direct solver, CPU): "
          f"{cost['complete_ms']:.0f} ms, AbsRel on the removed 70 % of pixels {cost['complete_absrel_holes']:.4f} "
          f"vs {cost['scaled_absrel_holes']:.4f} for the network scaled by 'depth30 relaxed, filtered' alone.\n")
    result = {"machine": info, "frames": indices, "summary": summary, "cost": cost}
    print("RESULT " + json.dumps({"bench": "anchors", "summary": summary, "cost": cost}, default=float))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
