#!/usr/bin/env python3
"""Real cameras: depth accuracy of the frame pipeline on distorted, fisheye, binned and cropped images, with the
lens model HANDLED (the CameraInfo as the camera publishes it) vs IGNORED (the same CameraInfo with D zeroed: what
the node did before it rectified), against exact ground truth.

    .venv/bin/python bench/bench_cameras.py                                   # demo model + reference, ~10 min
    .venv/bin/python bench/bench_cameras.py --models demo --frames 2 --size 320x240   # smoke run, ~1 min

Each case is a camera of :class:`moge2_ros.data.synthetic_render.LensCamera` (plumb_bob with a strong barrel,
rational_polynomial, a 180 degree equidistant fisheye, a plumb_bob sensor read out as an ROI binned 2x2); each
frame is a view of the example room or a random room or street of the synthetic generator (``--scenes``,
alternating by default) rendered THROUGH the lens model
(:func:`~moge2_ros.data.synthetic_render.render_distorted`: one ray per distorted pixel centre, exact depth) and
run through ``FramePipeline(predictor).process(rgb, {"depth", "camera_info"}, camera_info=msg)``.

The ground truth is the exact depth of the camera the output is in, read off the published depth/camera_info: a
pinhole camera (no distortion, binning or ROI: the rectified view, K' = P[:3, :3]) is rendered exactly with its K
and size (:func:`~moge2_ros.data.synthetic_render.render_pinhole_depth`); a camera with distortion / binning / ROI
(outputs on the raw grid) is the lens render itself.  With D zeroed the output is on the raw image grid whatever
it says, so its ground truth is the lens render.  ``--grids rectified raw`` also runs the pipeline with
``output_grid=raw`` (when :class:`~moge2_ros.pipeline.frame.FrameConfig` has it).

Per frame: depth AbsRel ``mean(|d - gt| / gt)`` over pixels where both are valid (metric: the model's own scale),
the same after the per-frame median scale (``aligned``: the geometry alone, without the metric-scale error), and
coverage (share of ground-truth pixels with a prediction).  Tables: medians over frames.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from _harness import REFERENCE, log, machine_info, machine_line

CASES = ("plumb_bob", "rational_polynomial", "fisheye180", "roi_binned")


def make_camera(case: str, width: int, height: int):
    """The LensCamera of a case for an image of ``width x height`` (the binned case's sensor is twice that)."""
    from moge2_ros.data.synthetic_render import LensCamera

    s = width / 640.0
    cx, cy = (width - 1) / 2, (height - 1) / 2
    if case == "plumb_bob":  # strong barrel (a ~100 degree wide-angle lens)
        return LensCamera(width, height, [[400 * s, 0, cx + 3 * s], [0, 400 * s, cy - 2 * s], [0, 0, 1]],
                          d=(-0.35, 0.12, 1e-3, -5e-4, 0.0))
    if case == "rational_polynomial":
        return LensCamera(width, height, [[380 * s, 0, cx + 2 * s], [0, 381 * s, cy - 1.5 * s], [0, 0, 1]],
                          d=(0.8, -0.2, 1e-3, -5e-4, 0.05, 1.2, 0.1, 0.02), distortion_model="rational_polynomial")
    if case == "fisheye180":  # theta = 90 degrees at the left and right edges
        d = (0.02, -0.004, 5e-4, 0.0)
        half = math.pi / 2
        theta_d = half * (1 + d[0] * half ** 2 + d[1] * half ** 4 + d[2] * half ** 6 + d[3] * half ** 8)
        f = cx / theta_d
        return LensCamera(width, height, [[f, 0, cx], [0, f, cy], [0, 0, 1]], d=d, distortion_model="equidistant")
    if case == "roi_binned":  # a 2x sensor, read out as its central 80 % binned 2x2
        sw, sh = 2 * width, 2 * height
        rw, rh = (int(0.8 * sw) // 4) * 4, (int(0.8 * sh) // 4) * 4
        return LensCamera(sw, sh, [[800 * s, 0, (sw - 1) / 2 + 4 * s], [0, 800 * s, (sh - 1) / 2 - 3 * s], [0, 0, 1]],
                          d=(-0.25, 0.07, 5e-4, 0.0, 0.0), binning_x=2, binning_y=2,
                          roi=((sw - rw) // 2, (sh - rh) // 2, rw, rh))
    raise ValueError(case)


def ray_error_deg(camera) -> np.ndarray:
    """Angle (degrees) between each pixel's true ray and the ray its K gives when D is ignored, over the full
    sensor's pixels inside the ROI: the geometric error of ignoring the lens, whatever the depth."""
    from moge2_ros.data.synthetic_render import lens_rays

    rays, ok = lens_rays(camera.k, camera.d, camera.distortion_model, camera.width, camera.height)
    x0, y0, rw, rh = camera.roi_box
    rays, ok = rays[y0:y0 + rh, x0:x0 + rw], ok[y0:y0 + rh, x0:x0 + rw]
    k = camera.k
    jj, ii = np.meshgrid(np.arange(x0, x0 + rw, dtype=np.float64), np.arange(y0, y0 + rh, dtype=np.float64))
    b = (ii - k[1, 2]) / k[1, 1]
    pin = np.stack([(jj - k[0, 2] - k[0, 1] * b) / k[0, 0], b, np.ones_like(b)], axis=-1)
    cos = (rays * pin).sum(-1) / (np.linalg.norm(rays, axis=-1) * np.linalg.norm(pin, axis=-1))
    return np.degrees(np.arccos(np.clip(cos[ok], -1.0, 1.0)))


def zero_d(info):
    """The CameraInfo fields with D zeroed (distortion ignored)."""
    from types import SimpleNamespace

    fields = dict(vars(info))
    fields["d"] = [0.0] * len(info.d)
    return SimpleNamespace(**fields)


def render_frames(cases, count: int, width: int, height: int, seed: int, scenes_from: str) -> dict:
    """``{case: [(scene, pose, DistortedRender), ...]}``: ``count`` scenes seen through each case's lens.

    ``scenes_from``: ``example`` (the example room, :func:`moge2_ros.data.example.example_room`, from varied
    positions and directions), ``generator`` (random rooms and streets alternating) or ``both`` (alternating)."""
    from moge2_ros.data.example import example_room
    from moge2_ros.data.synthetic import camera_pose, frame_rng, sample_camera, sample_scene
    from moge2_ros.data.synthetic_render import render_distorted

    scenes = []
    room = example_room()
    for i in range(count):
        rng = frame_rng(seed, i)
        use_example = scenes_from == "example" or (scenes_from == "both" and i % 2 == 0)
        if use_example:  # inside x in [-2, 2], y in [-1.5, 1.2], z < 7 (open behind z = 0: sky there)
            position = (rng.uniform(-0.8, 0.8), rng.uniform(-0.3, 0.5), rng.uniform(0.3, 1.5))
            pose = camera_pose(position, yaw=rng.uniform(-0.35, 0.35), pitch=rng.uniform(-0.15, 0.1),
                               roll=rng.uniform(-0.05, 0.05))
            scenes.append((room, pose))
        else:
            j = i if scenes_from == "generator" else i // 2
            scene, info = sample_scene(rng, family=("room", "street")[j % 2])
            _, pose, _ = sample_camera(rng, info, width, height)
            scenes.append((scene, pose))
    frames: dict = {}
    for case in cases:
        camera = make_camera(case, width, height)
        frames[case] = []
        for i, (scene, pose) in enumerate(scenes):
            t0 = time.perf_counter()
            frames[case].append((scene, pose, render_distorted(scene, camera, pose)))
            log(f"render {case} {i + 1}/{count} ({time.perf_counter() - t0:.1f} s)")
    return frames


def _roi_tuple(roi) -> tuple[int, int, int, int]:
    if isinstance(roi, (tuple, list)):
        return tuple(int(v) for v in roi)
    return int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height)


def truth_for(published, scene, pose, render, mode: str, cache: dict) -> tuple[np.ndarray, str]:
    """Exact depth of the camera a published depth/camera_info describes, and its name."""
    from moge2_ros.data.synthetic_render import LensCamera, render_distorted, render_pinhole_depth

    if mode == "ignored":  # the pipeline thinks it is a pinhole, but the pixels are the lens's
        return render.depth, "raw grid (as pinhole)"
    d = np.asarray(published.d, dtype=np.float64)
    roi = _roi_tuple(published.roi)
    k = np.asarray(published.k, dtype=np.float64).reshape(3, 3)
    if d.any() or max(published.binning_x, published.binning_y) > 1 or any(roi):
        cam = render.camera
        same = (np.array_equal(k, cam.k) and np.array_equal(d, np.asarray(cam.d)) and
                (published.width, published.height) == (cam.width, cam.height) and
                published.distortion_model == cam.distortion_model and roi == tuple(cam.roi))
        if same:
            return render.depth, "raw grid"
        key = ("lens", k.tobytes(), d.tobytes(), published.width, published.height, roi)
        if key not in cache:
            lens = LensCamera(int(published.width), int(published.height), k, d=tuple(d),
                              distortion_model=published.distortion_model, binning_x=int(published.binning_x),
                              binning_y=int(published.binning_y), roi=roi)
            cache[key] = render_distorted(scene, lens, pose, shadows=False).depth
        return cache[key], "raw grid (other)"
    key = ("pinhole", k.tobytes(), published.width, published.height)
    if key not in cache:
        cache[key] = render_pinhole_depth(scene, k, pose, int(published.width), int(published.height))
    fov = 2 * math.degrees(math.atan(published.width / 2 / k[0, 0]))
    return cache[key], f"pinhole {published.width}x{published.height} f={k[0, 0]:.1f} ({fov:.0f} deg)"


def depth_errors(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float, float]:
    """``(AbsRel, median-scale-aligned AbsRel, coverage)``."""
    gt_ok = np.isfinite(gt) & (gt > 0)
    both = gt_ok & np.isfinite(pred) & (pred > 0)
    if not both.any():
        return math.nan, math.nan, 0.0
    p, g = pred[both].astype(np.float64), gt[both].astype(np.float64)
    rel = float(np.mean(np.abs(p - g) / g))
    scaled = p * float(np.median(g / p))
    return rel, float(np.mean(np.abs(scaled - g) / g)), float(both.sum() / max(1, gt_ok.sum()))


def run_model(label: str, predictor, frames: dict, grids: list[str], oracle: bool) -> list[dict]:
    from moge2_ros.data.synthetic_render import LensCamera, render_rectified
    from moge2_ros.io.msg_codec import decode_depth
    from moge2_ros.pipeline.frame import FrameConfig, FramePipeline

    has_grid = "output_grid" in getattr(FrameConfig, "__dataclass_fields__", {})
    modes = [("handled", "rectified")] + [("handled", "raw")] * ("raw" in grids and has_grid) + [("ignored", None)]
    if oracle:
        modes.append(("oracle", None))
    rows = []
    for case, items in frames.items():
        for mode, grid in modes:
            config = FrameConfig(output_grid=grid) if (grid and has_grid) else FrameConfig()
            pipeline = FramePipeline(predictor, config)
            per = []
            for scene, pose, render in items:
                cache: dict = {}
                rgb = render.rgb
                if mode == "oracle":  # the exact rectified image with its pinhole CameraInfo: perfect rectification
                    k_rect, rw, rh = render.camera.rectified()
                    exact = render_rectified(scene, render.camera, pose)
                    rgb, msg = exact.image, LensCamera(rw, rh, k_rect).camera_info()
                    cache[("pinhole", np.asarray(msg.k, dtype=np.float64).reshape(3, 3).tobytes(), rw, rh)] = exact.depth
                else:
                    msg = render.camera_info if mode == "handled" else zero_d(render.camera_info)
                t0 = time.perf_counter()
                out = pipeline.process(rgb, {"depth", "camera_info"}, camera_info=msg)
                seconds = time.perf_counter() - t0
                pred = decode_depth(out.depth)
                gt, where = truth_for(out.camera_info, scene, pose, render, mode, cache)
                if gt.shape != pred.shape:
                    raise SystemExit(f"{case} {mode}: output {pred.shape} vs ground truth {gt.shape} ({where})")
                rel, aligned, cov = depth_errors(pred, gt)
                note = ""
                if out.intrinsics_estimated:
                    note = f"K estimated: {out.intrinsics_error}"
                elif getattr(out, "camera_note", None):
                    note = str(out.camera_note)
                per.append(dict(rel=rel, aligned=aligned, cov=cov, where=where, note=note, s=seconds))
                log(f"{label} {case} {mode}{'/' + grid if grid else ''}: AbsRel {rel:.4f} "
                    f"aligned {aligned:.4f} coverage {cov:.3f} [{where}] {note} ({seconds:.1f} s)")
            name = {"ignored": "ignored", "oracle": "exact rectified in"}.get(mode, f"handled ({grid})")
            rows.append(dict(model=label, case=case, mode=name,
                             rel=statistics.median(r["rel"] for r in per),
                             aligned=statistics.median(r["aligned"] for r in per),
                             cov=statistics.median(r["cov"] for r in per), where=per[0]["where"],
                             note="; ".join(sorted({r["note"] for r in per if r["note"]}))[:160],
                             s=statistics.median(r["s"] for r in per), n=len(per)))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["demo", "reference"], choices=["demo", "reference"],
                        help="bundled demo model and/or the reference checkpoint (../shared/reference/public/model.pt)")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--frames", type=int, default=4, help="scenes per case (default 4)")
    parser.add_argument("--reference-frames", type=int, default=None, help="scenes for the reference model "
                        "(default: --frames)")
    parser.add_argument("--size", default="640x480", help="image size WxH (default 640x480)")
    parser.add_argument("--reference-tokens", type=int, default=1200, help="reference model tokens (default 1200)")
    parser.add_argument("--grids", nargs="+", default=["rectified", "raw"], choices=["rectified", "raw"],
                        help="output grids of the handled runs (default both)")
    parser.add_argument("--no-oracle", action="store_true",
                        help="skip the run on the exact rectified image (perfect rectification, for reference)")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--scenes", default="both", choices=["both", "example", "generator"],
                        help="example room views, generator rooms/streets, or both alternating (default)")
    args = parser.parse_args()

    import torch

    from moge2_ros.inference.factory import PredictorOptions, load_predictor

    width, height = (int(v) for v in args.size.lower().split("x"))
    info = machine_info("cpu")
    started = time.perf_counter()
    frames = render_frames(args.cases, args.frames, width, height, args.seed, args.scenes)
    rows: list[dict] = []
    for name in args.models:
        if name == "demo":
            predictor = load_predictor(PredictorOptions())
            label = f"demo ({predictor.num_tokens} tokens)"
            use = frames
        else:
            path = REFERENCE / "public" / "model.pt"
            predictor = load_predictor(PredictorOptions(model=str(path), num_tokens=args.reference_tokens))
            label = f"reference ViT-S ({predictor.num_tokens} tokens)"
            n = args.reference_frames or args.frames
            use = {case: items[:n] for case, items in frames.items()}
        rows += run_model(label, predictor, use, args.grids, not args.no_oracle)

    print("# Real cameras: lens model handled vs ignored\n")
    print(f"Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`  ")
    print(f"Machine: {machine_line(info)}  ")
    print(f"Images {width}x{height} (roi_binned: a {2 * width}x{2 * height} sensor, 80 % ROI, 2x2 binning), "
          f"scenes {args.scenes}, seed {args.seed}, CPU fp32, torch threads {torch.get_num_threads()}, "
          f"{time.perf_counter() - started:.0f} s in all\n")
    cams = {case: make_camera(case, width, height) for case in args.cases}
    print("| case | model | D | image | rectified P (f, fov) | ray error when D is ignored: median / p95 / max |")
    print("|---|---|---|---|---|---|")
    for case, cam in cams.items():
        w, h = cam.image_size
        k_rect, rw, _ = cam.rectified()
        fov = 2 * math.degrees(math.atan(rw / 2 / k_rect[0, 0]))
        err = ray_error_deg(cam)
        print(f"| {case} | {cam.distortion_model} | {', '.join(f'{v:g}' for v in cam.d)} | {w}x{h} | "
              f"{k_rect[0, 0]:.1f}, {fov:.0f} deg | {np.median(err):.1f} / {np.percentile(err, 95):.1f} / "
              f"{err.max():.1f} deg |")
    print()
    print("Depth AbsRel, median over frames (metric / after per-frame median scale):\n")
    order = {"handled (rectified)": 0, "handled (raw)": 1, "ignored": 2, "exact rectified in": 3}
    modes = sorted({r["mode"] for r in rows}, key=lambda m: (order.get(m, 9), m))
    models = list(dict.fromkeys(r["model"] for r in rows))
    print("| case | " + " | ".join(f"{m}: {mode}" for m in models for mode in modes) + " |")
    print("|---|" + "---|" * (len(models) * len(modes)))
    for case in args.cases:
        cells = []
        for m in models:
            for mode in modes:
                r = next((r for r in rows if r["case"] == case and r["model"] == m and r["mode"] == mode), None)
                cells.append("-" if r is None else f"{r['rel']:.3f} / {r['aligned']:.3f}")
        print(f"| {case} | " + " | ".join(cells) + " |")
    print()
    print("| model | case | run | frames | AbsRel | aligned | coverage | output camera (ground truth) | s/frame | note |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['case']} | {r['mode']} | {r['n']} | {r['rel']:.4f} | {r['aligned']:.4f} | "
              f"{r['cov']:.3f} | {r['where']} | {r['s']:.1f} | {r['note']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
