#!/usr/bin/env python3
"""Prediction benchmark of moge2_ros: network / predict() latency, memory, post-processing, torch.compile.

Prints Markdown tables to stdout (progress goes to stderr)::

    .venv/bin/python bench/bench_predict.py                 # full default run (CPU, fp32)
    .venv/bin/python bench/bench_predict.py --quick         # smoke run: reference model, 1200 tokens, n=2
    .venv/bin/python bench/bench_predict.py --device cuda --json out/bench.json

Every measured configuration runs in a fresh child process (the script re-invokes itself with the hidden
``--single SPEC`` flag; the child prints one JSON line), so that the peak-memory numbers belong to that
configuration alone:

* CPU: the child's peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and its current RSS right after the
  model was built (``VmRSS``); peak minus that is the inference working set (plus allocator slack).
* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (reset once the model is on the GPU).

Timing: ``time.perf_counter`` around each call; medians with ``statistics.median``; p95 with
``statistics.quantiles(method='inclusive')`` (linear interpolation; with n = 5 it lies between the two slowest
runs). Table 1 times ``Predictor.predict`` on a 640x480 uint8 image and, inside the same calls, the network alone
(forward hooks on the model and on its encoder); "decoder+heads" = network - encoder. Ratios between variants
and eager/compiled come from the same run of this script.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from _harness import REFERENCE, log, machine_info, machine_line, p95, peak_rss_mb, rss_mb, run_child

REFERENCE_CHECKPOINT = REFERENCE / "public" / "model.pt"
SPEC_JSON = REFERENCE / "moge2_state_dict_spec.json"

# name -> (label, how to build)
MODELS: dict[str, tuple[str, str]] = {
    "public": ("reference model.pt (ViT-S, small heads)", "checkpoint"),
    "vits": ("ViT-S v2 variant (random init)", "vits14_variant"),
    "vitl": ("ViT-L v2.json (random init)", "vitl14_v2json"),
}
# Seconds per forward on a 2-core CPU: fewer warm-ups (1) for these, and --heavy-repeats timed runs for the ViT-L.
SLOW_MODELS = {"vits", "vitl"}
HEAVY_MODELS = {"vitl"}
WIDTH, HEIGHT = 640, 480


# ======================================================================================================= stats


def summarize(samples_s: list[float]) -> dict[str, Any]:
    """n, median, p95, min (milliseconds) of a list of durations in seconds."""
    ms = [1000.0 * s for s in samples_s]
    if not ms:
        return {"n": 0, "median_ms": None, "p95_ms": None, "min_ms": None, "samples_ms": []}
    return {"n": len(ms), "median_ms": statistics.median(ms), "p95_ms": p95(ms), "min_ms": min(ms),
            "samples_ms": [round(x, 3) for x in ms]}


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "–"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_load(r: dict[str, Any]) -> str:
    a, b = r.get("load1_before"), r.get("load1_after")
    return "–" if a is None or b is None else f"{a:.1f}→{b:.1f}"


def fmt_mb(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


# ======================================================================================================= child side


def _setup_torch(spec: dict[str, Any]):
    import torch

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    return torch


def _build_model(name: str):
    import torch

    kind = MODELS[name][1]
    if kind == "checkpoint":
        from moge2_ros.checkpoints import load_model

        return load_model(REFERENCE_CHECKPOINT)
    from moge2_ros.model import MoGe2Model

    config = json.loads(SPEC_JSON.read_text())["configs"][kind]["model_config"]
    with torch.no_grad():
        model = MoGe2Model(config)
    return model.eval()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _test_image(batch: int = 1):
    import numpy as np

    rng = np.random.default_rng(0)
    shape = (HEIGHT, WIDTH, 3) if batch == 1 else (batch, HEIGHT, WIDTH, 3)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def child_model(spec: dict[str, Any]) -> dict[str, Any]:
    """Table 1 row: one model at one token budget; predict() latency with network/encoder hooks, memory."""
    torch = _setup_torch(spec)
    from moge2_ros import Predictor

    device = spec["device"]
    t0 = time.perf_counter()
    model = _build_model(spec["model"])
    params = sum(p.numel() for p in model.parameters())
    predictor = Predictor(model, device=device, dtype=spec["dtype"], num_tokens=spec["tokens"])
    build_s = time.perf_counter() - t0
    rss_after_build = rss_mb()
    peak_before_inference = peak_rss_mb()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_after_build = torch.cuda.memory_allocated() / 2**20

    marks: dict[str, float] = {}

    def pre(key: str) -> Callable:
        def hook(_module, _args):
            _sync(device)
            marks[key + "0"] = time.perf_counter()
        return hook

    def post(key: str) -> Callable:
        def hook(_module, _args, _out):
            _sync(device)
            marks[key + "1"] = time.perf_counter()
        return hook

    handles = [model.register_forward_pre_hook(pre("net")), model.register_forward_hook(post("net")),
               model.encoder.register_forward_pre_hook(pre("enc")), model.encoder.register_forward_hook(post("enc"))]
    image = _test_image()
    from moge2_ros.model.moge2 import token_grid

    rows, cols = token_grid(spec["tokens"], WIDTH / HEIGHT)
    warm, net, enc, pred = [], [], [], []
    with torch.inference_mode():
        for i in range(spec["warmup"] + spec["repeats"]):
            marks.clear()
            _sync(device)
            t = time.perf_counter()
            geo = predictor.predict(image)
            _sync(device)
            dt = time.perf_counter() - t
            if i < spec["warmup"]:
                warm.append(dt)
                continue
            pred.append(dt)
            net.append(marks["net1"] - marks["net0"])
            enc.append(marks["enc1"] - marks["enc0"])
    for h in handles:
        h.remove()
    out = {
        "kind": "model", "model": spec["model"], "tokens": spec["tokens"], "token_grid": [rows, cols],
        "params": params, "build_s": build_s, "warmup_s": warm,
        "network": summarize(net), "encoder": summarize(enc),
        "decoder": summarize([n - e for n, e in zip(net, enc)]),
        "predict": summarize(pred), "post": summarize([p - n for p, n in zip(pred, net)]),
        "valid_fraction": float(geo.mask.float().mean()),
        "rss_after_build_mb": rss_after_build, "peak_rss_before_inference_mb": peak_before_inference,
        "peak_rss_mb": peak_rss_mb(),
    }
    if device.startswith("cuda"):
        out["cuda_after_build_mb"] = cuda_after_build
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def synthetic_scene(batch: int, seed: int = 0):
    """A plausible affine point map (floor, back wall, boxes, invalid sky band, speckle dropouts) + mask prob.

    Built from a pinhole camera (fx = fy = 500 px, centred) as ``points = (X, Y, Z - shift) / scale`` so that
    the focal/shift solve has a realistic, non-trivial answer. Returns ``(points (B,H,W,3), mask_prob (B,H,W),
    metric_scale (B,))`` float32 torch tensors on the CPU.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    v, u = torch.meshgrid(torch.arange(HEIGHT, dtype=torch.float32) + 0.5,
                          torch.arange(WIDTH, dtype=torch.float32) + 0.5, indexing="ij")
    pts, masks = [], []
    for b in range(batch):
        f = 500.0 * (1.0 + 0.1 * b / max(batch, 1))
        cam_h = 1.2 + 0.05 * b
        wall = 6.0 + 0.5 * b
        depth = torch.full((HEIGHT, WIDTH), wall)
        below = v > HEIGHT / 2 + 1
        floor = cam_h * f / (v - HEIGHT / 2).clamp_min(1.0)
        depth = torch.where(below & (floor < wall), floor, depth)
        box = (u > 100) & (u < 260) & (v > 180) & (v < 400)
        depth = torch.where(box, torch.minimum(depth, torch.tensor(3.0 + 0.2 * b)), depth)
        box2 = (u > 420) & (u < 560) & (v > 150) & (v < 330)
        depth = torch.where(box2, torch.minimum(depth, 4.0 + 0.002 * (u - 420)), depth)
        depth = depth * (1.0 + 0.01 * torch.randn(HEIGHT, WIDTH, generator=g))
        x = (u - WIDTH / 2) / f * depth
        y = (v - HEIGHT / 2) / f * depth
        shift, scale = 0.8 + 0.1 * b, 2.0 + 0.3 * b
        pts.append(torch.stack([x, y, depth - shift], dim=-1) / scale)
        sky = v < 40 + 5 * b
        speckle = torch.rand(HEIGHT, WIDTH, generator=g) < 0.03
        masks.append(torch.where(sky | speckle, 0.02, 0.98))
    points = torch.stack(pts)
    mask_prob = torch.stack(masks)
    metric_scale = torch.tensor([2.0 + 0.3 * b for b in range(batch)])
    return points, mask_prob, metric_scale


