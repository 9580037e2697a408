#!/usr/bin/env python3
"""Metrics of a model (default: the bundled demo model) on held-out procedural scenes.

    .venv/bin/python bench/bench_demo_model.py                     # bundled demo model, 48 frames, 320x256
    .venv/bin/python bench/bench_demo_model.py --model M --count 100 --size 640x480 --seed 777

The frames come from the synthetic generator (:class:`moge2_ros.data.synthetic.SyntheticDataset`) with a seed
that no training run of the demo model used (training: seed 0, validation: seed 1), so the scenes, textures,
cameras and poses are new; the scene *families* (rooms, streets) are the training ones: this measures fit to the
generator's distribution, not generalisation to real images.  Each frame goes through the :class:`Predictor`
(intrinsics estimated) and :func:`moge2_ros.eval.metrics.evaluate_geometry`: depth AbsRel and delta1 with the
predicted metric scale (``depth_metric``) and after a per-frame scale (``depth_scale_invariant``) or affine
(``depth_affine_invariant``) alignment, the FoV error in degrees, and ``coverage`` (share of ground-truth pixels
with a valid prediction).  Alignments run at ``--align-resolution`` (official: 64; lower is much faster on a CPU).
Prints a Markdown table (mean over frames, and per scene family) to stdout.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _harness import log, machine_info, machine_line

KEYS = ("depth_metric/rel", "depth_metric/delta1", "depth_scale_invariant/rel", "depth_scale_invariant/delta1",
        "depth_affine_invariant/rel", "depth_affine_invariant/delta1", "fov_x/mae", "fov_x/deviation", "coverage")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model source (default: the bundled demo model)")
    parser.add_argument("--count", type=int, default=48, help="held-out frames (default 48)")
    parser.add_argument("--size", default="320x256", help="WxH (default 320x256, the training renders' size)")
    parser.add_argument("--seed", type=int, default=777, help="generator seed (default 777; training used 0 and 1)")
    parser.add_argument("--resolution-level", type=int, default=9, help="token level 0..9 (default 9)")
    parser.add_argument("--align-resolution", type=int, default=32, help="alignment grid (default 32; official 64)")
    args = parser.parse_args()

    from moge2_ros import __version__
    from moge2_ros.assets import resolve_default_model
    from moge2_ros.checkpoints import load_model
    from moge2_ros.data.synthetic import SyntheticDataset
    from moge2_ros.eval.metrics import evaluate_geometry, key_average
    from moge2_ros.inference.predictor import Predictor

    width, height = (int(v) for v in args.size.lower().split("x"))
    source, is_default = resolve_default_model(args.model)
    predictor = Predictor(load_model(source), device="cpu", resolution_level=args.resolution_level)
    data = SyntheticDataset(args.count, height, width, seed=args.seed)
    records: dict[str, list[dict[str, float]]] = {}
    started = time.perf_counter()
    for i in range(len(data)):
        sample = data[i]
        geometry = predictor.predict(sample.image)
        metrics = evaluate_geometry(geometry, sample, align_resolution=(args.align_resolution,) * 2,
                                    skip=("points_affine_invariant", "disparity_affine_invariant"))
        family = str(sample.meta.get("family", "all"))
        records.setdefault(family, []).append(metrics)
        if family != "all":
            records.setdefault("all", []).append(metrics)
        log(f"{i + 1}/{len(data)} {family}")
    seconds = time.perf_counter() - started

    print("# Model metrics on held-out synthetic scenes\n")
    print(f"Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`  ")
    print(f"Model: {'bundled demo model' if is_default else source} ({source}), {predictor.num_tokens} tokens, "
          f"CPU fp32  ")
    print(f"Data: {args.count} frames {width}x{height}, generator seed {args.seed}; alignment grid "
          f"{args.align_resolution}x{args.align_resolution}  ")
    print(f"Machine: {machine_line(machine_info())}; moge2_ros {__version__}; {seconds:.0f} s in all\n")
    groups = ["all"] + sorted(k for k in records if k != "all")
    print("| metric | " + " | ".join(f"{g} (n={len(records[g])})" for g in groups) + " |")
    print("| --- | " + " | ".join("---:" for _ in groups) + " |")
    means = {g: key_average(records[g]) for g in groups}
    for key in KEYS:
        print(f"| {key} | " + " | ".join(f"{means[g].get(key, float('nan')):.4f}" for g in groups) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
