#!/usr/bin/env python3
"""Fine-tune a model on real RGB-D frames of 7-Scenes "redkitchen" and measure the gain on held-out frames.

    .venv/bin/python bench/finetune_sevenscenes.py --model runs/demo_synthetic/model.pt
    .venv/bin/python bench/finetune_sevenscenes.py --model M --steps 300 --device cuda --config overlay.yaml

The recording (``../shared/data/sevenscenes-redkitchen`` beside the repository, research licence: read in place,
never copied) holds 300 frames; the first ``--train-frames`` (200) fine-tune the model with
``moge2-ros finetune``'s defaults (label type B, head LR 2e-5 / backbone 2e-6, cosine; on a CPU the reduced
loss alignments) and the last ``--eval-frames`` (100) are evaluated before and after with the official metrics
(:func:`moge2_ros.eval.metrics.evaluate_geometry` on the full 640x480 frames through the :class:`Predictor`):
depth AbsRel and delta1 with metric scale (``depth_metric``) and after a per-frame affine alignment
(``depth_affine_invariant``), plus ``coverage`` (share of ground-truth pixels with a valid prediction).
The train and eval frames come from one handheld sequence (consecutive views of the same kitchen), so the gain
measures adaptation to this scene and sensor, not generalisation.  Prints a Markdown table to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _harness import REPO, SHARED, log

DATA = SHARED / "data" / "sevenscenes-redkitchen"
KEYS = ("depth_metric/rel", "depth_metric/delta1", "depth_affine_invariant/rel", "depth_affine_invariant/delta1",
        "coverage")


def evaluate(model_path: str, root: Path, indices: list[int], device: str, num_tokens: int | None,
             align_resolution: int) -> dict[str, float]:
    """Mean official metrics of ``model_path`` on frames ``indices``."""
    from moge2_ros.checkpoints import load_model
    from moge2_ros.data.sevenscenes import SevenScenesDataset
    from moge2_ros.eval.metrics import evaluate_geometry, key_average
    from moge2_ros.inference.predictor import Predictor

    dataset = SevenScenesDataset(root, indices=indices)
    predictor = Predictor(load_model(model_path), device=device, num_tokens=num_tokens)
    skip = ("points_affine_invariant", "disparity_affine_invariant")
    records = []
    for i in range(len(dataset)):
        sample = dataset[i]
        geometry = predictor.predict(sample.image)
        records.append(evaluate_geometry(geometry, sample, align_resolution=(align_resolution, align_resolution),
                                         skip=skip))
        if (i + 1) % 20 == 0:
            log(f"  evaluated {i + 1}/{len(dataset)}")
    return key_average(records)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model to fine-tune (file, folder or Hugging Face id)")
    parser.add_argument("--data", type=Path, default=DATA, help=f"7-Scenes folder (default {DATA})")
    parser.add_argument("--train-frames", type=int, default=200, help="first N frames fine-tune (default 200)")
    parser.add_argument("--eval-frames", type=int, default=100, help="last N frames evaluate (default 100)")
    parser.add_argument("--steps", type=int, default=300, help="fine-tuning steps (default 300)")
    parser.add_argument("--output", type=Path, default=REPO / "runs" / "finetune_sevenscenes", help="run folder")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--config", type=Path, help="partial training config overlaid on the finetune defaults")
    parser.add_argument("--num-tokens", type=int, help="token budget at evaluation (default: the model's level 9)")
    parser.add_argument("--align-resolution", type=int, default=64,
                        help="metrics' alignment subsample side (official 64; smaller is faster on a CPU)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import yaml

    from moge2_ros.data.sevenscenes import SevenScenesDataset
    from moge2_ros.train.cli import CPU_LOSS_OVERRIDES, finetune_config_dict
    from moge2_ros.train.config import config_from_dict, merge_dicts
    from moge2_ros.train.distributed import resolve_train_device
    from moge2_ros.train.trainer import train

    total = len(SevenScenesDataset(args.data))
    if args.train_frames + args.eval_frames > total:
        log(f"{args.data} holds {total} frames, fewer than {args.train_frames} + {args.eval_frames}")
        return 2
    train_stop, eval_indices = args.train_frames, list(range(total - args.eval_frames, total))
    device = resolve_train_device(args.device)

    log(f"evaluating {args.model} on frames {eval_indices[0]}-{eval_indices[-1]} ...")
    start = time.perf_counter()
    before = evaluate(args.model, args.data, eval_indices, str(device), args.num_tokens, args.align_resolution)
    log(f"  done in {time.perf_counter() - start:.0f} s")

    source = {"kind": "sevenscenes", "root": str(args.data), "start": 0, "stop": train_stop}
    data = finetune_config_dict(args.model, source, str(args.output), args.steps)
    data["loop"]["device"] = device.type
    user = yaml.safe_load(args.config.read_text()) if args.config else {}
    if device.type == "cpu" and "loss" not in (user or {}):
        data["loss"] = {"overrides": CPU_LOSS_OVERRIDES}
        data["loop"]["num_tokens_range"] = [400, 800]
    data = merge_dicts(data, user or {})
    log(f"fine-tuning on frames 0-{train_stop - 1} for {args.steps} steps into {args.output} ...")
    start = time.perf_counter()
    result = train(config_from_dict(data), resume=(args.output / "checkpoints" / "latest.json").is_file())
    train_s = time.perf_counter() - start
    log(f"  done in {train_s:.0f} s")

    log("evaluating the fine-tuned model ...")
    after = evaluate(str(result.model_path), args.data, eval_indices, str(device), args.num_tokens,
                     args.align_resolution)

    print(f"## Fine-tuning on 7-Scenes redkitchen ({args.train_frames} train / {args.eval_frames} eval frames)\n")
    print(f"Model `{args.model}`, {args.steps} steps on {device} ({train_s / 60:.1f} min), evaluation on the full "
          f"640x480 frames, metrics alignment {args.align_resolution}x{args.align_resolution}.\n")
    print("| model | metric AbsRel | metric δ1 | affine-inv. AbsRel | affine-inv. δ1 | coverage |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, m in (("before", before), ("after fine-tuning", after)):
        print(f"| {name} | " + " | ".join(f"{m.get(k, float('nan')):.4f}" for k in KEYS) + " |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"before": before, "after": after, "train_s": train_s,
                                         "config": vars(args) | {"data": str(args.data), "output": str(args.output),
                                                                 "config": str(args.config), "json": str(args.json)}},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
