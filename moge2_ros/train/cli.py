"""``moge2-ros train``, ``finetune`` and ``make-demo-model``: the commands that write a model (registered through
:func:`add_parsers`).

* ``moge2-ros train CONFIG [--resume] [--output DIR] [--steps N] [--device D]``: train as the YAML file says.
* ``moge2-ros finetune [--model SRC] --data FOLDER|BAG [--output DIR] [--steps N] [--config YAML] ...``: continue
  training a checkpoint on a folder dataset, a 7-Scenes sequence or a rosbag2 recording with a lower learning rate.

Multi-GPU / multi-node: start either under ``torchrun``, e.g.
``torchrun --nproc_per_node 4 -m moge2_ros train CONFIG``.  Nothing heavy is imported at module level.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any
from moge2_ros.cli_args import add_device_argument, add_model_arguments, note, positive_float, positive_int
from moge2_ros.errors import UsageError

__all__ = ["add_parsers", "cmd_train", "cmd_finetune", "cmd_make_demo_model", "finetune_config_dict",
           "CPU_LOSS_OVERRIDES"]

#: Loss settings for CPU training: the official alignment resolutions (48 global; 24 / 12 / 6 local) and patch
#: counts cost seconds per instance on a CPU (the robust alignments are O(N^2 log N) in the N = resolution^2
#: aligned points).  ``finetune`` applies these when it runs on a CPU and ``--config`` sets no loss section.
CPU_LOSS_OVERRIDES: dict[str, Any] = {
    "A": {"global": {"align_resolution": 16}, "patch_4": {"align_resolution": 8},
          "patch_16": {"align_resolution": 6, "num_patches": 64},
          "patch_64": {"align_resolution": 4, "num_patches": 256}},
    "B": {"global": {"align_resolution": 16}, "patch_4": {"align_resolution": 8},
          "patch_16": {"align_resolution": 6, "num_patches": 64}},
    "C": {"global": {"align_resolution": 16}, "patch_4": {"align_resolution": 8}},
}


def add_parsers(sub: Any) -> None:
    """Register ``train``, ``finetune`` and ``make-demo-model`` on the ``moge2-ros`` subcommand parser ``sub``."""
    train = sub.add_parser(
        "train",
        help="train a MoGe-2 model as a YAML config says (single process, or under torchrun)",
        description=(
            "Train a MoGe-2 model as CONFIG says (see docs/TRAINING.md for every key). Writes OUTPUT/config.yaml, "
            "OUTPUT/log.jsonl, OUTPUT/checkpoints/step_NNNNNNNN.pt (official {'model_config', 'model'} format) "
            "with a .state.pt beside each (optimizer, scheduler, RNG, step) for exact resume, validation JSONs, "
            "TensorBoard events in OUTPUT/tb, and OUTPUT/model.pt at the end. Multi-GPU / multi-node: "
            "torchrun --nproc_per_node N -m moge2_ros train CONFIG."
        ),
        epilog="Exit status: 0 success, 1 runtime error (bad config, data, model), 2 usage error.",
    )
    train.add_argument("config", type=Path, metavar="CONFIG", help="training configuration (YAML)")
    train.add_argument("--resume", action="store_true",
                       help="continue from OUTPUT/checkpoints/latest.json (start fresh when there is none)")
    train.add_argument("--output", "-o", type=Path, metavar="DIR", help="run folder (overrides output_dir)")
    train.add_argument("--steps", type=positive_int, metavar="N", help="total optimizer steps (overrides loop.steps)")
    add_device_argument(train, training=True)
    train.set_defaults(handler=cmd_train)

    ft = sub.add_parser(
        "finetune",
        help="fine-tune a model on a folder dataset or a rosbag2 recording",
        description=(
            "Fine-tune the model SRC (default: the bundled demo model) on FOLDER (the documented folder format "
            "or a 7-Scenes sequence) or BAG (a rosbag2 recording: image + "
            "registered depth or LiDAR cloud + camera_info topics) with a lower learning rate (head 2e-5, "
            "backbone 2e-6, cosine decay). --config YAML overlays any part of the configuration (same keys as "
            "'train'). On a CPU the loss alignments run at reduced resolution unless --config sets 'loss'. "
            "The result is OUTPUT/model.pt, loadable by 'infer', the node and the official code."
        ),
        epilog="Exit status: 0 success, 1 runtime error, 2 usage error.",
    )
    add_model_arguments(ft, precision=False, tokens=False, device="training", model_help="model to start from:")
    ft.add_argument("--data", required=True, type=Path, metavar="FOLDER|BAG",
                    help="folder dataset, 7-Scenes sequence folder, or a rosbag2 folder / .mcap / .db3 file "
                         "(needs --image-topic)")
    ft.add_argument("--output", "-o", type=Path, default=Path("runs/finetune"), metavar="DIR",
                    help="run folder (default: runs/finetune)")
    ft.add_argument("--steps", type=positive_int, metavar="N", help="optimizer steps (default 1000)")
    ft.add_argument("--config", type=Path, metavar="YAML", help="partial training config overlaid on the defaults")
    ft.add_argument("--lr", type=positive_float, metavar="LR",
                    help="head learning rate (the backbone gets LR / 10)")
    ft.add_argument("--batch-size", type=positive_int, metavar="B", help="per-process batch (default 2)")
    ft.add_argument("--resume", action="store_true", help="continue an interrupted fine-tuning run in OUTPUT")
    bag = ft.add_argument_group("rosbag2 input")
    bag.add_argument("--image-topic", metavar="TOPIC", help="sensor_msgs/Image or CompressedImage topic")
    labels = bag.add_mutually_exclusive_group()
    labels.add_argument("--depth-topic", metavar="TOPIC", help="registered depth image topic (label type B)")
    labels.add_argument("--cloud-topic", metavar="TOPIC", help="PointCloud2 LiDAR topic (label type C)")
    bag.add_argument("--camera-info-topic", metavar="TOPIC",
                     help="CameraInfo topic (default: the image topic's sibling camera_info)")
    bag.add_argument("--tolerance-ms", type=positive_float, metavar="MS",
                     help="largest image/label stamp offset (default: the bag reader's)")
    ft.set_defaults(handler=cmd_finetune)

    demo_model = sub.add_parser(
        "make-demo-model",
        help="write an UNTRAINED random-init tiny model (pipeline tests only; not the bundled demo model)",
        description="Write a random-init MoGe2Config.tiny() model in the official checkpoint format (moge2_ros.demo). "
                    "Its outputs are meaningless: it only shows that a pipeline runs. The bundled demo model "
                    "(the default of every --model) is a trained one; real use needs the official weights.",
        epilog="Exit status: 0 success, 1 runtime error, 2 usage error.",
    )
    demo_model.add_argument("--output", "-o", required=True, type=Path, metavar="FILE", help=".pt or .safetensors")
    demo_model.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo_model.set_defaults(handler=cmd_make_demo_model)


# ------------------------------------------------------------------------------------------------ handlers


def _run(cfg: Any, resume: bool) -> int:
    from moge2_ros.train.trainer import train

    result = train(cfg, resume=resume)
    if result.model_path is not None:
        print(result.model_path)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """``moge2-ros train``: see the subcommand help."""
    from moge2_ros.train.config import load_config

    if not args.config.is_file():
        raise UsageError(f"CONFIG: no such file: {args.config}")
    overrides: dict[str, Any] = {}
    if args.output is not None:
        overrides["output_dir"] = str(args.output)
    if args.steps is not None:
        overrides.setdefault("loop", {})["steps"] = args.steps
    if args.device is not None:
        overrides.setdefault("loop", {})["device"] = args.device
    return _run(load_config(args.config, overrides), args.resume)


def _data_source(args: argparse.Namespace) -> dict[str, Any]:
    """The training source (YAML schema) of ``--data``, whose format :func:`moge2_ros.data.open.detect_format`
    decides: a folder dataset, a 7-Scenes folder or a rosbag2 recording (which needs the topic options)."""
    from moge2_ros.data.open import FORMAT_NAMES, detect_format

    path: Path = args.data
    if not path.exists():
        raise UsageError(f"--data: no such folder or file: {path}")
    bag_options = ("image_topic", "depth_topic", "cloud_topic", "camera_info_topic", "tolerance_ms")
    given = [o for o in bag_options if getattr(args, o) is not None]
    kind = None if given else detect_format(path)
    if given or kind == "bag":
        if not args.image_topic:
            raise UsageError(f"--data {path} is a rosbag2 recording: give --image-topic and --depth-topic or "
                             "--cloud-topic")
        if not (args.depth_topic or args.cloud_topic):
            raise UsageError("--data BAG: give --depth-topic (registered depth) or --cloud-topic (LiDAR)")
        kind = detect_format(path)
        if kind != "bag":
            raise UsageError(f"--{given[0].replace('_', '-')} only applies to rosbag2 input; {path} is a "
                             f"{FORMAT_NAMES[kind]}")
        source: dict[str, Any] = {"kind": "bag", "path": str(path), "image_topic": args.image_topic,
                                  "depth_topic": args.depth_topic, "cloud_topic": args.cloud_topic,
                                  "camera_info_topic": args.camera_info_topic}
        if args.tolerance_ms is not None:
            source["tolerance_ms"] = args.tolerance_ms
        return source
    if kind in ("folder", "sevenscenes"):
        return {"kind": kind, "root": str(path)}
    raise UsageError(f"--data {path}: an {FORMAT_NAMES[kind]}; finetune trains on a folder dataset, a 7-Scenes "
                     "folder or a rosbag2 recording")


def finetune_config_dict(model: str, source: dict[str, Any], output: str, steps: int = 1000) -> dict[str, Any]:
    """The default fine-tuning configuration (a plain dict in the YAML schema)."""
    return {
        "output_dir": output,
        "model": {"init": model, "preset": None},
        "data": {"train": [source], "augment": {"image_size": [240, 320]}},
        "optim": {"lr_head": 2e-5, "lr_backbone": 2e-6},
        "schedule": {"kind": "cosine", "warmup_steps": min(50, max(1, steps // 10)), "min_lr_ratio": 0.1},
        "loop": {"steps": steps, "batch_size": 2, "num_tokens_range": [1200, 2400]},
        "checkpoint": {"every": 200, "keep": 2},
        "log": {"every": 10},
    }


def cmd_finetune(args: argparse.Namespace) -> int:
    """``moge2-ros finetune``: see the subcommand help."""
    import yaml

    from moge2_ros.assets import model_source
    from moge2_ros.train.config import TrainConfigError, config_from_dict, merge_dicts
    from moge2_ros.train.distributed import resolve_train_device

    source = _data_source(args)
    model = model_source(args.model, say=note)
    data = finetune_config_dict(model, source, str(args.output), args.steps or 1000)
    user: dict[str, Any] = {}
    if args.config is not None:
        if not args.config.is_file():
            raise UsageError(f"--config: no such file: {args.config}")
        try:
            user = yaml.safe_load(args.config.read_text()) or {}
        except yaml.YAMLError as exc:
            raise TrainConfigError(f"{args.config}: not valid YAML: {' '.join(str(exc).split())}") from None
        if not isinstance(user, dict):
            raise TrainConfigError(f"{args.config}: expected a mapping at the top level")
        data = merge_dicts(data, user)
    cli: dict[str, Any] = {"output_dir": str(args.output), "model": {"init": model}}
    if args.steps is not None:
        cli.setdefault("loop", {})["steps"] = args.steps
    if args.batch_size is not None:
        cli.setdefault("loop", {})["batch_size"] = args.batch_size
    if args.device is not None:
        cli.setdefault("loop", {})["device"] = args.device
    if args.lr is not None:
        cli["optim"] = {"lr_head": args.lr, "lr_backbone": args.lr / 10}
    data = merge_dicts(data, cli)
    data["data"]["train"] = [source]  # --data is the training set (a data.train in --config is replaced)
    device = resolve_train_device(data.get("loop", {}).get("device", "auto"))
    if device.type == "cpu" and "loss" not in user:
        data["loss"] = {"overrides": CPU_LOSS_OVERRIDES}
        if "num_tokens_range" not in user.get("loop", {}):
            data["loop"]["num_tokens_range"] = [400, 800]
    try:
        cfg = config_from_dict(data)
    except TrainConfigError as exc:
        where = f"{args.config}: " if args.config is not None else ""
        raise TrainConfigError(f"{where}{exc}") from None
    return _run(cfg, args.resume)


def cmd_make_demo_model(args: argparse.Namespace) -> int:
    """``moge2-ros make-demo-model``: write the untrained tiny model and warn that it is untrained."""
    import sys

    from moge2_ros.demo import UNTRAINED_WARNING, make_demo_model

    path = make_demo_model(args.output, seed=args.seed)
    print(f"wrote {path}")
    print(UNTRAINED_WARNING, file=sys.stderr)
    return 0