def child_post(spec: dict[str, Any]) -> dict[str, Any]:
    """Table 2: post-processing alone on a synthetic (B, 480, 640, 3) point map."""
    torch = _setup_torch(spec)
    from moge2_ros import Predictor
    from moge2_ros.geometry.focal_shift import recover_focal_shift
    from moge2_ros.geometry.postprocess import recover_geometry

    device = spec["device"]
    batch = spec["batch"]
    points, mask_prob, scale = (t.to(device) for t in synthetic_scene(batch))
    mask = mask_prob > 0.5
    model = _build_model("public")  # only to construct a Predictor; its network is stubbed out below
    predictor = Predictor(model, device=device, dtype=spec["dtype"], num_tokens=1200)
    raw = {"points": points, "mask": mask_prob, "metric_scale": scale}
    predictor.forward_raw = lambda _batch: raw  # predict() minus the network: preprocessing + post-processing
    images = _test_image(batch)

    cases: dict[str, Callable[[], Any]] = {
        "recover_focal_shift": lambda: recover_focal_shift(points, mask),
        "recover_geometry": lambda: recover_geometry(points, mask_prob, scale),
        "predict_no_network": lambda: predictor.predict(images),
    }
    out: dict[str, Any] = {"kind": "post", "batch": batch}
    with torch.inference_mode():
        for name, fn in cases.items():
            samples = []
            for i in range(spec["warmup"] + spec["repeats"]):
                _sync(device)
                t = time.perf_counter()
                res = fn()
                _sync(device)
                if i >= spec["warmup"]:
                    samples.append(time.perf_counter() - t)
            out[name] = summarize(samples)
            if name == "recover_focal_shift":
                out["focal"] = [round(float(x), 4) for x in res[0][:2]]
    return out


