"""``moge2-ros refine``: clean real geometry labels with a synthetic-trained model and write them as a folder dataset.

Registered through ``moge2_ros.cli.SUBCOMMAND_MODULES``; nothing heavy is imported at module level.

Per frame: the model predicts points in the label's camera (its intrinsics are given as known), the mismatch
filter removes real depth that disagrees locally with the prediction, and the log-depth Poisson completion fills
removed and missing pixels (:mod:`moge2_ros.refine.pipeline`).  The output folder (docs/DATASETS.md format) gets
``<stem>.rgb.png``, ``<stem>.depth.npy``, ``<stem>.intrinsics.json``, ``<stem>.provenance.png`` (0 missing,
1 kept, 2 filtered, 3 filled) and ``dataset.yaml``, plus ``refine_config.json`` (the settings),
``refine_progress.jsonl`` (one line of stats per finished frame: resuming skips those frames) and
``refine_summary.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

from moge2_ros.cli_args import add_model_arguments, model_arguments, note, positive_int
from moge2_ros.errors import ModelLoadError, UsageError

__all__ = ["add_parsers", "cmd_refine"]

PROGRESS_FILE = "refine_progress.jsonl"
CONFIG_FILE = "refine_config.json"
SUMMARY_FILE = "refine_summary.json"


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of milliseconds, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def add_parsers(sub: Any) -> None:
    """Register ``refine`` on the ``moge2-ros`` subparsers."""
    parser = sub.add_parser(
        "refine",
        help="filter and complete real depth labels with a synthetic-trained model (MoGe-2 data refinement)",
        description="Refine the real geometry labels of DATA (a folder dataset, a 7-Scenes sequence folder or a "
                    "rosbag2 recording) with MODEL: real depth whose local shape disagrees with the model after a "
                    "per-neighbourhood scale and shift alignment is removed, and removed or missing pixels are "
                    "filled by a log-depth Poisson completion (model gradients, real depth as boundary values). "
                    "Writes the refined frames to OUTPUT in the folder dataset format with a per-pixel "
                    "<stem>.provenance.png (0 missing, 1 kept, 2 filtered, 3 filled). Resumable: frames already "
                    "in OUTPUT/refine_progress.jsonl are skipped. The input is never modified.",
        epilog="Exit status: 0 success, 1 runtime error, 2 usage error.",
    )
    parser.add_argument("--data", required=True, type=Path, metavar="FOLDER|BAG",
                        help="folder dataset, 7-Scenes sequence folder, or rosbag2 folder / .mcap / .db3 file")
    parser.add_argument("--output", "-o", required=True, type=Path, metavar="FOLDER",
                        help="output folder dataset (created; must not be or contain the input)")
    parser.add_argument("--format", choices=("auto", "folder", "sevenscenes", "bag"), default="auto",
                        help="input kind (default: detected from --data)")
    bag = parser.add_argument_group("rosbag2 input")
    bag.add_argument("--image-topic", metavar="TOPIC", help="Image or CompressedImage topic")
    bag.add_argument("--depth-topic", metavar="TOPIC", help="registered depth Image topic (label type B)")
    bag.add_argument("--cloud-topic", metavar="TOPIC", help="PointCloud2 topic in the camera frame (label type C)")
    bag.add_argument("--camera-info-topic", metavar="TOPIC",
                     help="CameraInfo topic (default: the image topic's sibling camera_info)")
    bag.add_argument("--tolerance-ms", type=_tolerance, default=None, metavar="MS",
                     help="largest image / label stamp offset")
    add_model_arguments(parser, precision=False, model_help="synthetic-trained model that judges the labels:")
    parser.add_argument("--solver", choices=("auto", "scipy", "torch"), default="auto",
                        help="Poisson solver: scipy (sparse direct, CPU), torch (multigrid-started CG, any device); "
                             "auto = torch on CUDA, scipy on CPU when installed")
    parser.add_argument("--no-filter", action="store_true", help="skip the mismatch filter (only fill holes)")
    parser.add_argument("--no-fill", action="store_true", help="skip the completion (only remove mismatches)")
    parser.add_argument("--fill-filtered-only", action="store_true",
                        help="fill only the removed pixels, not those that never had real depth")
    parser.add_argument("--depth-format", choices=("npy", "png"), default="npy",
                        help="npy: float32 metres (default, exact); png: uint16 millimetres")
    parser.add_argument("--limit", type=positive_int, metavar="N", help="refine at most N frames (in order)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no per-frame lines")
    parser.set_defaults(handler=cmd_refine)


# ---------------------------------------------------------------------------------------------- input


def _open_input(args: argparse.Namespace) -> tuple[Sequence[Any], list[str], str]:
    """The dataset (:func:`moge2_ros.data.open.open_dataset`), one output stem per frame and a description."""
    from moge2_ros.data.open import FORMAT_NAMES, FORMAT_OPTIONS, detect_format, open_dataset

    data: Path = args.data
    if not data.exists():
        raise UsageError(f"--data {data}: no such file or directory")
    kind = args.format if args.format != "auto" else detect_format(data)
    options = {o: getattr(args, o) for o in ("image_topic", "depth_topic", "cloud_topic", "camera_info_topic",
                                             "tolerance_ms")}
    stray = [o for o, value in options.items() if value is not None and o not in FORMAT_OPTIONS[kind]]
    if stray:
        raise UsageError(f"--{stray[0].replace('_', '-')} only applies to rosbag2 input; {data} was read as "
                         f"a {FORMAT_NAMES[kind]} (see --format)")
    if kind == "bag" and (args.image_topic is None or (args.depth_topic is None) == (args.cloud_topic is None)):
        raise UsageError("rosbag2 input needs --image-topic and exactly one of --depth-topic or --cloud-topic")
    dataset = open_dataset(data, kind, **options)
    return dataset, list(dataset.stems), f"{FORMAT_NAMES[kind]} {data}"


def _check_paths(data: Path, output: Path) -> None:

    src, dst = data.resolve(), output.resolve()
    if src == dst or src in dst.parents or dst in src.parents:
        raise UsageError(f"--output {output}: must be a separate folder, neither the input {data} nor inside it "
                         "(refine never writes into its input)")
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output {output}: exists and is not a directory")


# ---------------------------------------------------------------------------------------------- resume


def _settings(args: argparse.Namespace, model: str, config: Any) -> dict[str, Any]:
    """What shapes the output (a resumed run must have the same): model, input, token budget, format, filter."""
    from dataclasses import asdict

    settings = {
        "model": model,
        "data": str(args.data.resolve()),
        "resolution_level": args.resolution_level,
        "depth_format": args.depth_format,
        "refine": json.loads(json.dumps(asdict(config))),
    }
    if args.num_tokens is not None:
        settings["num_tokens"] = args.num_tokens
    return settings


def _read_progress(output: Path) -> dict[str, dict[str, Any]]:
    """Finished frames of an earlier run (a torn last line from an interrupted run is ignored)."""
    path = output / PROGRESS_FILE
    done: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("stem"), str):
            done[record["stem"]] = record
    return done


def _start_or_resume(output: Path, settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    from moge2_ros.data.folder import list_stems

    config_path = output / CONFIG_FILE
    if config_path.is_file():
        try:
            previous = json.loads(config_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            raise UsageError(f"{config_path}: unreadable; remove it or choose another --output") from None
        if previous != settings:
            changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
            raise UsageError(f"--output {output}: holds a refine run with other settings ({', '.join(changed)}); "
                             "choose another --output or repeat the same command to resume")
    elif output.is_dir() and list_stems(output):
        raise UsageError(f"--output {output}: already holds frames that this command did not write; choose an "
                         "empty or new folder")
    output.mkdir(parents=True, exist_ok=True)
    if not config_path.is_file():
        tmp = config_path.with_name(f".{CONFIG_FILE}.tmp")
        tmp.write_text(json.dumps(settings, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, config_path)
    existing = set(list_stems(output)) if output.is_dir() else set()
    return {stem: record for stem, record in _read_progress(output).items() if stem in existing}


def _append_progress(output: Path, record: dict[str, Any]) -> None:
    with open(output / PROGRESS_FILE, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


# ---------------------------------------------------------------------------------------------- handler


def _frame_line(stem: str, record: dict[str, Any]) -> str:
    return (f"{stem}: filtered {record['filtered_percent']:.1f} % of {record['valid_real']} real pixels, "
            f"filled {record['filled_percent']:.1f} % of all pixels (kept {record['kept_percent']:.1f} %), "
            f"{record['seconds']:.1f} s")


#: The one warning of a refine run whose filter is judged by the bundled demo model (numbers: docs/REFINEMENT.md).
DEMO_JUDGE_WARNING = (
    "warning: the bundled demo model is too weak to judge real depth labels: on 7-Scenes it disagrees with about two "
    "thirds of the Kinect depth, so the filter discards most real pixels (23 % kept; docs/REFINEMENT.md). Give a "
    "stronger --model (e.g. Ruicheng/moge-2-vitl-normal), or use --no-filter to only fill holes")


def _is_demo_model(source: str) -> bool:
    """Whether ``source`` is the bundled demo model's file (given or fallen back to)."""
    from moge2_ros.assets import demo_model_path

    try:
        return Path(source).resolve() == demo_model_path()
    except (ModelLoadError, OSError):
        return False


