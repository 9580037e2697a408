"""``moge2-ros make-synthetic``: write procedurally rendered frames in the folder dataset format.

Registered through ``moge2_ros.cli.SUBCOMMAND_MODULES``; nothing heavy is imported at module level.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path
from typing import Any
from moge2_ros.cli_args import positive_int as _count

__all__ = ["add_parsers", "cmd_make_synthetic"]


def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels, e.g. 320x256, got {text!r}")
    width, height = int(match.group(1)), int(match.group(2))
    if not (8 <= width <= 8192 and 8 <= height <= 8192):
        raise argparse.ArgumentTypeError(f"width and height must be in [8, 8192] pixels, got {text!r}")
    return width, height


def add_parsers(sub: Any) -> None:
    """Register ``make-synthetic`` on the ``moge2-ros`` subparsers."""
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
    parser.add_argument("--count", "-n", required=True, type=_count, metavar="N", help="number of frames")
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


def cmd_make_synthetic(args: argparse.Namespace) -> int:
    """Handler of ``make-synthetic``."""
    from moge2_ros.cli import UsageError
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
