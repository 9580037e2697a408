"""Measure the memory and time of one frame against its pixels and token count: the coefficients of the frame
budget model (:mod:`moge2_ros.inference.budget`).

Each configuration runs in a fresh process: load the model, warm up on a small frame, then reset the kernel's
resident-memory high-water mark (``/proc/self/clear_refs`` = 5) and run ONE frame exactly as the node does
(PNG decode of a ``CompressedImage``, :class:`~moge2_ros.pipeline.FramePipeline` with every output: depth,
camera_info, points with rgb and normals, normals, mask, colorized, geometry).  The frame's memory is
``VmHWM - VmRSS`` before it; its time is wall time of decode + pipeline.

The script fits ``memory = per_pixel * pixels + per_token(model) * tokens`` by least squares per model and prints
the measured values next to what :func:`moge2_ros.inference.budget.frame_cost` predicts (the ratio must stay
<= 1 for the budget to be an upper bound), so the coefficients in ``budget.py`` can be checked on any machine.

    .venv/bin/python bench/bench_budget.py                       # demo + reference models (~3 min)
    .venv/bin/python bench/bench_budget.py --models demo --quick
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from _harness import REFERENCE, log, machine_info, machine_line, rss_mb, run_child

MODELS = {"demo": "bundled demo model (tiny ViT)", "public": "reference model.pt (ViT-S, small heads)"}
SIZES = [(480, 640), (960, 1280), (1920, 2560)]
TOKEN_FACTORS = [0.5, 1.0, 2.0]


def _hwm_reset() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _vm(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"{key} not in /proc/self/status")


def _png_msg(height: int, width: int) -> Any:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    # Smooth content (cheap to compress, like a real image), full size.
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([(x * 255 // max(width - 1, 1)), (y * 255 // max(height - 1, 1)),
                    rng.integers(0, 4, size=(height, width)) * 60], axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
    return SimpleNamespace(format="png", data=buf.getvalue())


def child(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(spec["threads"])
    from moge2_ros.inference.factory import PredictorOptions, load_predictor
    from moge2_ros.pipeline.frame import OUTPUTS, FrameConfig, FramePipeline, decode_rgb

    model = str(REFERENCE / "public" / "model.pt") if spec["model"] == "public" else None
    predictor = load_predictor(PredictorOptions(model=model, device="cpu", memory_budget_mb=1e6))  # measure, not limit
    pipeline = FramePipeline(predictor, FrameConfig(cloud_normals=True))
    lo, hi = predictor.model.num_tokens_range
    tokens = int(round(spec["token_factor"] * hi))
    predictor.num_tokens = lo
    pipeline.process(decode_rgb(_png_msg(64, 80), 10**9), OUTPUTS)  # warm-up: kernels, allocator
    msg = _png_msg(spec["height"], spec["width"])
    predictor.num_tokens = tokens
    rss0 = _vm("VmRSS")
    _hwm_reset()
    t0 = time.perf_counter()
    rgb = decode_rgb(msg, 10**9)
    out = pipeline.process(rgb, OUTPUTS)
    elapsed = time.perf_counter() - t0
    assert out is not None and out.depth is not None
    peak = _vm("VmHWM")
    return {**spec, "tokens": tokens, "pixels": spec["height"] * spec["width"], "frame_mb": peak - rss0,
            "rss_before_mb": rss0, "time_s": elapsed, "model_tokens_range": [lo, hi]}


def predicted(model_name: str, pixels: int, tokens: int) -> dict[str, float]:
    from moge2_ros.inference.budget import frame_cost
    from moge2_ros.inference.factory import PredictorOptions, load_predictor

    model = str(REFERENCE / "public" / "model.pt") if model_name == "public" else None
    predictor = load_predictor(PredictorOptions(model=model, device="cpu"))
    cost = frame_cost(predictor.model.config, pixels, tokens)
    return {"memory_mb": cost.memory_bytes / 2**20, "time_s": cost.time_s}


def fit(rows: list[dict[str, Any]]) -> tuple[float, float, float]:
    """Least squares ``frame_mb = a * megapixels + b * ktokens + c`` over ``rows``."""
    import numpy as np

    a = np.array([[r["pixels"] / 1e6, r["tokens"] / 1e3, 1.0] for r in rows])
    y = np.array([r["frame_mb"] for r in rows])
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    return float(coef[0]), float(coef[1]), float(coef[2])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="two sizes and two token counts")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    p.add_argument("--single", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.single:
        print(json.dumps(child(json.loads(args.single))), flush=True)
        return 0

    sizes = SIZES[:2] if args.quick else SIZES
    factors = TOKEN_FACTORS[:2] if args.quick else TOKEN_FACTORS
    info = machine_info("cpu", args.threads)
    print(f"# Frame budget coefficients\n\n{machine_line(info)}\n")
    all_rows = []
    for name in args.models:
        rows = []
        for height, width in sizes:
            for factor in factors:
                spec = {"model": name, "height": height, "width": width, "token_factor": factor,
                        "threads": args.threads}
                log(f"{name} {width}x{height} tokens x{factor}")
                r = run_child(__file__, spec, timeout=900)
                if "error" in r:
                    log(f"  failed: {r['error']}")
                    continue
                r.update(predicted=predicted(name, r["pixels"], r["tokens"]))
                rows.append(r)
        all_rows += rows
        print(f"### {MODELS[name]}\n")
        print("| image | tokens | frame memory (MiB) | predicted (MiB) | measured / predicted | time (s) | "
              "predicted time (s) |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            pm, pt = r["predicted"]["memory_mb"], r["predicted"]["time_s"]
            print(f"| {r['width']}x{r['height']} | {r['tokens']} | {r['frame_mb']:.0f} | {pm:.0f} | "
                  f"{r['frame_mb'] / pm:.2f} | {r['time_s']:.2f} | {pt:.2f} |")
        if len(rows) >= 3:
            a, b, c = fit(rows)
            print(f"\nleast squares: {a:.1f} MiB per megapixel + {b:.1f} MiB per 1000 tokens + {c:.1f} MiB\n")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "rows": all_rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
