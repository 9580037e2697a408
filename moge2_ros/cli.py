"""The ``moge2-ros`` command line.

Subcommands:

* ``infer IMAGE|FOLDER --model SRC --output DIR``: metric depth, point cloud and intrinsics of images;
* ``make-demo-model --output FILE``: an UNTRAINED random-init tiny model (pipeline demo and tests);
* ``make-example-image --output FILE``: a procedurally rendered example image (no download).

Every expected failure (bad argument, missing or unreadable file, bad model) is reported as ONE line
``moge2-ros: error: ...`` on stderr. Exit status: 0 success, 1 runtime error (model, inference, unreadable
image, file system), 2 usage error (bad arguments, missing input path). ``--debug`` shows tracebacks of
unexpected errors. Heavy modules (torch, the model) are imported only by the subcommands that need them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from moge2_ros.cli_args import fov, positive_float, positive_int, resolution_level
from moge2_ros.errors import InputError, Moge2RosError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from moge2_ros.io.intrinsics import CameraIntrinsics

PROG = "moge2-ros"

# Modules that add subcommands: each has ``add_parsers(sub)`` (``sub`` from ``add_subparsers``) that registers its
# parsers with ``set_defaults(handler=...)``. They must import nothing heavy at module level (torch, onnx, rosbags
# are imported inside the handlers), so ``moge2-ros --help`` stays fast.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "moge2_ros.data.cli",
    "moge2_ros.bags.cli",
    "moge2_ros.refine.cli",
    "moge2_ros.eval.cli",
    "moge2_ros.backends.cli",
    "moge2_ros.train.cli",
)
EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2


class UsageError(Moge2RosError):
    """A command-line argument is malformed or names a missing input (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse parser whose errors become :class:`UsageError` (one line, no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _os_error_text(exc: OSError) -> str:
    if exc.filename is not None and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"
    return str(exc) or type(exc).__name__


# ---------------------------------------------------------------------------------------------- argument types


_positive_float, _fov, _positive_int, _resolution_level = positive_float, fov, positive_int, resolution_level


def _device(text: str) -> str:
    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    return text


# ---------------------------------------------------------------------------------------------- parser


def build_parser() -> _Parser:
    """The ``moge2-ros`` argument parser (all subcommands)."""
    from moge2_ros import __version__

    parser = _Parser(
        prog=PROG,
        description="MoGe-2 monocular metric geometry: depth, point clouds and intrinsics from single images.",
        epilog="Exit status: 0 success, 1 runtime error, 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks of unexpected errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

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
    infer.add_argument("--model", metavar="SRC",
                       help="model.pt / .safetensors file, model directory or Hugging Face id "
                            "(e.g. Ruicheng/moge-2-vitl-normal, needs the 'hub' extra); default: the bundled demo "
                            "model (synthetic-trained, 1.5 M parameters)")
    infer.add_argument("--output", "-o", required=True, type=Path, metavar="DIR", help="output folder (created)")
    cam = infer.add_mutually_exclusive_group()
    cam.add_argument("--fov-x", type=_fov, metavar="DEG", help="known horizontal field of view in degrees")
    cam.add_argument("--intrinsics", type=str, metavar="FX,FY,CX,CY",
                     help="known pinhole intrinsics in pixels (cx, cy: pixel centres at integer coordinates)")
    cam.add_argument("--intrinsics-file", type=Path, metavar="FILE",
                     help="known intrinsics from a .json/.yaml (K, camera_matrix, fx/fy/cx/cy; ROS calibration "
                          "YAML) or .txt (9 or 4 numbers) file")
    res = infer.add_mutually_exclusive_group()
    res.add_argument("--resolution-level", type=_resolution_level, metavar="0-9",
                     help="0 = fewest ViT tokens (fastest) ... 9 = most (default 9)")
    res.add_argument("--num-tokens", type=_positive_int, metavar="N", help="exact ViT token budget")
    infer.add_argument("--device", type=_device, metavar="cpu|cuda",
                       help="inference device (default: cuda when available, else cpu)")
    infer.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32",
                       help="inference precision (fp16/bf16: autocast, for CUDA; default fp32)")
    infer.add_argument("--edge-rtol", type=_positive_float, metavar="R",
                       help="remove flying pixels where the relative depth change to a neighbour exceeds R")
    infer.add_argument("--no-ply", action="store_true", help="do not write the .ply point cloud")
    infer.add_argument("--exr", action="store_true",
                       help="write <stem>_depth.exr (float32 metres) instead of .npy (needs the 'exr' extra)")
    infer.add_argument("--quiet", "-q", action="store_true", help="no progress bar, no per-image summary")
    infer.set_defaults(handler=cmd_infer)

    demo_model = sub.add_parser(
        "make-demo-model",
        help="write an UNTRAINED random-init tiny model (pipeline demo and tests only)",
        description="Write a random-init MoGe2Config.tiny() model in the official checkpoint format. Its outputs "
                    "are meaningless; real use needs the official weights.",
    )
    demo_model.add_argument("--output", "-o", required=True, type=Path, metavar="FILE", help=".pt or .safetensors")
    demo_model.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo_model.set_defaults(handler=cmd_make_demo_model)

    example = sub.add_parser(
        "make-example-image",
        help="render a procedural example image (a small room with spheres)",
        description="Ray-cast a small room with a checker floor and two spheres and save it as a PNG.",
    )
    example.add_argument("--output", "-o", required=True, type=Path, metavar="FILE", help="output .png")
    example.add_argument("--width", type=_positive_int, default=640, help="pixels (default 640)")
    example.add_argument("--height", type=_positive_int, default=480, help="pixels (default 480)")
    example.add_argument("--fov-x", type=_fov, default=60.0, metavar="DEG", help="degrees (default 60)")
    example.set_defaults(handler=cmd_make_example_image)

    demo = sub.add_parser(
        "demo",
        help="run moge2_node on the rendered demo camera stream and print what it measures (needs ROS 2)",
        description="Start demo_camera and moge2_node (namespace /camera) as processes, watch their topics for "
                    "DURATION seconds printing rates, latency and the depth error against the rendered ground "
                    "truth, then stop both. Without --model an UNTRAINED demo model is built and used.",
    )
    demo.add_argument("--model", metavar="SRC", help="model source (default: the bundled demo model)")
    demo.add_argument("--duration", type=_positive_float, default=20.0, metavar="S", help="seconds (default 20)")
    demo.add_argument("--rate", type=_positive_float, default=5.0, metavar="HZ", help="camera rate (default 5)")
    demo.add_argument("--width", type=_positive_int, default=640, help="camera width (default 640)")
    demo.add_argument("--height", type=_positive_int, default=480, help="camera height (default 480)")
    demo.add_argument("--resolution-level", type=_resolution_level, default=0, metavar="0-9",
                      help="token budget level (default 0: fastest, for CPUs)")
    demo.add_argument("--log-dir", type=Path, metavar="DIR", help="where the processes' logs go (default: a temp dir)")
    demo.set_defaults(handler=cmd_demo)
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).add_parsers(sub)
    return parser


# ---------------------------------------------------------------------------------------------- infer


def collect_images(inputs: Sequence[str | Path]) -> tuple[list[Path], bool]:
    """Expand the ``infer`` inputs into image files.

    Returns:
        ``(files, folder_mode)``; folder contents are sorted by name; ``folder_mode`` is True when a folder
        was given (or several inputs).

    Raises:
        UsageError: an input does not exist, or a folder holds no image files.
    """
    from moge2_ros.io import IMAGE_SUFFIXES, list_images

    files: list[Path] = []
    folder_mode = len(inputs) > 1
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            folder_mode = True
            found = list_images(path)
            if not found:
                raise UsageError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in folder {path}")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif path.exists():
            raise UsageError(f"not a file or folder: {path}")
        else:
            raise UsageError(f"no such file or folder: {path}")
    return files, folder_mode


def output_stems(files: Sequence[Path]) -> list[str]:
    """Output name stems for ``files``: the file stem, made unique when two inputs share it
    (``a.png`` + ``a.jpg`` -> ``a_png``, ``a_jpg``; same names in different folders get ``_2``, ``_3``, ...)."""
    stems = [f.stem for f in files]
    counts = {s: stems.count(s) for s in stems}
    stems = [f"{f.stem}_{f.suffix[1:].lower()}" if counts[f.stem] > 1 and f.suffix else f.stem for f in files]
    seen: dict[str, int] = {}
    unique = []
    for s in stems:
        seen[s] = seen.get(s, 0) + 1
        unique.append(s if seen[s] == 1 else f"{s}_{seen[s]}")
    return unique


def _describe_intrinsics(args: argparse.Namespace) -> tuple["CameraIntrinsics | None", float | None]:
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


def write_outputs(
    out_dir: Path,
    stem: str,
    image: "np.ndarray",
    result: dict[str, Any],
    *,
    model_source: str,
    image_path: Path,
    write_ply_file: bool = True,
    exr: bool = False,
    inference_time_s: float | None = None,
) -> dict[str, Path]:
    """Write the per-image outputs of ``infer`` (see the subcommand help for names and units).

    Args:
        out_dir: output folder (exists).
        stem: output name stem.
        image: ``(H, W, 3)`` uint8 RGB input image (colours of the point cloud).
        result: ``Geometry.numpy()`` of a batch of one image.
        model_source: the ``--model`` argument, recorded in the JSON.
        image_path: input file, recorded in the JSON.

    Returns:
        Output kind -> written path.
    """
    import numpy as np

    from moge2_ros import __version__
    from moge2_ros.io import colorize_depth, write_depth_exr, write_depth_npy, write_depth_png_mm, write_json
    from moge2_ros.io import write_ply, write_rgb_png

    depth = np.asarray(result["depth"][0], dtype=np.float32)
    mask = np.asarray(result["mask"][0], dtype=bool)
    points = np.asarray(result["points"][0], dtype=np.float32)
    normal = result.get("normal")
    normal = None if normal is None else np.asarray(normal[0], dtype=np.float32)
    height, width = image.shape[:2]
    if depth.shape != (height, width):
        raise InputError(f"prediction has size {depth.shape[::-1]}, image has {(width, height)}")
    with np.errstate(invalid="ignore"):
        valid = mask & np.isfinite(depth) & (depth > 0) & np.isfinite(points).all(axis=-1)
    depth = np.where(valid, depth, np.float32(np.nan))

    written: dict[str, Path] = {}
    written["depth_png"] = write_depth_png_mm(out_dir / f"{stem}_depth.png", depth)
    if exr:
        written["depth_exr"] = write_depth_exr(out_dir / f"{stem}_depth.exr", depth)
    else:
        written["depth_npy"] = write_depth_npy(out_dir / f"{stem}_depth.npy", depth)
    written["depth_vis"] = write_rgb_png(out_dir / f"{stem}_depth_vis.png", colorize_depth(depth, valid))
    if write_ply_file:
        normals = None if normal is None else normal[valid]
        written["ply"] = write_ply(out_dir / f"{stem}.ply", points[valid], image[valid], normals)

    k = np.asarray(result["intrinsics"][0], dtype=np.float64)
    valid_depth = depth[valid]
    meta = {
        "image": str(image_path),
        "width": width,
        "height": height,
        "intrinsics": k,
        "fx": k[0, 0],
        "fy": k[1, 1],
        "cx": k[0, 2],
        "cy": k[1, 2],
        "fov_x_deg": float(np.asarray(result["fov_x"])[0]),
        "fov_y_deg": float(np.asarray(result["fov_y"])[0]),
        "intrinsics_estimated": bool(result["intrinsics_estimated"]),
        "metric_scale": float(np.asarray(result["metric_scale"])[0]),
        "num_tokens": int(result["num_tokens"]),
        "valid_pixels": int(valid.sum()),
        "depth_min_m": float(valid_depth.min()) if valid_depth.size else None,
        "depth_median_m": float(np.median(valid_depth)) if valid_depth.size else None,
        "depth_max_m": float(valid_depth.max()) if valid_depth.size else None,
        "has_normals": normal is not None,
        "model": model_source,
        "inference_time_s": inference_time_s,
        "conventions": {
            "frame": "camera optical frame (REP 103): x right, y down, z forward",
            "units": "metres; intrinsics in pixels with pixel centres at integer coordinates; angles in degrees",
            "depth_png": "uint16 millimetres, 0 = invalid, clipped at 65.535 m",
            "depth_float": "float32 metres, NaN = invalid",
        },
        "outputs": {kind: path.name for kind, path in written.items()},
        "moge2_ros_version": __version__,
    }
    written["json"] = out_dir / f"{stem}.json"
    meta["outputs"]["json"] = written["json"].name
    write_json(written["json"], meta)
    return written


def _error(message: str) -> None:
    print(f"{PROG}: error: {_one_line(message)}", file=sys.stderr, flush=True)


def cmd_infer(args: argparse.Namespace) -> int:
    """``moge2-ros infer``: see the subcommand help."""
    # 1. Everything that can be checked without torch: usage errors (exit 2) before any slow work.
    intrinsics, fov_x = _describe_intrinsics(args)
    files, folder_mode = collect_images(args.inputs)
    if args.exr:
        from moge2_ros.io import exr_available

        if not exr_available():
            raise UsageError('--exr needs the OpenEXR package (>= 3.3): pip install "moge2_ros[exr]"')
    if args.output.exists() and not args.output.is_dir():
        raise UsageError(f"--output is not a folder: {args.output}")

    from tqdm import tqdm

    from moge2_ros import Predictor, load_model
    from moge2_ros.inference import resolve_device
    from moge2_ros.io import read_image_rgb

    # An explicit default (never a silent fall-back): CUDA when present, else CPU; a requested CUDA that is
    # missing is an error.
    device = resolve_device(args.device)

    # 2. Model (ModelLoadError -> exit 1) and predictor.
    model = load_model(args.model, device=device)
    predictor_kwargs: dict[str, Any] = {"device": device, "dtype": args.precision}
    if args.resolution_level is not None:
        predictor_kwargs["resolution_level"] = args.resolution_level
    if args.num_tokens is not None:
        predictor_kwargs["num_tokens"] = args.num_tokens
    if args.edge_rtol is not None:
        predictor_kwargs["edge_rtol"] = args.edge_rtol
    predictor = Predictor(model, **predictor_kwargs)

    args.output.mkdir(parents=True, exist_ok=True)
    failures = 0
    done = 0
    stems = output_stems(files)
    progress = tqdm(list(zip(files, stems)), desc="infer", unit="img", file=sys.stderr,
                    disable=args.quiet or not folder_mode, dynamic_ncols=True)
    for path, stem in progress:
        try:
            image = read_image_rgb(path)
            height, width = image.shape[:2]
            start = time.perf_counter()
            if intrinsics is not None:
                if intrinsics.width is not None and (intrinsics.width, intrinsics.height) != (width, height):
                    raise InputError(
                        f"the intrinsics are for {intrinsics.width}x{intrinsics.height} images, "
                        f"{path} is {width}x{height}"
                    )
                geometry = predictor.predict(image, intrinsics=intrinsics.matrix())
            elif fov_x is not None:
                geometry = predictor.predict(image, fov_x=fov_x)
            else:
                geometry = predictor.predict(image)
            result = geometry.numpy()
            elapsed = time.perf_counter() - start
            written = write_outputs(args.output, stem, image, result, model_source=str(args.model),
                                    image_path=path, write_ply_file=not args.no_ply, exr=args.exr,
                                    inference_time_s=round(elapsed, 4))
        except Moge2RosError as exc:
            failures += 1
            message = _one_line(str(exc))
            message = message if str(path) in message else f"{path}: {message}"
            tqdm.write(f"{PROG}: error: {message}" + (" (skipped)" if folder_mode else ""), file=sys.stderr)
            continue
        except OSError as exc:
            failures += 1
            tqdm.write(f"{PROG}: error: {path}: {_one_line(_os_error_text(exc))}", file=sys.stderr)
            continue
        done += 1
        if not args.quiet and not folder_mode:
            meta = json.loads(written["json"].read_text(encoding="utf-8"))
            depth_range = ("no valid pixels" if meta["depth_min_m"] is None
                           else f"depth {meta['depth_min_m']:.2f}-{meta['depth_max_m']:.2f} m, "
                                f"{meta['valid_pixels']} valid pixels")
            print(f"{path}: {width}x{height} on {device}, fov_x {meta['fov_x_deg']:.1f} deg "
                  f"({'estimated' if meta['intrinsics_estimated'] else 'given'}), {depth_range}, {elapsed:.2f} s")
            for kind, out_path in written.items():
                print(f"  {kind:10s} {out_path}")
    progress.close()
    if folder_mode and not args.quiet:
        print(f"{done} of {len(files)} images processed, outputs in {args.output}"
              + (f"; {failures} failed (see the errors above)" if failures else ""))
    return EXIT_RUNTIME if failures else EXIT_OK


# ---------------------------------------------------------------------------------------------- demo helpers


def cmd_make_demo_model(args: argparse.Namespace) -> int:
    """``moge2-ros make-demo-model``: write an untrained tiny model."""
    from moge2_ros.demo import UNTRAINED_WARNING, make_demo_model

    path = make_demo_model(args.output, seed=args.seed)
    print(f"wrote {path}")
    print(UNTRAINED_WARNING, file=sys.stderr)
    return EXIT_OK


def cmd_make_example_image(args: argparse.Namespace) -> int:
    """``moge2-ros make-example-image``: render and save the procedural example scene."""
    from moge2_ros.demo import render_example_scene
    from moge2_ros.io import write_rgb_png

    if args.width < 8 or args.height < 8 or args.width * args.height > 4096 * 4096:
        raise UsageError(f"--width/--height: expected 8..4096-ish pixels, got {args.width}x{args.height}")
    scene = render_example_scene(args.width, args.height, args.fov_x)
    path = write_rgb_png(args.output, scene.rgb)
    k = scene.intrinsics
    print(f"wrote {path} ({args.width}x{args.height}, true fx={k[0, 0]:.2f} fy={k[1, 1]:.2f} "
          f"cx={k[0, 2]:.2f} cy={k[1, 2]:.2f} px, fov_x {args.fov_x:g} deg)")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """``moge2-ros demo``: the demo camera and the node, monitored (see :mod:`moge2_ros.ros.run_demo`)."""
    from moge2_ros.ros.run_demo import run_demo

    return run_demo(args.model, duration=args.duration, rate_hz=args.rate, width=args.width, height=args.height,
                    resolution_level=args.resolution_level, log_dir=args.log_dir)


# ---------------------------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``moge2-ros`` command.

    Args:
        argv: arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        Exit status: 0 success, 1 runtime error, 2 usage error (errors are reported on stderr in one line).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        if getattr(args, "model", "") is None:  # every --model defaults to the bundled demo model
            from moge2_ros.assets import DEMO_MODEL_NOTE, resolve_default_model

            args.model, _ = resolve_default_model(None)
            print(f"{PROG}: {DEMO_MODEL_NOTE}", file=sys.stderr)
        return int(args.handler(args))
    except SystemExit as exc:  # --help / --version
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
    except UsageError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except Moge2RosError as exc:
        _error(str(exc))
        return EXIT_RUNTIME
    except OSError as exc:
        _error(_os_error_text(exc))
        return EXIT_RUNTIME
    except ImportError as exc:  # a dependency missing from this environment (e.g. a colcon workspace)
        if debug:
            raise
        if (exc.name or "").split(".")[0] in ("", "moge2_ros"):  # our own import broke: a bug
            _error(f"unexpected {type(exc).__name__}: {exc} (this is a bug; rerun with --debug for the traceback)")
            return EXIT_RUNTIME
        _error(f"missing Python package '{exc.name or exc}': install the dependencies of moge2_ros into this "
               "environment (pip install -e . from the repository, or bash scripts/setup.sh)")
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - last resort: one line instead of a traceback, unless --debug
        if debug:
            raise
        _error(f"unexpected {type(exc).__name__}: {exc} (this is a bug; rerun with --debug for the traceback)")
        return EXIT_RUNTIME


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
