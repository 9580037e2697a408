#!/usr/bin/env python3
"""Training-step benchmark of moge2_ros: steps/s and peak memory per model size and batch size.

Prints a Markdown table to stdout (progress goes to stderr)::

    .venv/bin/python bench/bench_train.py --quick                      # smoke run: tiny model, batch 1, 2 steps
    .venv/bin/python bench/bench_train.py                              # tiny and ViT-S, batch 1 / 2 / 4 (CPU)
    .venv/bin/python bench/bench_train.py --device cuda --amp bf16 --loss official --image 480x640 --tokens 1800

One optimizer step is what :class:`moge2_ros.train.trainer.Trainer` does per step: forward (under autocast when
``--amp``), the per-instance losses of label type A (:func:`moge2_ros.train.trainer.batch_loss`; ``--loss cpu`` =
the reduced alignment resolutions of ``CPU_LOSS_OVERRIDES``, ``--loss official`` = the official recipe),
backward, gradient clipping, AdamW.  Data loading is not included (the batch is a fixed set of analytic slanted
planes with sky rows), so the numbers are the model + loss cost alone.

Every configuration runs in a fresh child process (hidden ``--single SPEC`` flag) so that its peak memory is its
own: CPU peak RSS (``ru_maxrss``) and the RSS after the model was built; CUDA ``max_memory_allocated``.  Timing:
``time.perf_counter`` around each step (CUDA synchronised) after ``--warmup`` steps; the table shows the median
of ``--steps`` timed steps and steps/s = 1 / median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _harness import log, machine_info, machine_line, peak_rss_mb, rss_mb, run_child

MODELS = {"tiny": "MoGe2Config.tiny (96-wide 4-block ViT)", "vits": "ViT-S-sized (384-wide 12-block ViT)"}


def _batch(size: int, height: int, width: int, device: Any) -> dict[str, Any]:
    """``size`` analytic frames: slanted planes seen by pinhole cameras, the top rows sky."""
    import torch

    from moge2_ros.geometry.projection import depth_to_points

    g = torch.Generator().manual_seed(0)
    images, points, depths, pos, neg, normals, ks = [], [], [], [], [], [], []
    for _ in range(size):
        f = 0.8 + 0.3 * torch.rand((), generator=g)
        k = torch.tensor([[f, 0, 0.5], [0, f * width / height, 0.5], [0, 0, 1]])
        v = (torch.arange(height) + 0.5) / height - 0.5
        u = (torch.arange(width) + 0.5) / width - 0.5
        depth = 2.0 + 1.5 * v[:, None] + 0.8 * u[None, :] + torch.rand((), generator=g)
        sky = torch.zeros(height, width, dtype=torch.bool)
        sky[: height // 6] = True
        depth = torch.where(sky, torch.nan, depth)
        p = depth_to_points(depth, k)
        images.append(torch.rand(3, height, width, generator=g))
        points.append(torch.where(sky[..., None], torch.inf, p))
        depths.append(depth)
        pos.append(~sky)
        neg.append(sky)
        normals.append(torch.where(sky[..., None], 0.0, torch.tensor([0.0, -0.6, -0.8])))
        ks.append(k)
    return {
        "image": torch.stack(images).to(device), "points": torch.stack(points), "depth": torch.stack(depths),
        "mask_pos": torch.stack(pos), "mask_neg": torch.stack(neg), "normal": torch.stack(normals),
        "has_normal": torch.ones(size, dtype=torch.bool), "intrinsics": torch.stack(ks),
        "label_type": ["A"] * size, "is_metric": torch.ones(size, dtype=torch.bool),
        "index": torch.arange(size),
    }


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Time ``spec['steps']`` training steps of one configuration (runs in its own process)."""
    import torch

    torch.set_num_threads(spec["threads"])
    from moge2_ros.train.cli import CPU_LOSS_OVERRIDES
    from moge2_ros.train.config import LossConfig, ModelConfig
    from moge2_ros.train.trainer import _amp_dtype, batch_loss, build_model, build_param_groups, build_loss_sets

    device = torch.device(spec["device"])
    model = build_model(ModelConfig(preset=spec["model"]), seed=0).to(device).train()
    rss_model = rss_mb()
    loss_sets = build_loss_sets(LossConfig(overrides=CPU_LOSS_OVERRIDES if spec["loss"] == "cpu" else {}))
    optimizer = torch.optim.AdamW(build_param_groups(model, ["encoder.backbone.*"], 1e-4, 1e-5))
    amp = _amp_dtype(spec["amp"], device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    batch = _batch(spec["batch"], spec["height"], spec["width"], device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for step in range(spec["warmup"] + spec["steps"]):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            out = model(batch["image"], spec["tokens"])
        loss, _ = batch_loss(out, batch, loss_sets, seed=0, step=step)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step >= spec["warmup"]:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        **spec,
        "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "step_s_median": median,
        "steps_per_s": 1.0 / median,
        "samples_per_s": spec["batch"] / median,
        "rss_after_model_mb": rss_model,
        "peak_rss_mb": peak_rss_mb(),
        "cuda_peak_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "load_1min": os.getloadavg()[0],
    }


def print_table(rows: list[dict[str, Any]], info: dict[str, Any], args: argparse.Namespace) -> None:
    print("## Training step benchmark\n")
    print(f"Machine: {machine_line(info)}; device {args.device}, amp {args.amp}, loss {args.loss}; image {args.image}, "
          f"{args.tokens} tokens; median of {args.steps} steps after {args.warmup} warm-up.\n")
    mem = "CUDA peak MB" if args.device.startswith("cuda") else "peak RSS MB (after model)"
    print(f"| model | params (M) | batch | step (s) | steps/s | samples/s | {mem} | load |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | | {r['batch']} | error: {r['error']} | | | | |")
            continue
        memory = (f"{r['cuda_peak_mb']:.0f}" if r["cuda_peak_mb"] is not None
                  else f"{r['peak_rss_mb']:.0f} ({r['rss_after_model_mb'] or 0:.0f})")
        print(f"| {r['model']} | {r['parameters_m']:.2f} | {r['batch']} | {r['step_s_median']:.3f} | "
              f"{r['steps_per_s']:.2f} | {r['samples_per_s']:.2f} | {memory} | {r['load_1min']:.1f} |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["tiny", "vits"])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 2, 4], help="per-step batch sizes")
    parser.add_argument("--image", default="96x128", help="HxW of the training crops (default 96x128)")
    parser.add_argument("--tokens", type=int, default=300, help="ViT token budget (default 300)")
    parser.add_argument("--loss", choices=("cpu", "official"), default="cpu",
                        help="cpu: reduced alignment resolutions (CPU_LOSS_OVERRIDES); official: the recipe's")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--device", default="cuda" if _cuda_available() else "cpu", help="cpu, cuda, cuda:N")
    parser.add_argument("--amp", choices=("off", "bf16", "fp16", "auto"), default="off")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per configuration")
    parser.add_argument("--json", type=Path, help="also write the rows and machine info as JSON")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny, batch 1, 2 steps, no warm-up")
    parser.add_argument("--single", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.batch, args.steps, args.warmup = ["tiny"], [1], 2, 0
    try:
        height, width = (int(x) for x in args.image.lower().split("x"))
    except ValueError:
        parser.error(f"--image: expected HxW such as 96x128, got {args.image!r}")
    args.height, args.width = height, width
    return args


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.single:
        print(json.dumps(child(json.loads(args.single))))
        return 0
    rows = []
    for model in args.models:
        for batch in args.batch:
            spec = {"model": model, "batch": batch, "height": args.height, "width": args.width,
                    "tokens": args.tokens, "loss": args.loss, "steps": args.steps, "warmup": args.warmup,
                    "device": args.device, "amp": args.amp, "threads": args.threads}
            log(f"{model} batch {batch} ...")
            rows.append(run_child(__file__, spec, args.timeout))
            if "error" in rows[-1]:
                log(f"  error: {rows[-1]['error']}")
            else:
                log(f"  {rows[-1]['step_s_median']:.3f} s/step")
    info = machine_info(args.device, args.threads)
    print_table(rows, info, args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
