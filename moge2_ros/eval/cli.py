"""``moge2-ros eval`` and ``moge2-ros bag-eval`` subcommands (registered through ``add_parsers``).

Nothing heavy is imported at module level: torch, the model and rosbags are imported inside the handlers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from moge2_ros.cli_args import add_model_arguments, model_arguments, note, positive_float, positive_int
from moge2_ros.errors import UsageError
from moge2_ros.eval import METRIC_GROUPS

__all__ = ["add_parsers", "cmd_eval", "cmd_bag_eval"]


def _groups(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in METRIC_GROUPS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown metric group(s) {bad}; known: {', '.join(METRIC_GROUPS)}")
    return names


def add_parsers(sub: Any) -> None:
    """Register ``eval`` and ``bag-eval`` on the ``moge2-ros`` subparsers."""
    ev = sub.add_parser(
        "eval",
        help="evaluate a model on benchmarks (official MoGe layout/config or folder format)",
        description=(
            "Predict every sample of the benchmark(s) and compute the official MoGe metrics (relative point "
            "error and δ1 under metric / scale-invariant / affine-invariant alignment, depth AbsRel and δ1, "
            "boundary F1 where the benchmark has sharp boundaries, FoV error). BENCHMARK is an official config "
            "JSON (configs/eval/all_benchmarks.json style), an official benchmark folder (with .index.txt), a "
            "folder of such folders, a folder-format dataset or a 7-Scenes sequence. Writes results.json (per "
            "sample, per benchmark, mean) and results.md (table) into --output."
        ),
        epilog="Exit status: 0 success, 1 runtime error, 2 usage error.",
    )
    add_model_arguments(ev, model_help="model to evaluate:", default_precision="fp32")
    ev.add_argument("--benchmark", required=True, action="append", metavar="DIR|CONFIG",
                    help="benchmark source (repeatable)")
    ev.add_argument("--only", metavar="NAME[,NAME]", help="evaluate only these benchmarks of the config")
    ev.add_argument("--output", "-o", required=True, type=Path, metavar="DIR", help="output folder (created)")
    ev.add_argument("--oracle", action="store_true", help="give the model the ground-truth intrinsics")
    ev.add_argument("--max-samples", type=positive_int, metavar="N", help="at most N samples per benchmark")
    ev.add_argument("--align-resolution", type=positive_int, default=64, metavar="N",
                    help="alignment subsample N x N (official 64; smaller is faster, not official)")
    ev.add_argument("--skip", type=_groups, default=[], metavar="GROUP[,GROUP]",
                    help=f"metric groups not to compute ({', '.join(METRIC_GROUPS)})")
    ev.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    ev.set_defaults(handler=cmd_eval)

    be = sub.add_parser(
        "bag-eval",
        help="evaluate predicted depth in a rosbag2 recording against ground-truth depth or LiDAR",
        description=(
            "Match the predicted depth frames of BAG (bag-infer output: depth/image, depth/camera_info, "
            "geometry) with ground-truth depth (a depth image topic, or a LiDAR PointCloud2 projected through "
            "the ground-truth camera_info) by header stamp and write per-frame and summary metrics, metric-scale "
            "drift, temporal stability (scale and depth flicker) and a self-contained HTML report with plots "
            "into --output (report.html, metrics.json, frames.csv). Topic names may be given without their "
            "namespace when the ending is unique in the bag."
        ),
        epilog="Exit status: 0 success, 1 runtime error (unreadable bag, no matched frames), 2 usage error.",
    )
    be.add_argument("bag", type=Path, metavar="BAG", help="bag with the predictions (folder or .mcap/.db3 file)")
    be.add_argument("--gt-bag", type=Path, metavar="BAG", help="bag with the ground truth (default: BAG)")
    gt = be.add_mutually_exclusive_group(required=True)
    gt.add_argument("--gt-depth-topic", metavar="TOPIC", help="ground-truth depth image (16UC1 mm or 32FC1 m)")
    gt.add_argument("--gt-cloud-topic", metavar="TOPIC",
                    help="ground-truth LiDAR PointCloud2 in the camera optical frame (same frame_id as the image), "
                         "projected through the image's camera_info (z-buffer)")
    be.add_argument("--gt-camera-info-topic", metavar="TOPIC",
                    help="camera_info of the camera image (default: the image topic's sibling .../camera_info); its "
                         "K back-projects the ground truth and is the reference of the FoV error")
    be.add_argument("--pred-depth-topic", default="depth/image", metavar="TOPIC", help="default: depth/image")
    be.add_argument("--pred-camera-info-topic", default="depth/camera_info", metavar="TOPIC",
                    help="default: depth/camera_info")
    be.add_argument("--geometry-topic", default="geometry", metavar="TOPIC",
                    help="MonocularGeometry topic (metric scale, inference time; optional; default: geometry)")
    be.add_argument("--image-topic", metavar="TOPIC", help="RGB image topic shown in the report (optional)")
    be.add_argument("--tolerance-ms", type=positive_float, default=5.0, metavar="MS",
                    help="largest stamp difference of matched frames (default 5 ms)")
    be.add_argument("--max-frames", type=positive_int, metavar="N", help="evaluate at most N matched frames")
    be.add_argument("--every", type=positive_int, default=1, metavar="N", help="evaluate every N-th matched frame")
    be.add_argument("--min-depth", type=float, default=0.0, metavar="M", help="ignore ground truth below M metres")
    be.add_argument("--max-depth", type=float, default=0.0, metavar="M",
                    help="ignore ground truth beyond M metres (0 = no limit)")
    be.add_argument("--align-resolution", type=positive_int, default=64, metavar="N",
                    help="alignment subsample N x N (official 64; smaller is faster, not official)")
    be.add_argument("--skip", type=_groups, default=[], metavar="GROUP[,GROUP]",
                    help="metric groups not to compute (e.g. points_affine_invariant,depth_affine_invariant: the "
                         "slow ones)")
    be.add_argument("--sample-images", type=int, default=4, metavar="N",
                    help="frames shown as images in the report (default 4)")
    be.add_argument("--compare", type=Path, metavar="BAG",
                    help="a second prediction bag of the same recording (e.g. bag-infer with --anchor-topic), "
                         "evaluated against the same ground truth and reported side by side with BAG (metric AbsRel, "
                         "δ1, scale error and flicker, anchored frames) in comparison.md / comparison.json; each "
                         "bag's full report goes into a subfolder of --output named by its label")
    be.add_argument("--labels", metavar="A,B",
                    help="column names of BAG and the --compare bag (default: 'network' / 'anchored' from the "
                         "geometry messages' scale_source, else the bag names)")
    be.add_argument("--output", "-o", required=True, type=Path, metavar="DIR", help="output folder (created)")
    be.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    be.set_defaults(handler=cmd_bag_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    """``moge2-ros eval``: see the subcommand help."""
    if args.output.exists() and not args.output.is_dir():
        raise UsageError(f"--output is not a folder: {args.output}")
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    from moge2_ros.eval.benchmark import load_benchmarks, markdown_table, run_benchmarks

    specs = []
    for source in args.benchmark:
        if not Path(source).exists():
            raise UsageError(f"--benchmark: no such file or folder: {source}")
        specs.extend(load_benchmarks(source, only=only if len(args.benchmark) == 1 else None))
    if only and len(args.benchmark) > 1:
        specs = [s for s in specs if s.name in set(only)]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise UsageError(f"--benchmark: duplicate benchmark names {sorted({n for n in names if names.count(n) > 1})}")

    from moge2_ros.inference import PredictorOptions, load_predictor

    predictor = load_predictor(PredictorOptions(**model_arguments(args)), say=note)
    summary = run_benchmarks(
        specs, predictor, oracle=args.oracle, max_samples=args.max_samples, progress=not args.quiet,
        output_dir=args.output, align_resolution=(args.align_resolution, args.align_resolution), skip=args.skip,
        extra={"model": predictor.model_id, "device": str(predictor.device), "precision": args.precision,
               "num_tokens": predictor.num_tokens},
    )
    print(markdown_table(summary), end="")
    print(f"results in {args.output / 'results.json'} and {args.output / 'results.md'}")
    return 0


def cmd_bag_eval(args: argparse.Namespace) -> int:
    """``moge2-ros bag-eval``: see the subcommand help."""
    for path in (args.bag, args.gt_bag, args.compare):
        if path is not None and not path.exists():
            raise UsageError(f"no such bag: {path}")
    labels: list[str] = []
    if args.labels is not None:
        if args.compare is None:
            raise UsageError("--labels names the columns of --compare; give --compare too")
        labels = [label.strip() for label in args.labels.split(",")]
        if len(labels) != 2 or not all(labels) or labels[0] == labels[1] \
                or any(c in label for label in labels for c in "/\\"):
            raise UsageError(f"--labels {args.labels!r}: expected two different names A,B (no slashes)")
    if args.output.exists() and not args.output.is_dir():
        raise UsageError(f"--output is not a folder: {args.output}")
    if args.max_depth and args.max_depth <= args.min_depth:
        raise UsageError(f"--max-depth {args.max_depth} must exceed --min-depth {args.min_depth}")

    from moge2_ros.eval.bag_eval import BagEvalConfig, evaluate_bag
    from moge2_ros.eval.bag_eval_report import write_bag_eval_outputs

    config = BagEvalConfig(
        pred_bag=args.bag, gt_bag=args.gt_bag, gt_depth_topic=args.gt_depth_topic,
        gt_cloud_topic=args.gt_cloud_topic, gt_camera_info_topic=args.gt_camera_info_topic,
        pred_depth_topic=args.pred_depth_topic, pred_camera_info_topic=args.pred_camera_info_topic,
        geometry_topic=args.geometry_topic, image_topic=args.image_topic, tolerance_ms=args.tolerance_ms,
        max_frames=args.max_frames, every=args.every, min_depth=args.min_depth, max_depth=args.max_depth or None,
        align_resolution=(args.align_resolution, args.align_resolution), skip=tuple(args.skip),
        sample_images=max(0, args.sample_images),
    )
    if args.compare is not None:
        return _bag_eval_compare(args, config, labels)
    result = evaluate_bag(config, progress=not args.quiet)
    paths = write_bag_eval_outputs(result, args.output)
    s = result.summary
    nan = float("nan")
    print(f"{s['frames_evaluated']} frames evaluated ({s['frames_unmatched']} predictions without ground truth): "
          f"metric AbsRel {s.get('depth_metric/rel', nan):.4f}, δ1 {s.get('depth_metric/delta1', nan):.4f}, "
          f"scale {s.get('scale', nan):.4f}, scale drift {s.get('scale_drift', nan):.4f}, "
          f"scale flicker {s.get('scale_flicker', nan):.4f}")
    for kind, path in paths.items():
        print(f"  {kind:8s} {path}", file=sys.stdout)
    return 0


def _bag_eval_compare(args: argparse.Namespace, config: Any, labels: list[str]) -> int:
    """``bag-eval BAG --compare OTHER``: both evaluated against the same ground truth, the side-by-side table
    printed and written (comparison.md / .json), each bag's own outputs in ``<output>/<label>/``."""
    from dataclasses import replace

    from moge2_ros.eval.bag_eval import evaluate_bag
    from moge2_ros.eval.bag_eval_compare import comparison, comparison_markdown, default_label, write_comparison
    from moge2_ros.eval.bag_eval_report import write_bag_eval_outputs

    gt_bag = config.gt_bag or config.pred_bag  # the first bag's ground truth for both
    first = evaluate_bag(replace(config, gt_bag=gt_bag), progress=not args.quiet)
    second = evaluate_bag(replace(config, pred_bag=args.compare, gt_bag=gt_bag), progress=not args.quiet)
    if not labels:
        labels = [default_label(first, args.bag.name), default_label(second, args.compare.name)]
        if labels[0] == labels[1]:
            labels = [args.bag.name, args.compare.name] if args.bag.name != args.compare.name else ["a", "b"]
    record = comparison([(labels[0], first), (labels[1], second)])
    print(comparison_markdown(record), end="")
    paths = write_comparison(record, args.output)
    for label, result in zip(labels, (first, second)):
        paths[f"{label} report"] = write_bag_eval_outputs(result, args.output / label)["report"]
    for kind, path in paths.items():
        print(f"  {kind:8s} {path}", file=sys.stdout)
    return 0
