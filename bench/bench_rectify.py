"""Cost of rectifying real cameras (issue 15): the one-off maps of a camera and the per-frame resampling.

Per lens model (``plumb_bob``, ``rational_polynomial``, ``equidistant``) and image size:

* ``maps``: :class:`moge2_ros.pipeline.rectify.Rectifier` construction, i.e. ``cv2.initUndistortRectifyMap`` (or
  the fisheye one) into P plus the grid_sample grid on the device — paid once per camera (and again when its
  CameraInfo changes);
* ``rectify``: one frame, uint8 ``(H, W, 3)`` host image -> float ``(3, H, W)`` rectified image on the device
  (what :class:`~moge2_ros.pipeline.FramePipeline` adds to a distorted camera's frame before the model);
* ``raw grid``: the one-off way back for ``output_grid = raw`` (``cv2.undistortPoints`` of every pixel, checked by
  reprojection) and its per-frame resampling of depth + mask + normals (nearest).

Times are medians of ``--repeats`` runs (the one-offs of ``--repeats // 4`` runs), wall clock or the thread's CPU
time (``--clock cpu``), on the torch and OpenCV threads given (default 1: the node's worker shares the CPU with
the model).  Markdown table on stdout.

    .venv/bin/python bench/bench_rectify.py                  # 640x480 and 1280x720, 1 thread (~1 min)
    .venv/bin/python bench/bench_rectify.py --threads 2 --sizes 640x480
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import torch

from _harness import log, machine_info, machine_line

LENSES = {
    "plumb_bob": [-0.28, 0.07, 1e-4, -2e-4, 0.0],
    "rational_polynomial": [-0.28, 0.07, 1e-4, -2e-4, 0.01, 0.02, -0.01, 0.005],
    "equidistant": [0.05, -0.01, 0.002, -0.0005],
}


def camera_info(model: str, width: int, height: int) -> Any:
    f = 0.8 * width
    k = [f, 0.0, (width - 1) / 2, 0.0, f, (height - 1) / 2, 0.0, 0.0, 1.0]
    p = [0.9 * f, 0.0, (width - 1) / 2, 0.0, 0.0, 0.9 * f, (height - 1) / 2, 0.0, 0.0, 0.0, 1.0, 0.0]
    roi = SimpleNamespace(x_offset=0, y_offset=0, width=0, height=0, do_rectify=False)
    return SimpleNamespace(width=width, height=height, distortion_model=model, d=LENSES[model], k=k,
                           r=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], p=p, binning_x=0, binning_y=0, roi=roi)


CLOCK: Callable[[], float] = time.perf_counter


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = CLOCK()
        fn()
        times.append((CLOCK() - t0) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["640x480", "1280x720"],
                        help="WIDTHxHEIGHT (default: %(default)s)")
    parser.add_argument("--models", nargs="+", default=list(LENSES), choices=list(LENSES))
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenCV threads (default: 1)")
    parser.add_argument("--repeats", type=int, default=20, help="per-frame timings per case (default: 20)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall clock, or this thread's CPU time (with --threads 1 a busy shared machine barely "
                             "disturbs it; CPU only)")
    args = parser.parse_args(argv)
    global CLOCK
    CLOCK = time.thread_time if args.clock == "cpu" else time.perf_counter

    import cv2

    from moge2_ros.geometry.remap import remap
    from moge2_ros.io.camera_model import camera_model_from_info
    from moge2_ros.pipeline.rectify import Rectifier

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    device = torch.device(args.device)
    print(f"{machine_line(machine_info(args.device, args.threads))}; OpenCV {cv2.__version__}; {args.clock} clock, "
          f"median of {args.repeats}\n")
    print("| lens | image | maps (once) | rectify / frame | raw grid (once) | back to raw / frame |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    rng = np.random.default_rng(0)
    for size in args.sizes:
        width, height = (int(v) for v in size.lower().split("x"))
        rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        for model in args.models:
            log(f"{model} {width}x{height}")
            cam = camera_model_from_info(camera_info(model, width, height), width, height)
            once = max(args.repeats // 4, 1)
            maps_ms = median_ms(lambda: Rectifier(cam, device), once)
            rectifier = Rectifier(cam, device)

            def rectify() -> None:
                rectifier.rectify(rgb)
                if device.type == "cuda":
                    torch.cuda.synchronize()

            rect_ms = median_ms(rectify, args.repeats)
            raw_ms = median_ms(lambda: Rectifier(cam, device).raw_grid(), once) - maps_ms
            raw = rectifier.raw_grid()
            planes = torch.rand(5, height, width, device=device)  # depth, mask, normal x/y/z

            def back() -> None:
                remap(planes, raw.grid, mode="nearest")
                if device.type == "cuda":
                    torch.cuda.synchronize()

            back_ms = median_ms(back, args.repeats)
            print(f"| {model} | {width}x{height} | {maps_ms:.1f} ms | {rect_ms:.2f} ms | {raw_ms:.0f} ms | "
                  f"{back_ms:.2f} ms |")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
