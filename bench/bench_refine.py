#!/usr/bin/env python3
"""Benchmark of the real-data refinement (``moge2_ros.refine``): a controlled test with exact truth, Poisson solver
timing and a 7-Scenes run.  Prints Markdown tables to stdout (progress on stderr)::

    .venv/bin/python bench/bench_refine.py synthetic --frames 8                  # controlled test, 640x480
    .venv/bin/python bench/bench_refine.py synthetic --frames 2 --size 320 240   # smoke run
    .venv/bin/python bench/bench_refine.py poisson                               # 640x480, 30 % unknowns
    .venv/bin/python bench/bench_refine.py sevenscenes --model MODEL.pt --frames 20 --images docs/images

* ``synthetic``: frames of :class:`moge2_ros.data.synthetic.SyntheticDataset` (exact depth), corrupted like a real
  sensor by :func:`moge2_ros.refine.corrupt.corrupt_depth` (1-3 px registration error, edge bleeding, outliers,
  holes, sensor shadow, noise); the "model" is the exact geometry with a 10 % global scale error and a 3 % smooth
  distortion (:func:`~moge2_ros.refine.corrupt.simulate_prediction`).  Reports the filter's precision / recall
  against the known corrupted pixels, AbsRel of raw vs refined depth overall and within 3 px of depth edges,
  boundary F1, label coverage and time per frame.
* ``poisson``: both solvers (scipy direct, torch multigrid-started PCG) on a 640x480 problem with 30 % unknowns
  in blobs; their agreement and time.
* ``sevenscenes``: real Kinect frames (read in place from ``../shared/data/sevenscenes-redkitchen``) refined with
  the given model (``--model``; default: the bundled demo model).
  Reports % filtered, % filled, time per frame, and a hold-out completion test: 10 % of the kept real pixels (in
  blobs) are hidden, filled by the Poisson completion with the model as guide, and compared with the hidden real
  depth (AbsRel), next to the model's depth aligned by one global scale.  ``--images DIR`` writes before/after
  PNGs (depth and provenance) of the first frame.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from _harness import SHARED, log

SEVENSCENES = SHARED / "data" / "sevenscenes-redkitchen"


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


# ---------------------------------------------------------------------------------------------- synthetic


def _refine_config(args: argparse.Namespace) -> Any:
    from moge2_ros.refine.filter import FilterConfig
    from moge2_ros.refine.pipeline import RefineConfig

    overrides = json.loads(args.filter_config) if args.filter_config else {}
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    return RefineConfig(filter=FilterConfig(**overrides), solver=args.solver)


def run_synthetic(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from moge2_ros.data.synthetic import SyntheticDataset
    from moge2_ros.geometry.intrinsics import pixel_to_normalized_intrinsics
    from moge2_ros.geometry.projection import depth_to_points
    from moge2_ros.refine.corrupt import corrupt_depth, score_refinement, simulate_prediction
    from moge2_ros.refine.pipeline import refine_depth

    width, height = args.size
    data = SyntheticDataset(args.frames, height, width, seed=args.seed)
    config = _refine_config(args)
    rows = []
    for i in range(len(data)):
        sample = data[i]
        rng = np.random.default_rng([args.seed, i])
        corrupted = corrupt_depth(sample.depth, rng)
        pred_depth = simulate_prediction(sample.depth, rng, scale_error=args.scale_error)
        k_norm = pixel_to_normalized_intrinsics(torch.tensor(sample.intrinsics, dtype=torch.float32), width, height)
        pred_points = depth_to_points(torch.from_numpy(pred_depth), k_norm).numpy()
        start = time.perf_counter()
        out = refine_depth(corrupted.depth, pred_points, sample.intrinsics, config, device=args.device)
        seconds = time.perf_counter() - start
        row = score_refinement(sample.depth, corrupted, out.depth, out.provenance)
        row.update(seconds=seconds, filter_s=out.stats["filter_s"], fill_s=out.stats["fill_s"],
                   family=sample.meta.get("family", "?"))
        rows.append(row)
        log(f"frame {i} ({row['family']}): P {row['precision']:.3f} R {row['recall']:.3f} "
             f"AbsRel {row['absrel_raw']:.4f} -> {row['absrel_refined_on_raw_pixels']:.4f} "
             f"edges {row['absrel_raw_edges']:.4f} -> {row['absrel_refined_edges_on_raw_pixels']:.4f} "
             f"{seconds:.2f} s")
    keys = [k for k in rows[0] if k != "family"]
    mean = {k: float(np.nanmean([r[k] for r in rows])) for k in keys}
    print(f"### Controlled test: {len(rows)} synthetic frames {width}x{height}, model scale error "
          f"{args.scale_error:.2f}, device {args.device}\n")
    print("| quantity | raw (corrupted) | refined |")
    print("|---|---|---|")
    print(f"| filter precision / recall (corrupted = rel. error > 3 %) | | {_fmt(mean['precision'])} / "
          f"{_fmt(mean['recall'])} |")
    print(f"| filter recall, gross errors (> 10 %) | | {_fmt(mean['recall_gross'])} |")
    for cause in ("registration", "bleeding", "outlier", "outlier_blob"):
        print(f"| filter recall, {cause} ({_fmt(100 * mean['fraction_' + cause], 1)} % of corrupted) | | "
              f"{_fmt(mean['recall_' + cause])} |")
    print(f"| corrupted / removed fraction of real pixels | {_fmt(mean['corrupted_fraction'])} | "
          f"{_fmt(mean['removed_fraction'])} |")
    print(f"| AbsRel, raw valid pixels | {_fmt(mean['absrel_raw'], 4)} | "
          f"{_fmt(mean['absrel_refined_on_raw_pixels'], 4)} |")
    print(f"| AbsRel, within 3 px of depth edges (raw valid pixels) | {_fmt(mean['absrel_raw_edges'], 4)} | "
          f"{_fmt(mean['absrel_refined_edges_on_raw_pixels'], 4)} |")
    print(f"| AbsRel, all labelled pixels (refined incl. filled) | {_fmt(mean['absrel_raw'], 4)} | "
          f"{_fmt(mean['absrel_refined'], 4)} |")
    print(f"| AbsRel, within 3 px of edges, all labelled pixels | {_fmt(mean['absrel_raw_edges'], 4)} | "
          f"{_fmt(mean['absrel_refined_edges'], 4)} |")
    print(f"| boundary F1 vs truth | {_fmt(mean['boundary_f1_raw'])} | {_fmt(mean['boundary_f1_refined'])} |")
    print(f"| label coverage (of truth-valid pixels) | {_fmt(mean['coverage_raw'])} | "
          f"{_fmt(mean['coverage_refined'])} |")
    print(f"| time per frame: filter / fill / total (s) | | {_fmt(mean['filter_s'], 2)} / "
          f"{_fmt(mean['fill_s'], 2)} / {_fmt(mean['seconds'], 2)} |")
    print()
    return {"mean": mean, "frames": rows}


# ---------------------------------------------------------------------------------------------- poisson


def blob_mask(height: int, width: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Random discs (radius 5-60 px) until ``fraction`` of the pixels are covered."""
    ii, jj = np.ogrid[:height, :width]
    mask = np.zeros((height, width), dtype=bool)
    while mask.mean() < fraction:
        ci, cj, r = rng.integers(0, height), rng.integers(0, width), rng.integers(5, 61)
        mask |= (ii - ci) ** 2 + (jj - cj) ** 2 < r * r
    return mask


