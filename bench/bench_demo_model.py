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

``--demo-stream`` measures instead what ``bash scripts/demo.sh`` measures, without ROS: the demo camera's loop
(:mod:`moge2_ros.ros.demo_camera`: the example room, 24 frames, 640x480, 60 degrees) through a Predictor with the
demo node's settings (resolution level 0, edge filter 0.04) and ``mean(|depth - gt| / gt)`` over the valid pixels
(the demo's AbsRel), for the intrinsics estimated (``intrinsics_source:=estimate``, what the demo runs) and given
(the camera's CameraInfo), each also after the per-frame oracle scale (median ratio to the ground truth): the
gap between the two is the metric-scale error.

``--scale-bias`` measures where the metric scale goes wrong: ``--count`` held-out rooms (generator seed
``--seed``, 320x240 unless ``--size``) with their true intrinsics through the demo node's settings, split into
quartiles of the ground truth's median depth; per quartile the median of (median ground truth / predicted depth)
and the AbsRel.  ``--layout wide`` draws the rooms from the wider layout of ``configs/train/demo_model_v3.yaml``
(2.5-8 m wide, 3-16 m deep, 0-8 boxes) instead of the original one; the demo room (median depth about 4 m) is
then inside the range.

``--scale-probe`` asks whether the network's features hold the information the metric scale needs: ``--count``
held-out rooms (as ``--scale-bias``) through the same Predictor, recording the scale head's input (the class token)
and the mean of the patch features the neck reads, and the log of each frame's median ground-truth depth.  A ridge
regression from each feature set to that log depth is scored by 5-fold cross-validation (its penalty chosen inside
each training fold); the table compares its error with predicting the mean (the spread of the rooms' log depth)
and with the model's own prediction (log of the median predicted depth, after removing its mean bias).  A probe no
better than the mean says the features carry no information about how large the room is.  Two more rows split the
model's own depth: the scale head's output alone, and the rest (the point map after the shift recovered with the
true focal length) with a constant in place of the head.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _harness import log, machine_info, machine_line

#: Room layouts of ``--scale-bias`` (keyword arguments of moge2_ros.data.synthetic.RoomLayout).
LAYOUTS: dict[str, dict] = {
    "original": {},
    "wide": {"width": (2.5, 8.0), "depth": (3.0, 16.0), "boxes": (0, 8), "camera_depth": (-0.48, -0.1)},
}

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
    parser.add_argument("--demo-stream", action="store_true",
                        help="measure the demo camera's stream as scripts/demo.sh does (see above) instead")
    parser.add_argument("--scale-bias", action="store_true",
                        help="metric scale error of rooms by depth quartile (see above) instead")
    parser.add_argument("--scale-probe", action="store_true",
                        help="linear probe: is the room's depth scale in the features? (see above) instead")
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default="original",
                        help="room layout of --scale-bias / --scale-probe (default original)")
    args = parser.parse_args()
    if args.demo_stream:
        return demo_stream(args.model)
    if args.scale_bias or args.scale_probe:
        size = "320x240" if args.size == parser.get_default("size") else args.size
        run = scale_probe if args.scale_probe else scale_bias
        return run(args.model, args.count, args.seed, size, args.layout)

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


def demo_stream(model: str | None, num_frames: int = 24, width: int = 640, height: int = 480,
                fov_x_deg: float = 60.0) -> int:
    """Depth AbsRel of ``model`` on the demo camera's loop (see the module docstring); prints a Markdown table."""
    import numpy as np

    from moge2_ros.assets import resolve_default_model
    from moge2_ros.checkpoints import load_model
    from moge2_ros.inference.predictor import Predictor

    source, is_default = resolve_default_model(model)
    predictor = Predictor(load_model(source), device="cpu", resolution_level=0, edge_rtol=0.04)
    rows: dict[str, list[float]] = {}
    fx: list[float] = []
    started = time.perf_counter()
    for i, scene in enumerate(_demo_frames(range(num_frames), num_frames, width, height, fov_x_deg)):
        for name, geometry in (("estimated", predictor.predict(scene.rgb)),
                               ("given", predictor.predict(scene.rgb, intrinsics=scene.intrinsics))):
            depth, gt = geometry.depth[0].numpy(), scene.depth
            valid = np.isfinite(depth) & np.isfinite(gt) & (gt > 0)
            d, g = depth[valid], gt[valid]
            ratio = float(np.median(g / d))
            rows.setdefault(f"{name}: AbsRel", []).append(float(np.mean(np.abs(d - g) / g)))
            rows.setdefault(f"{name}: AbsRel, oracle scale", []).append(float(np.mean(np.abs(ratio * d - g) / g)))
            rows.setdefault(f"{name}: median gt / predicted depth", []).append(ratio)
            if name == "estimated":
                fx.append(float(geometry.intrinsics[0][0, 0]))
        log(f"{i + 1}/{num_frames}")
    seconds = time.perf_counter() - started
    print("# Model metrics on the demo camera's stream\n")
    print(f"Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`  ")
    print(f"Model: {'bundled demo model' if is_default else source} ({source}), {predictor.num_tokens} tokens, "
          f"edge filter 0.04, CPU fp32  ")
    print(f"Data: demo_camera's {num_frames}-frame loop, {width}x{height}, fov_x {fov_x_deg:g} deg "
          f"(fx {scene.intrinsics[0, 0]:.1f} px); {seconds:.0f} s in all\n")
    print("| intrinsics: metric | mean | min | max |")
    print("| --- | ---: | ---: | ---: |")
    for key, values in rows.items():
        print(f"| {key} | {np.mean(values):.3f} | {np.min(values):.3f} | {np.max(values):.3f} |")
    print(f"| estimated: fx (px) | {np.mean(fx):.1f} | {np.min(fx):.1f} | {np.max(fx):.1f} |")
    return 0


def _demo_frames(indices, num_frames: int = 24, width: int = 640, height: int = 480, fov_x_deg: float = 60.0):
    """The demo camera's frames ``indices`` of its ``num_frames`` loop (``demo_camera.DemoCamera.frame``), as
    :class:`~moge2_ros.data.example.ExampleScene`, rendered one by one."""
    import math

    from moge2_ros.data.example import render_example_scene

    for i in indices:
        phase = 2 * math.pi * i / num_frames
        yield render_example_scene(width, height, fov_x_deg, camera_position=(
            0.5 * math.sin(phase), 0.0, 0.6 * (1 - math.cos(phase))))


def _held_out_rooms(model: str | None, count: int, seed: int, size: str, layout: str):
    """``(predictor, rooms dataset, model source, is_default, width, height)`` of ``--scale-bias`` /
    ``--scale-probe``: the demo node's settings (resolution level 0, edge filter 0.04), CPU fp32."""
    from moge2_ros.assets import resolve_default_model
    from moge2_ros.checkpoints import load_model
    from moge2_ros.data.synthetic import RoomLayout, SyntheticConfig, SyntheticDataset
    from moge2_ros.inference.predictor import Predictor

    width, height = (int(v) for v in size.lower().split("x"))
    source, is_default = resolve_default_model(model)
    predictor = Predictor(load_model(source), device="cpu", resolution_level=0, edge_rtol=0.04)
    config = SyntheticConfig(families=("room",), room_layout=RoomLayout(**LAYOUTS[layout]))
    data = SyntheticDataset(count, height, width, seed=seed, config=config)
    return predictor, data, source, is_default, width, height


def scale_bias(model: str | None, count: int, seed: int, size: str, layout: str) -> int:
    """Median (gt / predicted depth) and AbsRel of ``count`` rooms by quartile of their median ground-truth depth
    (true intrinsics, the demo node's settings); prints a Markdown table."""
    import numpy as np

    if count < 4:
        raise SystemExit("--scale-bias needs --count >= 4 (four depth quartiles)")
    predictor, data, source, is_default, width, height = _held_out_rooms(model, count, seed, size, layout)
    rows = []
    started = time.perf_counter()
    for i in range(len(data)):
        sample = data[i]
        depth = predictor.predict(sample.image, intrinsics=sample.intrinsics).depth[0].numpy()
        valid = np.isfinite(depth) & np.isfinite(sample.depth) & (sample.depth > 0)
        d, g = depth[valid], sample.depth[valid]
        rows.append((float(np.median(g)), float(np.median(g / d)), float(np.mean(np.abs(d - g) / g))))
        log(f"{i + 1}/{count}")
    seconds = time.perf_counter() - started
    table = np.asarray(rows)
    print("# Metric scale of rooms by depth (true intrinsics)\n")
    print(f"Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`  ")
    print(f"Model: {'bundled demo model' if is_default else source} ({source}), {predictor.num_tokens} tokens, "
          f"edge filter 0.04, CPU fp32  ")
    print(f"Data: {count} rooms {width}x{height}, generator seed {seed}, {layout} layout; {seconds:.0f} s in all\n")
    print("| median gt depth (m) | frames | median gt / predicted depth | AbsRel |")
    print("| --- | ---: | ---: | ---: |")
    for part in np.array_split(np.argsort(table[:, 0]), 4):
        print(f"| {table[part, 0].min():.2f}-{table[part, 0].max():.2f} | {len(part)} | "
              f"{np.median(table[part, 1]):.2f} | {table[part, 2].mean():.3f} |")
    print(f"| all | {count} | {np.median(table[:, 1]):.2f} | {table[:, 2].mean():.3f} |")
    return 0


def _ridge_cv_rms(x, y, folds: int = 5, penalties=(0.1, 1.0, 10.0, 100.0, 1000.0)) -> float:
    """Root-mean-square error of a ridge regression ``x (N, F) -> y (N,)`` over ``folds``-fold cross-validation,
    the penalty of each fold chosen by an inner ``folds - 1``-fold cross-validation on its training part."""
    import numpy as np

    def fit_predict(tr, te, penalty):
        mean, std = x[tr].mean(0), x[tr].std(0) + 1e-6
        a = np.c_[(x[tr] - mean) / std, np.ones(len(tr))]
        reg = penalty * np.eye(a.shape[1])
        reg[-1, -1] = 0.0  # the intercept is not penalised
        w = np.linalg.solve(a.T @ a + reg, a.T @ y[tr])
        return np.c_[(x[te] - mean) / std, np.ones(len(te))] @ w

    def inner_error(idx, penalty):
        parts = np.array_split(idx, folds - 1)
        return sum(float(np.sum((fit_predict(np.concatenate(parts[:k] + parts[k + 1:]), part, penalty)
                                 - y[part]) ** 2)) for k, part in enumerate(parts))

    order = np.random.default_rng(0).permutation(len(y))
    errors = np.empty(len(y))
    for k, test in enumerate(np.array_split(order, folds)):
        train = np.setdiff1d(order, test)
        best = min(penalties, key=lambda p: inner_error(train, p))
        errors[test] = fit_predict(train, test, best) - y[test]
    return float(np.sqrt(np.mean(errors ** 2)))


def scale_probe(model: str | None, count: int, seed: int, size: str, layout: str) -> int:
    """Linear probe of the metric-scale information in the features (see the module docstring); prints a Markdown
    table of log-depth errors (natural log: 0.10 is about a 10 % scale error)."""
    import numpy as np
    import torch

    if count < 20:
        raise SystemExit("--scale-probe needs --count >= 20 (5-fold cross-validation)")
    predictor, data, source, is_default, width, height = _held_out_rooms(model, count, seed, size, layout)
    net = predictor.model
    if not net.has_head("scale_head"):
        raise SystemExit(f"{source}: the model has no metric-scale head to probe")
    seen: dict[str, torch.Tensor] = {}
    hooks = [net.scale_head.register_forward_pre_hook(lambda m, args: seen.__setitem__("cls", args[0].detach())),
             net.scale_head.register_forward_hook(lambda m, args, out: seen.__setitem__("log_scale", out.detach())),
             # the neck's first input is the encoder's patch features with the 2 uv channels appended
             net.neck.register_forward_pre_hook(lambda m, args: seen.__setitem__("patch", args[0][0][:, :-2].detach()))]
    cls, patch, log_gt, log_pred, log_head = [], [], [], [], []
    demo_ratio, demo_log_head = [], []
    started = time.perf_counter()
    try:
        for i in range(len(data)):
            sample = data[i]
            depth = predictor.predict(sample.image, intrinsics=sample.intrinsics).depth[0].numpy()
            valid = np.isfinite(depth) & np.isfinite(sample.depth) & (sample.depth > 0)
            cls.append(seen["cls"][0].float().numpy())
            patch.append(seen["patch"][0].float().mean(dim=(1, 2)).numpy())
            log_gt.append(float(np.log(np.median(sample.depth[valid]))))
            log_pred.append(float(np.log(np.median(depth[valid]))))
            log_head.append(float(seen["log_scale"].flatten()[0]))  # the head's output is the log of the scale
            log(f"{i + 1}/{count}")
        seconds = time.perf_counter() - started
        for scene in _demo_frames(range(0, 24, 3)):  # the demo room, CameraInfo given: every third frame
            depth = predictor.predict(scene.rgb, intrinsics=scene.intrinsics).depth[0].numpy()
            valid = np.isfinite(depth) & (scene.depth > 0)
            demo_ratio.append(float(np.median(scene.depth[valid]) / np.median(depth[valid])))
            demo_log_head.append(float(seen["log_scale"].flatten()[0]))
    finally:
        for hook in hooks:
            hook.remove()
    y, own = np.asarray(log_gt), np.asarray(log_pred)
    print("# Is the room's scale in the features? (linear probe)\n")
    print(f"Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`  ")
    print(f"Model: {'bundled demo model' if is_default else source} ({source}), {predictor.num_tokens} tokens, "
          f"CPU fp32  ")
    print(f"Data: {count} rooms {width}x{height}, generator seed {seed}, {layout} layout; {seconds:.0f} s in all  ")
    print("Target: log of each frame's median ground-truth depth; errors are root mean square, 5-fold CV\n")
    print("| predictor of log median depth | RMS error | correlation with the truth |")
    print("| --- | ---: | ---: |")
    print(f"| the mean of the rooms (no information; the same CV) | {_ridge_cv_rms(np.zeros((len(y), 1)), y):.3f} | — |")
    bias = float(np.mean(own - y))
    print(f"| the model's own depth, mean bias ({bias:+.3f}) removed | {np.sqrt(np.mean((own - bias - y) ** 2)):.3f} | "
          f"{np.corrcoef(own, y)[0, 1]:+.2f} |")
    rest = own - np.asarray(log_head)  # the depth without the head's scale: the point map after its shift
    print(f"| the model with a constant instead of its scale head (fitted by the same CV) | "
          f"{_ridge_cv_rms(np.zeros((len(y), 1)), y - rest):.3f} | {np.corrcoef(rest, y)[0, 1]:+.2f} |")
    print(f"| the scale head's output alone, mean bias removed | "
          f"{np.sqrt(np.mean((log_head - np.mean(np.asarray(log_head) - y) - y) ** 2)):.3f} | "
          f"{np.corrcoef(log_head, y)[0, 1]:+.2f} |")
    for name, features in (("class token (the scale head's input)", cls), ("mean patch feature", patch)):
        print(f"| ridge on the {name}, {len(features[0])} values | {_ridge_cv_rms(np.asarray(features), y):.3f} | — |")
    # The demo room with the model's head, and with the constant that replaces it above (fitted on all the rooms).
    constant = float(np.mean(y - rest))
    with_constant = np.asarray(demo_ratio) * np.exp(np.asarray(demo_log_head) - constant)
    print(f"\nDemo room (8 frames of the demo loop, CameraInfo given): median ground truth / predicted depth "
          f"{np.median(demo_ratio):.2f} with the model's scale head, {np.median(with_constant):.2f} with the constant "
          f"(1.00 = right scale)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