def child_compile(spec: dict[str, Any]) -> dict[str, Any]:
    """Table 3: eager vs torch.compile (Predictor(compile=True)) in the same process, calls interleaved."""
    torch = _setup_torch(spec)
    from moge2_ros import Predictor

    device = spec["device"]
    model = _build_model(spec["model"])
    image = _test_image()
    out: dict[str, Any] = {"kind": "compile", "model": spec["model"], "tokens": spec["tokens"],
                           "inductor_cache": os.environ.get("TORCHINDUCTOR_CACHE_DIR", "default")}
    with torch.inference_mode():
        # Created under inference_mode like the batch predict() builds: the compiled graph is guarded on the
        # input's dispatch keys, so a plain tensor here would trigger a second compilation.
        batch = torch.from_numpy(image).to(device).permute(2, 0, 1)[None].float().div(255).contiguous()
        eager = Predictor(model, device=device, dtype=spec["dtype"], num_tokens=spec["tokens"])
        try:
            compiled = Predictor(model, device=device, dtype=spec["dtype"], num_tokens=spec["tokens"], compile=True)
            _sync(device)
            t = time.perf_counter()
            compiled.predict(image)
            _sync(device)
            out["compile_s"] = time.perf_counter() - t
        except Exception as exc:  # inductor raises many types (no C compiler, missing headers, unsupported op)
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            out["compile_error"] = f"{type(exc).__name__}: {lines[0][:240] if lines else ''}"
            compiled = None

        calls = {"network": lambda p: p.forward_raw(batch), "predict": lambda p: p.predict(image)}
        modes = {"eager": eager, **({"compiled": compiled} if compiled is not None else {})}
        samples: dict[str, list[float]] = {f"{m}_{k}": [] for m in modes for k in calls}
        # Interleaved (eager, compiled, eager, compiled, ...) so that load changes on a shared machine hit both.
        for i in range(spec["warmup"] + spec["repeats"]):
            for key, fn in calls.items():
                for mode, predictor in modes.items():
                    _sync(device)
                    t = time.perf_counter()
                    fn(predictor)
                    _sync(device)
                    if i >= spec["warmup"]:
                        samples[f"{mode}_{key}"].append(time.perf_counter() - t)
    for k, v in samples.items():
        out[k] = summarize(v)
    try:
        from torch._dynamo.utils import counters

        out["dynamo_unique_graphs"] = int(counters["stats"]["unique_graphs"])
    except Exception:  # private API; informational only
        pass
    return out


