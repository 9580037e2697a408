"""``moge2-ros make-synthetic``, ``make-bag`` and ``make-example-image``: write datasets, recordings and images.

Registered through ``moge2_ros.cli.SUBCOMMAND_MODULES``; nothing heavy is imported at module level (numpy,
rosbags and the renderer load inside the handlers).
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path
from typing import Any

from moge2_ros.cli_args import fov, positive_float, positive_int
from moge2_ros.errors import UsageError

__all__ = ["add_parsers", "cmd_make_bag", "cmd_make_example_image", "cmd_make_synthetic"]


def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels, e.g. 320x256, got {text!r}")
    width, height = int(match.group(1)), int(match.group(2))
    if not (8 <= width <= 8192 and 8 <= height <= 8192):
        raise argparse.ArgumentTypeError(f"width and height must be in [8, 8192] pixels, got {text!r}")
    return width, height


def add_parsers(sub: Any) -> None:
    """Register ``make-synthetic``, ``make-bag`` and ``make-example-image`` on the ``moge2-ros`` subparsers."""
    parser = sub.add_parser(
        "make-synthetic",
        help="render random synthetic rooms and streets with exact depth, normals and sky masks",
        description="Render COUNT random frames (rooms and streets, random intrinsics and camera poses) with exact "
                    "metric depth, unit normals and sky masks, and write them to DIR in the folder dataset format "
                    "(docs/DATASETS.md): <stem>.rgb.png, <stem>.depth.npy|png|exr, <stem>.intrinsics.json, "
                    "<stem>.sky.png, <stem>.normal.npy and dataset.yaml (label_type A, metric). Frame i is the "
                    "same for the same --seed and --size whatever --count or --start.",
        epilog="Exit status: 0 success, 1 runtime error, 2 usage error.",
    )
    parser.add_argument("--output", "-o", required=True, type=Path, metavar="DIR", help="output folder (created)")
    parser.add_argument("--count", "-n", required=True, type=positive_int, metavar="N", help="number of frames")
    parser.add_argument("--size", type=_size, default=(320, 256), metavar="WxH", help="image size (default 320x256)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    parser.add_argument("--start", type=int, default=0, metavar="I", help="index of the first frame (default 0)")
    parser.add_argument("--depth-format", choices=("npy", "png", "exr"), default="npy",
                        help="npy: float32 metres (default, exact); png: uint16 millimetres; exr: float32 metres")
    parser.add_argument("--families", default="room,street", metavar="LIST",
                        help="comma-separated scene families: room, street (default both)")
    parser.add_argument("--no-shadows", action="store_true", help="skip shadow rays (faster, fewer depth cues)")
    parser.add_argument("--overwrite", action="store_true", help="allow writing into a folder that has frames")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    parser.set_defaults(handler=cmd_make_synthetic)

    make = sub.add_parser(
        "make-bag",
        help="write a rosbag2 recording (image, camera_info, registered depth) from a dataset folder",
        description=(
            "Write OUT_BAG from SOURCE: a folder-format dataset (moge2_ros.data.folder) or the 7-Scenes folder "
            "(frame-*.color.jpg / .depth.png; depth registered to the colour image). Topics: "
            "/camera/color/image_raw (rgb8) or .../compressed (--image-format jpeg|png), /camera/color/camera_info, "
            "/camera/aligned_depth_to_color/image_raw (16UC1 mm or 32FC1 m) and, with --cloud, /camera/lidar/points."
        ),
        epilog="Exit status: 0 success, 1 runtime error, 2 usage error.",
    )
    make.add_argument("source", type=Path, metavar="SOURCE", help="dataset folder")
    make.add_argument("out_bag", type=Path, metavar="OUT_BAG", help="output rosbag2 folder (created)")
    make.add_argument("--format", choices=("auto", "folder", "sevenscenes"), default="auto",
                      help="SOURCE layout (default: auto-detect)")
    make.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="default mcap")
    make.add_argument("--image-format", choices=("rgb8", "bgr8", "jpeg", "png"), default="rgb8", help="default rgb8")
    make.add_argument("--depth-encoding", choices=("16UC1", "32FC1"), default="16UC1", help="default 16UC1")
    make.add_argument("--cloud", action="store_true", help="also write the depth back-projected as a PointCloud2")
    make.add_argument("--rate", type=positive_float, default=10.0, metavar="HZ",
                      help="frame rate of the stamps (default 10)")
    make.add_argument("--max-frames", type=positive_int, metavar="N", help="first N frames only")
    make.set_defaults(handler=cmd_make_bag)

    example = sub.add_parser(
        "make-example-image",
        help="render the example image (a small room with spheres; no download)",
        description="Ray-cast the example room (moge2_ros.data.example: a checker floor, coloured walls, two "
                    "spheres) and save it as a PNG; prints the true intrinsics.",
        epilog="Exit status: 0 success, 1 runtime error, 2 usage error.",
    )
    example.add_argument("--output", "-o", required=True, type=Path, metavar="FILE", help="output .png")
    example.add_argument("--width", type=positive_int, default=640, help="pixels (default 640)")
    example.add_argument("--height", type=positive_int, default=480, help="pixels (default 480)")
    example.add_argument("--fov-x", type=fov, default=60.0, metavar="DEG",
                         help="horizontal field of view, 10-150 degrees (default 60)")
    example.set_defaults(handler=cmd_make_example_image)


def cmd_make_synthetic(args: argparse.Namespace) -> int:
    """Handler of ``make-synthetic``."""
    from moge2_ros.data.folder import list_stems, write_sample
    from moge2_ros.data.synthetic import FAMILIES, SyntheticConfig, SyntheticDataset
    from moge2_ros.errors import DatasetError

    families = tuple(f.strip() for f in args.families.split(",") if f.strip())
    unknown = [f for f in families if f not in FAMILIES]
    if not families or unknown:
        raise UsageError(f"--families: expected a comma-separated subset of {', '.join(FAMILIES)}, got "
                         f"{args.families!r}")
    if args.start < 0:
        raise UsageError(f"--start: expected an integer >= 0, got {args.start}")
    if args.depth_format == "exr":
        from moge2_ros.io.writers import exr_available

        if not exr_available():
            raise UsageError('--depth-format exr needs the OpenEXR package (>= 3.3): pip install "moge2_ros[exr]"')
    output: Path = args.output
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output {output}: exists and is not a directory")
    if output.is_dir() and list_stems(output) and not args.overwrite:
        raise UsageError(f"--output {output}: already holds frames; pass --overwrite to add or replace frames")
    width, height = args.size
    config = SyntheticConfig(families=families, shadows=not args.no_shadows)
    dataset = SyntheticDataset(args.start + args.count, height, width, seed=args.seed, config=config)
    digits = max(6, len(str(args.start + args.count - 1)))
    started = time.perf_counter()
    for n, index in enumerate(range(args.start, args.start + args.count), start=1):
        sample = dataset[index]
        try:
            write_sample(output, f"{index:0{digits}d}", sample, depth_format=args.depth_format)
        except DatasetError as exc:
            if args.depth_format == "png" and "16-bit millimetre PNG" in str(exc):
                raise DatasetError(f"{exc} (frame {index}; streets reach far: use --depth-format npy or exr)"
                                   ) from None
            raise
        if not args.quiet:
            rate = n / (time.perf_counter() - started)
            print(f"\r[make-synthetic] {n}/{args.count} frames ({rate:.1f} frames/s)", end="", flush=True)
    if not args.quiet:
        print(f"\n[make-synthetic] wrote {args.count} frames of {width}x{height} to {output}")
    return 0


def cmd_make_bag(args: argparse.Namespace) -> int:
    """Handler of ``make-bag``."""
    from moge2_ros.data.make_bag import write_samples_bag
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
          + ", ".join(t for t in topics if t))
    return 0


def cmd_make_example_image(args: argparse.Namespace) -> int:
    """Handler of ``make-example-image``: render and save the example room."""
    from moge2_ros.data.example import render_example_scene
    from moge2_ros.io import write_rgb_png

    if args.width < 8 or args.height < 8 or args.width * args.height > 4096 * 4096:
        raise UsageError(f"--width/--height: expected 8..4096-ish pixels, got {args.width}x{args.height}")
    if not 10.0 < args.fov_x < 150.0:
        raise UsageError(f"--fov-x: expected degrees in (10, 150), got {args.fov_x:g}")
    scene = render_example_scene(args.width, args.height, args.fov_x)
    path = write_rgb_png(args.output, scene.rgb)
    k = scene.intrinsics
    print(f"wrote {path} ({args.width}x{args.height}, true fx={k[0, 0]:.2f} fy={k[1, 1]:.2f} "
          f"cx={k[0, 2]:.2f} cy={k[1, 2]:.2f} px, fov_x {args.fov_x:g} deg)")
    return 0
