"""``moge2-ros infer`` (image files) and ``moge2-ros bag-infer`` (a rosbag2 recording): the model over recorded
input, written to files (registered through ``add_parsers``).

Both build their Predictor through :func:`moge2_ros.inference.load_predictor` from the one model argument group
(:func:`moge2_ros.cli_args.add_model_arguments`).  Nothing heavy is imported at module level: torch, the model,
numpy and rosbags load inside the handlers.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from moge2_ros.cli_args import (EXIT_INTERRUPTED, EXIT_OK, EXIT_RUNTIME, add_model_arguments, error, fov, model_arguments, note,
                                one_line, os_error_text, positive_float, positive_int)
from moge2_ros.errors import InputError, Moge2RosError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from moge2_ros.io.intrinsics import CameraIntrinsics

__all__ = ["add_parsers", "cmd_bag_infer", "cmd_infer", "collect_images"]


def add_parsers(sub: Any) -> None:
    """Register ``infer`` and ``bag-infer`` on the ``moge2-ros`` subparsers ``sub``."""
    infer = sub.add_parser(
        "infer",
        help="predict metric depth, points and intrinsics of an image or a folder of images",
        description=(
            "Predict metric geometry of IMAGE (or of every .png/.jpg/.jpeg/.bmp/.tif/.tiff file in FOLDER) and "
            "write per image: <stem>_depth.png (uint16 millimetres, 0 = invalid), <stem>_depth.npy (float32 "
            "metres, NaN = invalid; .exr with --exr), <stem>_depth_vis.png (colour preview), <stem>.ply (binary "
            "point cloud of the valid pixels, metres, optical frame x right / y down / z forward) and "
            "<stem>.json (intrinsics in pixels, fields of view, metric scale, ...)."
        ),
        epilog="Exit status: 0 success, 1 runtime error (model, inference, unreadable image), 2 usage error.",
    )
    infer.add_argument("inputs", nargs="+", metavar="IMAGE|FOLDER", help="image file(s) or folder(s) of images")
    infer.add_argument("--output", "-o", required=True, type=Path, metavar="DIR", help="output folder (created)")
    cam = infer.add_mutually_exclusive_group()
    cam.add_argument("--fov-x", type=fov, metavar="DEG", help="known horizontal field of view in degrees")
    cam.add_argument("--intrinsics", type=str, metavar="FX,FY,CX,CY",
                     help="known pinhole intrinsics in pixels (cx, cy: pixel centres at integer coordinates)")
    cam.add_argument("--intrinsics-file", type=Path, metavar="FILE",
                     help="known intrinsics from a .json/.yaml (K, camera_matrix, fx/fy/cx/cy; ROS calibration "
                          "YAML) or .txt (9 or 4 numbers) file")
    add_model_arguments(infer, edge_filter=True)
    infer.add_argument("--no-ply", action="store_true", help="do not write the .ply point cloud")
    infer.add_argument("--exr", action="store_true",
                       help="write <stem>_depth.exr (float32 metres) instead of .npy (needs the 'exr' extra)")
    infer.add_argument("--quiet", "-q", action="store_true", help="no progress bar, no per-image summary")
    infer.set_defaults(handler=cmd_infer)

    bag = sub.add_parser(
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
    bag.add_argument("in_bag", type=Path, metavar="IN_BAG", help="input rosbag2 folder or .mcap / .db3 file")
    bag.add_argument("out_bag", type=Path, metavar="OUT_BAG", help="output rosbag2 folder (created)")
    bag.add_argument("--image-topic", metavar="TOPIC", help="Image or CompressedImage topic (default: the only one)")
    bag.add_argument("--camera-info-topic", metavar="TOPIC",
                     help="CameraInfo of the image (default: the image's sibling .../camera_info when present)")
    bag.add_argument("--no-camera-info", action="store_true",
                     help="estimate the intrinsics even if a CameraInfo exists")
    bag.add_argument("--output-namespace", default="/moge2", metavar="NS", help="output topic prefix (default /moge2)")
    bag.add_argument("--points", action="store_true", help="also write <ns>/points (PointCloud2 x, y, z, rgb)")
    bag.add_argument("--cloud-unorganized", action="store_true", help="drop invalid points (default: organized, NaN)")
    bag.add_argument("--cloud-stride", type=positive_int, default=1, metavar="N",
                     help="keep every N-th pixel (default 1)")
    bag.add_argument("--no-rectify", action="store_true",
                     help="use a distorted camera's K on the raw images as if they were rectified (warned once); "
                          "default: rectify before the model, as the node does")
    bag.add_argument("--output-grid", choices=("rectified", "raw"), default="rectified",
                     help="outputs of a rectified camera: in the rectified camera (camera_info K = P, default) or "
                          "resampled onto the raw image grid with the input CameraInfo")
    bag.add_argument("--every", type=positive_int, default=1, metavar="N", help="process every N-th image (default 1)")
    bag.add_argument("--max-frames", type=positive_int, metavar="N", help="stop after N frames")
    bag.add_argument("--copy-input-topics", action="store_true", help="copy all input messages into the output bag")
    bag.add_argument("--storage", choices=("mcap", "sqlite3"), help="output storage (default: the input's)")
    bag.add_argument("--chunk-frames", type=positive_int, default=50, metavar="N",
                     help="frames per resumable chunk (default 50)")
    anchors = bag.add_argument_group(
        "metric anchors",
        "set the published metric scale from the recording's own metric sensors (as moge2_node's anchor_* "
        "parameters); the geometry messages say which source set each frame's scale")
    anchors.add_argument("--anchor-topic", action="append", default=[], metavar="TOPIC",
                         help="metric sensor topic (repeatable): PointCloud2 (LiDAR, any frame), a registered depth "
                              "Image (32FC1 m or 16UC1 mm) or Range; the reading nearest each image's stamp is used")
    anchors.add_argument("--anchor-extrinsic", action="append", default=[], metavar="TOPIC=TX,TY,TZ,QX,QY,QZ,QW",
                         help="sensor -> camera optical frame transform of an anchor topic (metres, unit quaternion "
                              "x y z w); default: the chain from the reading's frame_id to the image's in the bag's "
                              "/tf_static and /tf")
    anchors.add_argument("--anchor-mode", choices=("scale", "scale_shift", "complete"), default="scale",
                         help="scale only (default), scale and depth shift, or scale plus Poisson completion of a "
                              "depth anchor's holes")
    anchors.add_argument("--anchor-max-age", type=positive_float, default=0.1, metavar="S",
                         help="largest stamp difference between an image and its reading, seconds (default 0.1)")
    anchors.add_argument("--no-anchor-filter", action="store_true",
                         help="no temporal (Kalman) filter of the anchored scale: every frame on its own")
    anchors.add_argument("--anchor-inlier-threshold", type=positive_float, default=0.15, metavar="REL",
                         help="relative depth error below which an anchor sample is an inlier (default 0.15; raise "
                              "it for a model with coarse shapes, e.g. 0.4 for the bundled demo model)")
    anchors.add_argument("--camera-height", type=positive_float, metavar="M",
                         help="the camera's height above a flat floor, metres (a ground anchor where enough floor is "
                              "visible)")
    anchors.add_argument("--camera-up", default="0,-1,0", metavar="X,Y,Z",
                         help="up direction in the camera optical frame for --camera-height (default 0,-1,0: level)")
    bag.add_argument("--resume", action="store_true", help="continue the interrupted run left in OUT_BAG.partial")
    bag.add_argument("--overwrite", action="store_true", help="replace OUT_BAG and discard OUT_BAG.partial")
    add_model_arguments(bag, edge_filter=True)
    bag.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary")
    bag.set_defaults(handler=cmd_bag_infer)


# ---------------------------------------------------------------------------------------------- infer


def collect_images(inputs: Sequence[str | Path]) -> tuple[list[Path], bool]:
    """Expand the ``infer`` inputs into image files.

    Returns:
        ``(files, folder_mode)``; folder contents are sorted by name; ``folder_mode`` is True when a folder
        was given (or several inputs).  A folder's non-colour images (16-bit / float single-channel: depth maps,
        labels) are left out with a one-line note each; a file named explicitly is kept (and refused when read).

    Raises:
        UsageError: an input does not exist, or a folder holds no (colour) image files.
    """
    from moge2_ros.io import IMAGE_SUFFIXES, list_images
    from moge2_ros.io.images import non_colour_reason

    files: list[Path] = []
    folder_mode = len(inputs) > 1
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            folder_mode = True
            found = list_images(path)
            if not found:
                raise UsageError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in folder {path}")
            kept = []
            for image in found:
                reason = non_colour_reason(image)
                if reason:
                    note(f"skipping {image}: {reason}")
                else:
                    kept.append(image)
            if not kept:
                raise UsageError(f"no colour images in folder {path} (only depth maps or labels)")
            files.extend(kept)
        elif path.is_file():
            files.append(path)
        elif path.exists():
            raise UsageError(f"not a file or folder: {path}")
        else:
            raise UsageError(f"no such file or folder: {path}")
    return files, folder_mode


def _known_camera(args: argparse.Namespace) -> tuple["CameraIntrinsics | None", float | None]:
    """Known camera from the arguments: ``(intrinsics, None)``, ``(None, fov_x)`` or ``(None, None)``."""
    from moge2_ros.io.intrinsics import load_intrinsics_file, parse_intrinsics_arg

    try:
        if args.intrinsics is not None:
            return parse_intrinsics_arg(args.intrinsics), None
        if args.intrinsics_file is not None:
            return load_intrinsics_file(args.intrinsics_file), None
    except InputError as exc:  # a malformed argument or file given on the command line: usage error
        raise UsageError(str(exc)) from None
    return None, args.fov_x


def cmd_infer(args: argparse.Namespace) -> int:
    """``moge2-ros infer``: see the subcommand help.  A bad image is reported on one line and skipped (exit 1)."""
    # 1. Everything that can be checked without torch: usage errors (exit 2) before any slow work.
    intrinsics, fov_x = _known_camera(args)
    files, folder_mode = collect_images(args.inputs)
    if args.exr:
        from moge2_ros.io import exr_available

        if not exr_available():
            raise UsageError('--exr needs the OpenEXR package (>= 3.3): pip install "moge2_ros[exr]"')
    if args.output.exists() and not args.output.is_dir():
        raise UsageError(f"--output is not a folder: {args.output}")

    # 2. The predictor (bad options, missing CUDA, unloadable model: exit 1).
    from tqdm import tqdm

    from moge2_ros.inference import PredictorOptions, load_predictor
    from moge2_ros.pipeline.images import infer_image_file, output_stems

    predictor = load_predictor(PredictorOptions(**model_arguments(args)), say=note)
    if args.precision == "auto" and not args.quiet:
        note(predictor.precision_note)

    # 3. Every image; one that fails is reported and skipped.
    args.output.mkdir(parents=True, exist_ok=True)
    failures = done = 0
    progress = tqdm(list(zip(files, output_stems(files))), desc="infer", unit="img", file=sys.stderr,
                    disable=args.quiet or not folder_mode, dynamic_ncols=True)
    for path, stem in progress:
        try:
            outputs = infer_image_file(predictor, path, args.output, stem, intrinsics=intrinsics, fov_x=fov_x,
                                       write_ply_file=not args.no_ply, exr=args.exr)
        except Moge2RosError as exc:
            failures += 1
            message = one_line(exc)
            message = message if str(path) in message else f"{path}: {message}"
            tqdm.write(error(message) + (" (skipped)" if folder_mode else ""), file=sys.stderr)
            continue
        except OSError as exc:
            failures += 1
            tqdm.write(error(f"{path}: {os_error_text(exc)}"), file=sys.stderr)
            continue
        done += 1
        if not args.quiet and not folder_mode:
            meta = outputs.meta
            depth_range = ("no valid pixels" if meta["depth_min_m"] is None
                           else f"depth {meta['depth_min_m']:.2f}-{meta['depth_max_m']:.2f} m, "
                                f"{meta['valid_pixels']} valid pixels")
            print(f"{path}: {meta['width']}x{meta['height']} on {predictor.device}, fov_x {meta['fov_x_deg']:.1f} "
                  f"deg ({'estimated' if meta['intrinsics_estimated'] else 'given'}), {depth_range}, "
                  f"{meta['inference_time_s']:.2f} s")
            for kind, out_path in outputs.files.items():
                print(f"  {kind:10s} {out_path}")
    progress.close()
    if folder_mode and not args.quiet:
        print(f"{done} of {len(files)} images processed, outputs in {args.output}"
              + (f"; {failures} failed (see the errors above)" if failures else ""))
    return EXIT_RUNTIME if failures else EXIT_OK


# ---------------------------------------------------------------------------------------------- bag-infer


def _anchor_extrinsics(items: Sequence[str], topics: Sequence[str]) -> dict[str, list[float]]:
    """``--anchor-extrinsic TOPIC=tx,ty,tz,qx,qy,qz,qw`` values -> ``{topic: [7 numbers]}``, checked.

    Raises:
        UsageError: malformed item, a topic given twice or not an --anchor-topic, a bad quaternion.
    """
    from moge2_ros.pipeline.anchor_msgs import extrinsic_param

    out: dict[str, list[float]] = {}
    for item in items:
        topic, sep, text = item.partition("=")
        topic = topic.strip()
        try:
            values = [float(v) for v in text.split(",")] if sep else []
        except ValueError:
            values = []
        if not sep or not topic or len(values) != 7:
            raise UsageError(f"--anchor-extrinsic {item!r}: expected TOPIC=tx,ty,tz,qx,qy,qz,qw (7 numbers: metres "
                             "and a unit quaternion)")
        if topic in out:
            raise UsageError(f"--anchor-extrinsic: {topic} given twice")
        if topic not in topics:
            raise UsageError(f"--anchor-extrinsic {topic}: not one of the --anchor-topic values "
                             f"({', '.join(topics) or 'none'})")
        try:
            extrinsic_param(values, f"--anchor-extrinsic {topic}")
        except InputError as exc:
            raise UsageError(str(exc)) from None
        out[topic] = values
    return out


def _camera_up(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) for v in values) or not any(values):
        raise UsageError(f"--camera-up {text!r}: expected X,Y,Z, a finite non-zero direction in the camera optical "
                         "frame (e.g. 0,-1,0)")
    return values  # type: ignore[return-value]


def cmd_bag_infer(args: argparse.Namespace) -> int:
    """``moge2-ros bag-infer``: see the subcommand help."""
    if not args.in_bag.exists():
        raise UsageError(f"IN_BAG: no such file or folder: {args.in_bag}")
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other")
    extrinsics = _anchor_extrinsics(args.anchor_extrinsic, args.anchor_topic)
    camera_up = _camera_up(args.camera_up)
    from moge2_ros.assets import model_source
    from moge2_ros.inference import PredictorOptions
    from moge2_ros.pipeline.bag_infer import BagInferOptions, partial_path, run_bag_infer

    # The model source is resolved here so that the resume fingerprint names the model that ran.
    model = model_source(args.model, say=note)
    options = BagInferOptions(
        predictor=PredictorOptions(**model_arguments(args, model=model, estimate_normals=False)),
        image_topic=args.image_topic, camera_info_topic=args.camera_info_topic,
        use_camera_info=not args.no_camera_info, output_namespace=args.output_namespace, points=args.points,
        cloud_organized=not args.cloud_unorganized, cloud_stride=args.cloud_stride, every=args.every,
        rectify=not args.no_rectify, output_grid=args.output_grid,
        max_frames=args.max_frames, copy_input_topics=args.copy_input_topics, storage=args.storage,
        chunk_frames=args.chunk_frames, anchor_topics=tuple(args.anchor_topic), anchor_extrinsics=extrinsics,
        anchor_mode=args.anchor_mode, anchor_max_age=args.anchor_max_age, anchor_temporal=not args.no_anchor_filter,
        anchor_inlier_threshold=args.anchor_inlier_threshold,
        camera_height=args.camera_height or 0.0, camera_up=camera_up,
    )
    try:
        report = run_bag_infer(args.in_bag, args.out_bag, options, resume=args.resume, overwrite=args.overwrite,
                               progress=not args.quiet)
    except KeyboardInterrupt:
        partial = partial_path(args.out_bag)
        hint = (f"the finished chunks are kept in {partial}; run the same command with --resume to continue"
                if partial.exists() else "nothing was written yet, so there is nothing to --resume")
        print(error(f"interrupted: {hint}"), file=sys.stderr)
        return EXIT_INTERRUPTED
    if not args.quiet:
        print(f"wrote {report.output}: {report.frames} frames"
              + (f" ({report.resumed_frames} from the interrupted run)" if report.resumed_frames else "")
              + (f", {report.bad_frames} skipped (undecodable)" if report.bad_frames else "")
              + f", model {report.inference_fps:.2f} frames/s, {report.wall_s:.1f} s in all")
        for topic, count in sorted(report.topics.items()):
            print(f"  {topic}: {count}")
        if options.anchoring:
            _print_anchor_summary(report)
    return EXIT_OK


def _print_anchor_summary(report: Any) -> None:
    """Anchored / fallback frames, why frames fell back, readings per anchor topic and dropped anchor data."""
    print(f"metric anchors: {report.anchored_frames} frames anchored, {report.fallback_frames} kept the network's "
          "(or the filter's) scale")
    for reason, count in sorted(report.fallback_reasons.items(), key=lambda item: -item[1])[:5]:
        print(f"  fallback: {reason} ({count} frames)")
    for topic, counts in sorted(report.anchor_readings.items()):
        print(f"  {topic}: " + ", ".join(f"{key} {value}" for key, value in counts.items()))
    if report.anchor_drops:
        print("  dropped anchor data: " + ", ".join(f"{key} {value}"
                                                    for key, value in sorted(report.anchor_drops.items())))