def run_single(spec_json: str) -> int:
    spec = json.loads(spec_json)
    fn = {"model": child_model, "post": child_post, "compile": child_compile}[spec["kind"]]
    result = fn(spec)
    print(json.dumps(result), flush=True)
    return 0


# ======================================================================================================= parent side


def print_header(info: dict[str, Any], args: argparse.Namespace) -> None:
    print("## moge2_ros prediction benchmark (bench/bench_predict.py)\n")
    print(f"- command: `{info['command']}`")
    print(f"- machine: {machine_line(info)}")
    print(f"- date: {info['date']}; load average at start (1/5/15 min): "
          f"{'/'.join(f'{x:.2f}' for x in info['loadavg_start']) if info['loadavg_start'] else '?'}")
    print(f"- device {args.device}, dtype {args.dtype}, input {WIDTH}x{HEIGHT} uint8 RGB, batch 1; "
          f"each configuration in a fresh child process\n")


def print_table1(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    cuda = args.device.startswith("cuda")
    print(f"### Table 1 — latency and memory per model and token budget ({args.device}, {args.dtype}, {WIDTH}x{HEIGHT})\n")
    mem_cols = ("model on GPU MiB | peak alloc MiB | Δ MiB" if cuda else "RSS after build MB | peak RSS MB | Δ MB")
    print("| model | params | tokens (grid) | n | network median ms | network p95 ms | encoder median ms "
          "| decoder+heads median ms | predict median ms | predict p95 ms | FPS | × row 1 | " + mem_cols + " | load |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = None
    for r in rows:
        if "error" not in r:
            base = r["predict"]["median_ms"]
            break
    for r in rows:
        label = r["model"]
        if "error" in r:
            print(f"| {label} | – | {r['tokens']} | – | FAILED: {r['error']} |" + " |" * 11)
            continue
        grid = f"{r['tokens']} ({r['token_grid'][0]}×{r['token_grid'][1]})"
        pm = r["predict"]["median_ms"]
        if cuda:
            a, p = r.get("cuda_after_build_mb"), r.get("cuda_peak_mb")
        else:
            a, p = r.get("rss_after_build_mb"), r.get("peak_rss_mb")
        delta = fmt_mb(p - a) if (a is not None and p is not None) else "–"
        if not cuda and p is not None and p <= r.get("peak_rss_before_inference_mb", 0.0) + 1.0:
            delta = "≤ " + delta  # the peak was reached while loading, not during inference: an upper bound
        print(f"| {label} | {r['params'] / 1e6:.1f} M | {grid} | {r['predict']['n']} | {fmt_ms(r['network']['median_ms'])} "
              f"| {fmt_ms(r['network']['p95_ms'])} | {fmt_ms(r['encoder']['median_ms'])} | {fmt_ms(r['decoder']['median_ms'])} "
              f"| {fmt_ms(pm)} | {fmt_ms(r['predict']['p95_ms'])} | {1000.0 / pm:.2f} | {pm / base:.2f} "
              f"| {fmt_mb(a)} | {fmt_mb(p)} | {delta} | {fmt_load(r)} |")
    print()
    print(f"n = timed predict() calls after the warm-up calls ({args.warmup} for the reference model, "
          f"{min(args.warmup, 1)} for the ViT-S variant and ViT-L); network, encoder and decoder times are measured "
          "with forward hooks inside the same calls. p95 interpolates between the slowest runs (n ≤ 20). FPS = 1000 / "
          "predict median. × row 1 = predict median / that of the first row, same run. load = 1-min load average "
          "before → after the child (2 = both cores busy; higher = other processes competed). "
          + ("Memory: torch.cuda.max_memory_allocated, reset after the model is on the GPU. " if cuda else
             "Memory: child-process RSS right after model construction, and its peak RSS (ru_maxrss) at the end; "
             "Δ ≈ inference working set (plus allocator slack; '≤' = the peak was already reached while loading). ")
          + "Model labels: " + "; ".join(f"`{k}` = {v[0]}" for k, v in MODELS.items() if any(r['model'] == k for r in rows)) + ".\n")


def print_table2(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"### Table 2 — post-processing alone ({args.device}, synthetic {WIDTH}x{HEIGHT} point map, median ms)\n")
    print("| batch | n | recover_focal_shift | recover_geometry | predict() with the network stubbed out | per image (predict, stubbed) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['batch']} | – | FAILED: {r['error']} | | | |")
            continue
        pn = r["predict_no_network"]["median_ms"]
        print(f"| {r['batch']} | {r['recover_focal_shift']['n']} | {fmt_ms(r['recover_focal_shift']['median_ms'])} "
              f"| {fmt_ms(r['recover_geometry']['median_ms'])} | {fmt_ms(pn)} | {fmt_ms(pn / r['batch'])} |")
    print()
    print("recover_focal_shift: (B,480,640,3) map + bool mask (sky band and 3 % speckle invalid); recover_geometry: "
          "the full chain (mask threshold, focal/shift, re-projection, metric scale); predict() stubbed: "
          "Predictor.predict on uint8 images with forward_raw returning these maps (preprocessing, recover_geometry, "
          "normals from points as the reference model has no normal head, NaN masking, intrinsics).\n")


def print_table3(r: dict[str, Any] | None, args: argparse.Namespace) -> None:
    print(f"### Table 3 — eager vs torch.compile (reference model, {args.compile_tokens} tokens, {WIDTH}x{HEIGHT}, {args.device})\n")
    if r is None:
        print("skipped (--no-compile)\n")
        return
    print("| mode | compile time (first call) s | n | network median ms | network p95 ms | network min ms "
          "| predict median ms | predict p95 ms | predict min ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    if "error" in r:
        print(f"| – | FAILED: {r['error']} | | | | | | | |\n")
        return

    def cells(net: dict[str, Any], pred: dict[str, Any]) -> str:
        return (f"{net['n']} | {fmt_ms(net['median_ms'])} | {fmt_ms(net['p95_ms'])} | {fmt_ms(net['min_ms'])} "
                f"| {fmt_ms(pred['median_ms'])} | {fmt_ms(pred['p95_ms'])} | {fmt_ms(pred['min_ms'])}")

    e_net, e_pred = r["eager_network"], r["eager_predict"]
    print(f"| eager | – | {cells(e_net, e_pred)} |")
    if "compile_error" in r:
        print(f"| torch.compile | FAILED: {r['compile_error']} | | | | | | | |")
    else:
        c_net, c_pred = r["compiled_network"], r["compiled_predict"]
        print(f"| torch.compile | {r['compile_s']:.1f} | {cells(c_net, c_pred)} |")
        print(f"| ratio compiled / eager | | | **{c_net['median_ms'] / e_net['median_ms']:.2f}** (medians) | "
              f"| {c_net['min_ms'] / e_net['min_ms']:.2f} (mins) | **{c_pred['median_ms'] / e_pred['median_ms']:.2f}** "
              f"(medians) | | {c_pred['min_ms'] / e_pred['min_ms']:.2f} (mins) |")
    print()
    graphs = r.get("dynamo_unique_graphs")
    cache = "a fresh, empty inductor cache (cold compile)" if r.get("inductor_cache", "default") != "default" \
        else "the default inductor cache (may be warm)"
    print(f"Compile time = wall time of the first compiled predict() with {cache}"
          + (f"; dynamo compiled {graphs} graph(s) in the whole run" if graphs is not None else "") + ". "
          f"load = {fmt_load(r)}. "
          "network = Predictor.forward_raw on a (1,3,480,640) float tensor; predict = Predictor.predict on the uint8 "
          "image; both modes in the same child process with the calls interleaved (eager, compiled, eager, ...) after "
          "one warm-up each; the min column is the least disturbed run on a shared machine. Compile time includes tracing, inductor code generation, C++ compilation and one run.\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: reference model only, 1200 tokens, 2 repeats, 1 warm-up, batch 1 post-processing")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"], help="network precision (default fp32)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per configuration (default 5)")
    p.add_argument("--heavy-repeats", type=int, default=5,
                   help=f"timed runs for the heavy models {sorted(HEAVY_MODELS)} (default 5; capped by --repeats)")
    p.add_argument("--warmup", type=int, default=2,
                   help=f"warm-up calls per configuration (default 2; capped at 1 for {sorted(SLOW_MODELS)})")
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=None, help="subset of models (default all)")
    p.add_argument("--tokens", nargs="+", type=int, default=None, help="token budgets (default 1200 2400 3600)")
    p.add_argument("--post-batches", nargs="+", type=int, default=None, help="post-processing batches (default 1 8)")
    p.add_argument("--post-repeats", type=int, default=None, help="timed runs for Table 2 (default 2 × --repeats)")
    p.add_argument("--compile-tokens", type=int, default=1200, help="token budget of the compile test (default 1200)")
    p.add_argument("--compile-repeats", type=int, default=None,
                   help="timed interleaved runs per mode for Table 3 (default 2 × --repeats)")
    p.add_argument("--no-compile", action="store_true", help="skip Table 3 (torch.compile)")
    p.add_argument("--warm-inductor-cache", action="store_true",
                   help="Table 3: use the default inductor cache (default: a fresh empty one, i.e. a cold compile)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default os.cpu_count())")
    p.add_argument("--child-timeout", type=float, default=1800.0, help="seconds per child process (default 1800)")
    p.add_argument("--json", metavar="OUT", default=None, help="also write all results to this JSON file")
    p.add_argument("--single", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.models = args.models or ["public"]
        args.tokens = args.tokens or [1200]
        args.repeats = min(args.repeats, 2)
        args.warmup = min(args.warmup, 1)
        args.post_batches = args.post_batches or [1]
    args.models = args.models or list(MODELS)
    args.tokens = args.tokens or [1200, 2400, 3600]
    args.post_batches = args.post_batches or [1, 8]
    args.post_repeats = args.post_repeats or 2 * args.repeats
    args.compile_repeats = args.compile_repeats or 2 * args.repeats
    args.threads = args.threads or os.cpu_count() or 1
    if args.repeats < 1 or args.heavy_repeats < 1 or args.warmup < 0:
        p.error("--repeats/--heavy-repeats must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.single is not None:
        return run_single(args.single)

    t_start = time.perf_counter()
    info = machine_info(args.device, args.threads)
    common = {"device": args.device, "dtype": args.dtype, "threads": args.threads}
    results: dict[str, Any] = {"machine": info, "table1": [], "table2": [], "table3": None, "section_wall_s": {}}

    t = time.perf_counter()
    for name in args.models:
        for tokens in args.tokens:
            spec = {**common, "kind": "model", "model": name, "tokens": tokens,
                    "repeats": min(args.repeats, args.heavy_repeats) if name in HEAVY_MODELS else args.repeats,
                    "warmup": min(args.warmup, 1) if name in SLOW_MODELS else args.warmup}
            log(f"table 1: {name} @ {tokens} tokens (warm-up {spec['warmup']}, n={spec['repeats']}) ...")
            r = run_child(__file__, spec, args.child_timeout)
            r.setdefault("model", name)
            r.setdefault("tokens", tokens)
            results["table1"].append(r)
            log(f"  -> {r.get('error') or 'predict median %.0f ms' % r['predict']['median_ms']} ({r['wall_s']:.0f} s)")
    results["section_wall_s"]["table1"] = time.perf_counter() - t

    t = time.perf_counter()
    for b in args.post_batches:
        log(f"table 2: post-processing, batch {b} ...")
        r = run_child(__file__, {**common, "kind": "post", "batch": b, "repeats": args.post_repeats, "warmup": 1},
                      args.child_timeout)
        r.setdefault("batch", b)
        results["table2"].append(r)
    results["section_wall_s"]["table2"] = time.perf_counter() - t

    t = time.perf_counter()
    if not args.no_compile:
        log(f"table 3: eager vs torch.compile, reference model @ {args.compile_tokens} tokens ...")
        spec = {**common, "kind": "compile", "model": "public", "tokens": args.compile_tokens,
                "repeats": args.compile_repeats, "warmup": 1}
        if args.warm_inductor_cache:
            results["table3"] = run_child(__file__, spec, args.child_timeout)
        else:  # cold compile, as on a fresh deployment: a private, empty inductor cache
            with tempfile.TemporaryDirectory(prefix="bench_inductor_") as cache:
                results["table3"] = run_child(__file__, spec, args.child_timeout, {"TORCHINDUCTOR_CACHE_DIR": cache})
    results["section_wall_s"]["table3"] = time.perf_counter() - t

    total = time.perf_counter() - t_start
    results["total_wall_s"] = total
    info["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None

    print_header(info, args)
    print_table1(results["table1"], args)
    print_table2(results["table2"], args)
    print_table3(results["table3"], args)
    sec = results["section_wall_s"]
    print(f"Benchmark wall time: {total / 60:.1f} min (table 1 {sec['table1']:.0f} s, table 2 {sec['table2']:.0f} s, "
          f"table 3 {sec['table3']:.0f} s); load average at end: "
          f"{'/'.join(f'{x:.2f}' for x in info['loadavg_end']) if info['loadavg_end'] else '?'}.")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
