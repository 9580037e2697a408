"""``moge2-ros bag-infer`` and ``moge2-ros make-bag`` (registered through ``moge2_ros.cli.SUBCOMMAND_MODULES``).

Nothing heavy is imported at module level: rosbags, torch and the model load inside the handlers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any
from moge2_ros.cli_args import positive_float as _positive_float

__all__ = ["add_parsers", "cmd_bag_infer", "cmd_make_bag"]


def _int_at_least(minimum: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    return parse


def add_parsers(sub: Any) -> None:
    """Register ``bag-infer`` and ``make-bag`` on the ``moge2-ros`` subparsers ``sub``."""
    infer = sub.add_parser(
        "bag-infer",
        help="run the model over a rosbag2 recording and write depth, camera_info, points and geometry into a new bag",
        description=(
            "Read IN_BAG (rosbag2 folder or .mcap/.db3 file, sqlite3 or MCAP; no ROS installation needed), run "
            "MoGe-2 on an image topic (raw or compressed) and write OUT_BAG with <ns>/depth/image (32FC1 metres, "
            "NaN invalid), <ns>/depth/camera_info, <ns>/geometry (moge2_ros_msgs/MonocularGeometry) and, with "
            "--points, <ns>/points: the same messages moge2_node publishes, with the images' header stamps and "
            "frame ids. The output is written to OUT_BAG.partial and renamed to OUT_BAG only when complete; an "
            "interrupted run continues with --resume."
        ),
        epilog="Exit status: 0 success, 1 runtime error (bad bag, model), 2 usage error.",
    )
    infer.add_argument("in_bag", type=Path, metavar="IN_BAG", help="input rosbag2 folder or .mcap / .db3 file")
    infer.add_argument("out_bag", type=Path, metavar="OUT_BAG", help="output rosbag2 folder (created)")
    infer.add_argument("--model", metavar="SRC",
                       help="model.pt / .safetensors file, model folder or Hugging Face id (e.g. "
                            "Ruicheng/moge-2-vitl-normal); default: the bundled demo model")
    infer.add_argument("--image-topic", metavar="TOPIC", help="Image or CompressedImage topic (default: the only one)")
    infer.add_argument("--camera-info-topic", metavar="TOPIC",
                       help="CameraInfo of the image (default: the image's sibling .../camera_info when present)")
    infer.add_argument("--no-camera-info", action="store_true", help="estimate the intrinsics even if a CameraInfo exists")
    infer.add_argument("--output-namespace", default="/moge2", metavar="NS", help="output topic prefix (default /moge2)")
    infer.add_argument("--points", action="store_true", help="also write <ns>/points (PointCloud2 x, y, z, rgb)")
    infer.add_argument("--cloud-unorganized", action="store_true", help="drop invalid points (default: organized, NaN)")
    infer.add_argument("--cloud-stride", type=_int_at_least(1), default=1, metavar="N", help="keep every N-th pixel")
    infer.add_argument("--every", type=_int_at_least(1), default=1, metavar="N", help="process every N-th image")
    infer.add_argument("--max-frames", type=_int_at_least(1), metavar="N", help="stop after N frames")
    infer.add_argument("--copy-input-topics", action="store_true", help="copy all input messages into the output bag")
    infer.add_argument("--storage", choices=("mcap", "sqlite3"), help="output storage (default: the input's)")
    infer.add_argument("--chunk-frames", type=_int_at_least(1), default=50, metavar="N",
                       help="frames per resumable chunk (default 50)")
    infer.add_argument("--resume", action="store_true", help="continue the interrupted run left in OUT_BAG.partial")
    infer.add_argument("--overwrite", action="store_true", help="replace OUT_BAG and discard OUT_BAG.partial")
    infer.add_argument("--device", metavar="cpu|cuda", help="inference device (default: cuda when available)")
    infer.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32", help="default fp32")
    res = infer.add_mutually_exclusive_group()
    res.add_argument("--resolution-level", type=int, choices=range(10), default=9, metavar="0-9",
                     help="0 = fewest ViT tokens (fastest) ... 9 = most (default 9)")
    res.add_argument("--num-tokens", type=_int_at_least(1), metavar="N", help="exact ViT token budget")
    infer.add_argument("--edge-rtol", type=_positive_float, metavar="R", help="flying-pixel filter threshold")
    infer.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary")
    infer.set_defaults(handler=cmd_bag_infer)

    make = sub.add_parser(
        "make-bag",
        help="write a rosbag2 recording (image, camera_info, registered depth) from a dataset folder",
        description=(
            "Write OUT_BAG from SOURCE: a folder-format dataset (moge2_ros.data.folder) or the 7-Scenes folder "
            "(frame-*.color.jpg / .depth.png; depth registered to the colour image). Topics: "
            "/camera/color/image_raw (rgb8) or .../compressed (--image-format jpeg|png), /camera/color/camera_info, "
            "/camera/aligned_depth_to_color/image_raw (16UC1 mm or 32FC1 m) and, with --cloud, /camera/lidar/points."
        ),
    )
    make.add_argument("source", type=Path, metavar="SOURCE", help="dataset folder")
    make.add_argument("out_bag", type=Path, metavar="OUT_BAG", help="output rosbag2 folder (created)")
    make.add_argument("--format", choices=("auto", "folder", "sevenscenes"), default="auto",
                      help="SOURCE layout (default: auto-detect)")
    make.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="default mcap")
    make.add_argument("--image-format", choices=("rgb8", "bgr8", "jpeg", "png"), default="rgb8", help="default rgb8")
    make.add_argument("--depth-encoding", choices=("16UC1", "32FC1"), default="16UC1", help="default 16UC1")
    make.add_argument("--cloud", action="store_true", help="also write the depth back-projected as a PointCloud2")
    make.add_argument("--rate", type=_positive_float, default=10.0, metavar="HZ", help="frame rate of the stamps")
    make.add_argument("--max-frames", type=_int_at_least(1), metavar="N", help="first N frames only")
    make.set_defaults(handler=cmd_make_bag)


def cmd_bag_infer(args: argparse.Namespace) -> int:
    """``moge2-ros bag-infer``."""
    from moge2_ros.bags.infer import BagInferOptions, run_bag_infer
    from moge2_ros.cli import UsageError

    if not args.in_bag.exists():
        raise UsageError(f"IN_BAG: no such file or folder: {args.in_bag}")
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other")
    options = BagInferOptions(
        model=args.model, image_topic=args.image_topic, camera_info_topic=args.camera_info_topic,
        use_camera_info=not args.no_camera_info, output_namespace=args.output_namespace, points=args.points,
        cloud_organized=not args.cloud_unorganized, cloud_stride=args.cloud_stride, every=args.every,
        max_frames=args.max_frames, copy_input_topics=args.copy_input_topics, storage=args.storage,
        chunk_frames=args.chunk_frames, device=args.device, precision=args.precision,
        resolution_level=args.resolution_level, num_tokens=args.num_tokens, edge_rtol=args.edge_rtol,
    )
    report = run_bag_infer(args.in_bag, args.out_bag, options, resume=args.resume, overwrite=args.overwrite,
                           progress=not args.quiet)
    if not args.quiet:
        print(f"wrote {report.output}: {report.frames} frames"
              + (f" ({report.resumed_frames} from the interrupted run)" if report.resumed_frames else "")
              + (f", {report.bad_frames} skipped (undecodable)" if report.bad_frames else "")
              + f", model {report.inference_fps:.2f} frames/s, {report.wall_s:.1f} s in all")
        for topic, count in sorted(report.topics.items()):
            print(f"  {topic}: {count}")
    return 0


def cmd_make_bag(args: argparse.Namespace) -> int:
    """``moge2-ros make-bag``."""
    from moge2_ros.bags.testing import write_samples_bag
    from moge2_ros.cli import UsageError
    from moge2_ros.data.open import FORMAT_NAMES, detect_format, open_dataset

    if not args.source.is_dir():
        raise UsageError(f"SOURCE: no such folder: {args.source}")
    layout = args.format if args.format != "auto" else detect_format(args.source)
    if layout not in ("folder", "sevenscenes"):
        raise UsageError(f"SOURCE {args.source}: a {FORMAT_NAMES[layout]}; make-bag reads a folder-format dataset "
                         "or a 7-Scenes folder")
    dataset = open_dataset(args.source, layout)
    count = len(dataset) if args.max_frames is None else min(len(dataset), args.max_frames)
    result = write_samples_bag(
        args.out_bag, (dataset[i] for i in range(count)), args.storage, image_format=args.image_format,
        depth_encoding=args.depth_encoding, with_cloud=args.cloud, period_ns=int(round(1e9 / args.rate)),
    )
    topics = [result.image_topic, result.camera_info_topic, result.depth_topic, result.cloud_topic]
    print(f"wrote {args.out_bag} ({args.storage}, {count} frames from {layout} {args.source}): "
          + ", ".join(t for t in topics if t), file=sys.stdout)
    return 0