def cmd_refine(args: argparse.Namespace) -> int:
    """Handler of ``refine``."""
    from tqdm import tqdm

    from moge2_ros.assets import model_source
    from moge2_ros.data.folder import write_sample
    from moge2_ros.inference import PredictorOptions, load_predictor
    from moge2_ros.refine.pipeline import RefineConfig, predict_points, refine_sample

    if args.no_filter and args.no_fill:
        raise UsageError("--no-filter and --no-fill together leave nothing to do")
    if args.solver == "scipy":
        from moge2_ros.refine.poisson import scipy_available

        if not scipy_available():
            raise UsageError("--solver scipy needs scipy: pip install 'moge2_ros[refine]' (or use --solver torch)")
    _check_paths(args.data, args.output)
    dataset, stems, description = _open_input(args)
    config = RefineConfig(filter_enabled=not args.no_filter, fill=not args.no_fill,
                          fill_missing=not args.fill_filtered_only, solver=args.solver)
    model = model_source(args.model, say=note)
    if config.filter_enabled and _is_demo_model(model):
        note(DEMO_JUDGE_WARNING)
    done = _start_or_resume(args.output, _settings(args, model, config))
    todo = [i for i, stem in enumerate(stems) if stem not in done]
    if args.limit is not None:
        todo = todo[: max(0, args.limit - len(done))] if len(done) < args.limit else []
    if not args.quiet:
        print(f"[refine] {description}: {len(stems)} frames, {len(done)} already refined, {len(todo)} to do -> "
              f"{args.output}")
    if todo:
        predictor = load_predictor(PredictorOptions(**model_arguments(args, model=model)), say=note)
    records = dict(done)
    bar = tqdm(todo, desc="refine", unit="frame", disable=args.quiet, dynamic_ncols=True)
    for i in bar:
        stem = stems[i]
        start = time.perf_counter()
        sample = dataset[i]
        refined = refine_sample(sample, predict_points(predictor, sample), config, device=predictor.device)
        write_sample(args.output, stem, refined, depth_format=args.depth_format)
        record = {"stem": stem, "source": sample.source, **refined.meta["refine"],
                  "seconds": time.perf_counter() - start}
        _append_progress(args.output, record)
        records[stem] = record
        if not args.quiet:
            bar.write(_frame_line(stem, record))
    bar.close()
    summary = _summary(records)
    tmp = args.output / f".{SUMMARY_FILE}.tmp"
    tmp.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, args.output / SUMMARY_FILE)
    if not args.quiet:
        print(f"[refine] {summary['frames']} frames in {args.output}: mean filtered "
              f"{summary['mean_filtered_percent']:.1f} % of real pixels, mean filled "
              f"{summary['mean_filled_percent']:.1f} % of pixels")
    return 0


def _summary(records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    keys = ("filtered_percent", "filled_percent", "kept_percent", "seconds")
    n = len(records)
    out: dict[str, Any] = {"frames": n}
    for key in keys:
        values = [float(r[key]) for r in records.values() if key in r]
        out[f"mean_{key}"] = sum(values) / len(values) if values else 0.0
    return out