def run_poisson(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from moge2_ros.data.synthetic import SyntheticDataset
    from moge2_ros.refine.poisson import solve_log_depth_poisson

    width, height = args.size
    sample = SyntheticDataset(1, height, width, seed=args.seed)[0]
    truth = np.where(np.isfinite(sample.depth), sample.depth, np.nan)
    rng = np.random.default_rng(args.seed)
    unknown = blob_mask(height, width, 0.3, rng) & np.isfinite(truth)
    known = np.where(unknown, np.nan, truth).astype(np.float32)
    guide = (1.1 * truth).astype(np.float32)
    results = {}
    solvers = ["scipy", "torch"] + (["torch-cuda"] if torch.cuda.is_available() else [])
    for name in solvers:
        times = []
        for _ in range(args.repeats):
            g = torch.from_numpy(guide)
            if name == "torch-cuda":
                g = g.cuda()
                torch.cuda.synchronize()
            start = time.perf_counter()
            res = solve_log_depth_poisson(known, g, solver="torch" if name.startswith("torch") else "scipy")
            if name == "torch-cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        depth = res.depth.cpu().numpy()
        m = unknown & res.filled.cpu().numpy()
        err = float(np.max(np.abs(depth[m] - truth[m]) / truth[m])) if m.any() else float("nan")
        results[name] = {"median_s": statistics.median(times), "iterations": res.iterations,
                         "residual": res.residual, "max_rel_error_vs_truth": err, "depth": depth}
        log(f"{name}: {statistics.median(times):.2f} s, {res.iterations} it, max rel err {err:.2e}")
    ref = results["scipy"]["depth"]
    print(f"### Poisson completion: {width}x{height}, {unknown.mean() * 100:.1f} % unknowns (blobs), guide = truth "
          "x 1.1 (exact recovery expected)\n")
    print("| solver | median time (s) | CG iterations | rel. residual | max rel. error vs truth | "
          "max rel. diff vs scipy |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        m = unknown & np.isfinite(r["depth"]) & np.isfinite(ref)
        diff = float(np.max(np.abs(r["depth"][m] - ref[m]) / ref[m])) if m.any() else float("nan")
        print(f"| {name} | {r['median_s']:.2f} | {r['iterations']} | {r['residual']:.1e} | "
              f"{r['max_rel_error_vs_truth']:.1e} | {diff:.1e} |")
    print()
    return {k: {kk: vv for kk, vv in v.items() if kk != "depth"} for k, v in results.items()}


# ---------------------------------------------------------------------------------------------- 7-Scenes


def _provenance_rgb(provenance: np.ndarray) -> np.ndarray:
    """missing black, kept grey, filtered red, filled green."""
    lut = np.array([[0, 0, 0], [150, 150, 150], [230, 40, 40], [40, 200, 70]], dtype=np.uint8)
    return lut[np.clip(provenance, 0, 3)]


def _depth_rgb(depth: np.ndarray, lo: float, hi: float) -> np.ndarray:
    from moge2_ros.io.writers import turbo

    valid = np.isfinite(depth)
    x = (1 / np.where(valid, depth, hi) - 1 / hi) / (1 / lo - 1 / hi)
    rgb = turbo(0.1 + 0.85 * np.clip(x, 0, 1))
    rgb[~valid] = 0
    return rgb


def run_sevenscenes(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from PIL import Image

    from moge2_ros.checkpoints import load_model
    from moge2_ros.data.sevenscenes import SevenScenesDataset
    from moge2_ros.inference import Predictor
    from moge2_ros.refine.pipeline import predict_points, refine_depth
    from moge2_ros.refine.poisson import solve_log_depth_poisson
    from moge2_ros.geometry.alignment import align_depth_scale

    from moge2_ros.assets import resolve_default_model

    model_path, is_default = resolve_default_model(args.model)
    model_note = "bundled demo model (synthetic-trained, 1.5 M parameters)" if is_default else str(model_path)
    predictor = Predictor(load_model(model_path, device=args.device), device=args.device,
                          resolution_level=args.resolution_level)
    data = SevenScenesDataset(args.data)
    step = max(1, len(data) // args.frames)
    indices = list(range(0, len(data), step))[: args.frames]
    config = _refine_config(args)
    rows = []
    for n, i in enumerate(indices):
        sample = data[i]
        start = time.perf_counter()
        pred = predict_points(predictor, sample)
        predict_s = time.perf_counter() - start
        out = refine_depth(sample.depth, pred, sample.intrinsics, config, device=args.device)
        row = dict(out.stats)
        row["predict_s"] = predict_s
        row["missing_raw_percent"] = 100.0 * float(np.mean(~np.isfinite(sample.depth)))

        # Hold-out completion test: hide 10 % of the kept real pixels (blobs), fill them, compare.
        rng = np.random.default_rng(i)
        kept = out.provenance == 1
        hide = blob_mask(*kept.shape, 0.1, rng) & kept
        known = np.where(kept & ~hide, sample.depth, np.nan).astype(np.float32)
        guide = np.where(np.isfinite(pred).all(-1), pred[..., 2], np.nan).astype(np.float32)
        fill = solve_log_depth_poisson(known, guide, hide, solver=args.solver)
        filled = fill.depth.cpu().numpy()
        m = hide & np.isfinite(filled)
        truth = sample.depth[m]
        row["holdout_absrel_poisson"] = float(np.mean(np.abs(filled[m] - truth) / truth)) if m.any() else math.nan
        both = np.isfinite(known) & np.isfinite(guide)
        scale = float(align_depth_scale(torch.from_numpy(guide[both]), torch.from_numpy(known[both]), None))
        g = scale * guide[m]
        row["holdout_absrel_model_scaled"] = float(np.mean(np.abs(g - truth) / truth)) if m.any() else math.nan
        rows.append(row)
        log(f"frame {i}: filtered {row['filtered_percent']:.1f} % of valid, filled {row['filled_percent']:.1f} % "
             f"of pixels, hold-out AbsRel Poisson {row['holdout_absrel_poisson']:.4f} vs scaled model "
             f"{row['holdout_absrel_model_scaled']:.4f}, {row['filter_s'] + row['fill_s']:.2f} s")
        if args.images is not None and n < args.image_frames:
            args.images.mkdir(parents=True, exist_ok=True)
            valid = sample.depth[np.isfinite(sample.depth)]
            lo, hi = np.percentile(valid, [1, 99]) if valid.size else (0.5, 5.0)
            stem = f"refine_7scenes_{n}"
            small = (320, 240)
            panels = [sample.image, _depth_rgb(sample.depth, lo, hi), _depth_rgb(out.depth, lo, hi),
                      _provenance_rgb(out.provenance)]
            strip = np.concatenate([np.asarray(Image.fromarray(p).resize(small, Image.NEAREST)) for p in panels],
                                   axis=1)
            # A 128-colour palette keeps the committed picture small (it is a visualisation, not data).
            Image.fromarray(strip).quantize(128).save(args.images / f"{stem}.png", optimize=True)
    keys = [k for k in rows[0] if isinstance(rows[0][k], (int, float))]
    mean = {k: float(np.nanmean([r[k] for r in rows])) for k in keys}
    print(f"### 7-Scenes redkitchen: {len(rows)} frames 640x480, model: {model_note}\n")
    print("| quantity | mean over frames |")
    print("|---|---|")
    print(f"| raw pixels without depth (%) | {mean['missing_raw_percent']:.1f} |")
    print(f"| real depth removed by the filter (% of valid) | {mean['filtered_percent']:.1f} |")
    print(f"| pixels filled (% of all) | {mean['filled_percent']:.1f} |")
    print(f"| pixels kept (% of all) | {mean['kept_percent']:.1f} |")
    print(f"| hold-out AbsRel: Poisson fill (model gradients + real boundary) | {mean['holdout_absrel_poisson']:.4f} |")
    print(f"| hold-out AbsRel: model depth x one global scale | {mean['holdout_absrel_model_scaled']:.4f} |")
    print(f"| time per frame: predict / filter / fill (s) | {mean['predict_s']:.2f} / {mean['filter_s']:.2f} / "
          f"{mean['fill_s']:.2f} |")
    print()
    return {"model": model_note, "mean": mean, "frames": rows}


# ---------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--solver", default="auto", choices=["auto", "scipy", "torch"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument("--filter-config", default=None, metavar="JSON",
                        help='FilterConfig overrides, e.g. \'{"threshold": [0.25, 0.5, 1.0]}\'')
    sub = parser.add_subparsers(dest="mode", required=True)
    syn = sub.add_parser("synthetic", help="controlled test with exact truth")
    syn.add_argument("--frames", type=int, default=8)
    syn.add_argument("--size", type=int, nargs=2, default=(640, 480), metavar=("W", "H"))
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--scale-error", type=float, default=1.1)
    poi = sub.add_parser("poisson", help="Poisson solver timing")
    poi.add_argument("--size", type=int, nargs=2, default=(640, 480), metavar=("W", "H"))
    poi.add_argument("--seed", type=int, default=0)
    poi.add_argument("--repeats", type=int, default=3)
    sev = sub.add_parser("sevenscenes", help="7-Scenes real frames")
    sev.add_argument("--data", type=Path, default=SEVENSCENES)
    sev.add_argument("--model", type=Path, default=None, help="model checkpoint (default: the bundled demo model)")
    sev.add_argument("--frames", type=int, default=10)
    sev.add_argument("--resolution-level", type=int, default=9)
    sev.add_argument("--images", type=Path, default=None, help="write before/after PNGs here")
    sev.add_argument("--image-frames", type=int, default=2)
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = {"synthetic": run_synthetic, "poisson": run_poisson, "sevenscenes": run_sevenscenes}[args.mode](args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
