#!/usr/bin/env python3
"""Inference-backend benchmark: torch eager / compiled and ONNX Runtime (each provider present), fp32 / fp16 / bf16.

One Markdown table per device on stdout (progress on stderr)::

    .venv/bin/python bench/bench_backends.py --quick                     # smoke: reference model, 300 tokens
    .venv/bin/python bench/bench_backends.py --models vits vitb --tokens 1200 --variants eager ort-cpu
    .venv/bin/python bench/bench_backends.py --device cuda --variants eager compiled ort-cuda ort-tensorrt \\
        --precisions fp32 fp16 bf16 --json out/backends_cuda.json

Models: ``public`` (the reference ``model.pt``), ``vits`` / ``vitb`` / ``vitl`` (ViT-S/B variants and the ViT-L
``v2.json`` configuration of ``../shared/reference/moge2_state_dict_spec.json``, random weights — speed does not
depend on the weights).  Input: one 640×480 image (``--height/--width``), batch 1 (``--batch``).

Each (model, tokens, variant, precision) runs in a fresh child process (the script re-invokes itself with the
hidden ``--single`` flag), so its peak memory is its own: CPU = peak RSS of the child minus its RSS after the
model was built; CUDA = ``torch.cuda.max_memory_allocated``.  Latency = the network call only
(``Predictor.forward_raw`` on a batch already on the device, including the host<->device copies of the ONNX
backend), ``--repeats`` timed calls after ``--warmup`` untimed ones; p50 / p95 with
``statistics.quantiles(method='inclusive')``.  Ratios are to torch eager fp32 of the same model and tokens in the
same run.  Precision error: depth AbsRel of ``Predictor.predict`` between the variant and eager fp32
(``mean(|d - d32| / d32)`` over pixels valid in both).  FLOPs per frame: ``torch.utils.flop_counter.FlopCounterMode``
over one eager forward (matmul / conv / attention FLOPs, 2 per multiply-add); achieved fraction = FLOPs / p50 /
peak, peak as printed (CPU: cores × clock × FMA lanes × 2 × FMA units, from /proc/cpuinfo; override with
``--peak-tflops``).
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
from types import SimpleNamespace
from typing import Any

from _harness import REFERENCE, cpu_model_name, log, machine_info, p95, peak_rss_mb, rss_mb, run_child

MODELS = {"public": None, "vits": "vits14_variant", "vitb": "vitb14_variant", "vitl": "vitl14_v2json"}
VARIANTS = ("eager", "compiled", "cuda-graphs", "ort-cpu", "ort-cuda", "ort-tensorrt")
ORT_PROVIDER = {"ort-cpu": "cpu", "ort-cuda": "cuda", "ort-tensorrt": "tensorrt"}
#: dense peak TFLOPS (fp32, fp16/bf16 tensor cores) of GPUs we may run on; others need --peak-tflops
GPU_PEAKS = {"H100": (67.0, 989.0), "H200": (67.0, 989.0), "A100": (19.5, 312.0), "L4": (30.3, 121.0)}


# ---------------------------------------------------------------------------------------------- peaks


def cpu_peak(threads: int) -> tuple[float, str]:
    """Theoretical fp32 peak FLOP/s of ``threads`` cores from /proc/cpuinfo, and the assumptions behind it."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    mhz = [float(line.split(":", 1)[1]) for line in info.splitlines() if line.startswith("cpu MHz")]
    clock = max(mhz) * 1e6 if mhz else 2.0e9
    lanes, isa = (16, "AVX-512") if "avx512f" in flags else (8, "AVX2") if "avx2" in flags else (4, "SSE")
    units = 2
    peak = threads * clock * lanes * 2 * units
    return peak, (f"{threads} core(s) × {clock / 1e9:.2f} GHz (cpuinfo, no turbo) × {lanes} fp32 lanes ({isa}) × "
                  f"2 (FMA) × {units} FMA units = {peak / 1e9:.0f} GFLOP/s")


def gpu_peak(name: str, half: bool) -> tuple[float | None, str]:
    for key, (fp32, fp16) in GPU_PEAKS.items():
        if key in name:
            value = (fp16 if half else fp32) * 1e12
            return value, f"{name}: {value / 1e12:.0f} TFLOP/s dense {'fp16/bf16 tensor core' if half else 'fp32'} (datasheet)"
    return None, f"{name}: unknown peak (use --peak-tflops)"


# ---------------------------------------------------------------------------------------------- child


def build_model(name: str) -> Any:
    import torch

    if MODELS[name] is None:
        from moge2_ros.checkpoints import load_model

        return load_model(REFERENCE / "public" / "model.pt")
    from moge2_ros.model import MoGe2Model

    config = json.loads((REFERENCE / "moge2_state_dict_spec.json").read_text())["configs"][MODELS[name]]["model_config"]
    torch.manual_seed(0)
    with torch.no_grad():
        return MoGe2Model(config).eval()


def count_flops(model: Any, image: Any, num_tokens: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(image, num_tokens)
    return float(counter.get_total_flops())


def depth_absrel(a: Any, b: Any) -> float:
    import torch

    valid = torch.isfinite(a.depth) & torch.isfinite(b.depth)
    for geo in (a, b):
        if geo.mask is not None:
            valid &= geo.mask
    if not valid.any():
        return float("nan")
    return float(((b.depth[valid] - a.depth[valid]).abs() / a.depth[valid]).mean())


def run_single(spec: dict[str, Any]) -> dict[str, Any]:
    """One configuration (in a child process): returns timings, memory, FLOPs, precision error."""
    import numpy as np
    import torch

    from moge2_ros import Predictor

    torch.set_num_threads(spec["threads"])
    device = spec["device"]
    model = build_model(spec["model"]).to(device)
    rss_model = rss_mb() or 0.0
    rng = np.random.default_rng(0)
    image_np = rng.integers(0, 256, size=(spec["batch"], spec["height"], spec["width"], 3), dtype=np.uint8)
    batch = torch.from_numpy(image_np).permute(0, 3, 1, 2).float().div(255).to(device)
    result: dict[str, Any] = dict(spec)
    variant, precision = spec["variant"], spec["precision"]
    kwargs: dict[str, Any] = dict(device=device, num_tokens=spec["tokens"], dtype=precision)
    t0 = time.perf_counter()
    if variant.startswith("ort-"):
        from moge2_ros.backends.onnx_export import export_onnx

        path = Path(spec["workdir"]) / f"{spec['model']}.onnx"
        if not path.exists():
            report = export_onnx(model.cpu(), path, dynamic=True, height=spec["height"], width=spec["width"],
                                 num_tokens=spec["tokens"], validation_cases=[], validate=False)
            result["export_s"] = report.export_seconds
            model.to(device)
        predictor = Predictor(model, backend="onnx", onnx_path=path, onnx_providers=[ORT_PROVIDER[variant]],
                              onnx_cache_dir=Path(spec["workdir"]) / "trt_cache", **kwargs)
        result["providers"] = predictor.onnx.providers
    elif variant in ("compiled", "cuda-graphs"):
        from moge2_ros.backends.torch_options import TorchOptions

        options = TorchOptions(compile=True) if variant == "compiled" else TorchOptions(cuda_graphs=True)
        predictor = Predictor(model, torch_options=options, **kwargs)
    else:
        predictor = Predictor(model, **kwargs)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

    def call() -> float:
        start = time.perf_counter()
        predictor.forward_raw(batch)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    first = call()
    result["first_call_s"] = first + (time.perf_counter() - t0 - first if variant == "compiled" else 0.0)
    for _ in range(max(0, spec["warmup"] - 1)):
        call()
    times = [call() for _ in range(spec["repeats"])]
    result["times_s"] = times
    result["p50_s"] = statistics.median(times)
    result["p95_s"] = p95(times)
    if device.startswith("cuda"):
        result["peak_mem_mib"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        result["peak_mem_mib"] = peak_rss_mb() - rss_model
    if spec["count_flops"]:
        result["flops"] = count_flops(model, batch[:1], spec["tokens"]) * spec["batch"]
    if spec["absrel"]:
        # eager fp32 stores its prediction once per (model, tokens); the other variants compare against it
        ref_path = Path(spec["workdir"]) / f"ref_{spec['model']}_{spec['tokens']}.pt"
        if precision == "fp32" and variant == "eager":
            geo = predictor.predict(image_np)
            torch.save({"depth": geo.depth.cpu(), "mask": None if geo.mask is None else geo.mask.cpu()}, ref_path)
        else:
            geo = predictor.predict(image_np)
            if ref_path.exists():
                ref = SimpleNamespace(**torch.load(ref_path, weights_only=True))
            else:
                ref = Predictor(model, device=device, num_tokens=spec["tokens"]).predict(image_np)
            result["depth_absrel_vs_eager_fp32"] = depth_absrel(ref, geo)
    return result


# ---------------------------------------------------------------------------------------------- parent


def table(rows: list[dict[str, Any]], device: str, peak_note: str, peak_of: Any) -> str:
    out = [f"### {device}", "", f"Peak assumed: {peak_note}", "",
           "| model | tokens | variant | precision | p50 ms | p95 ms | frames/s | × eager fp32 | peak MiB | "
           "GFLOP/frame | % of peak | depth AbsRel vs fp32 | note |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    base = {(r["model"], r["tokens"]): r["p50_s"] for r in rows
            if r.get("variant") == "eager" and r.get("precision") == "fp32" and "p50_s" in r}
    for r in rows:
        key = (r["model"], r["tokens"])
        if "error" in r:
            out.append(f"| {r['model']} | {r['tokens']} | {r['variant']} | {r['precision']} | – | – | – | – | – | – "
                       f"| – | – | {r['error']} |")
            continue
        fps = r["batch"] / r["p50_s"]
        ratio = f"{base[key] / r['p50_s']:.2f}" if key in base else "–"
        flops = r.get("flops")
        peak = peak_of(r["precision"])
        gflops = f"{flops / r['batch'] / 1e9:.1f}" if flops else "–"
        frac = f"{100 * flops / r['p50_s'] / peak:.1f}" if flops and peak else "–"
        absrel = r.get("depth_absrel_vs_eager_fp32")
        absrel_text = "–" if absrel is None else f"{absrel:.2e}"
        note = ",".join(p.replace("ExecutionProvider", "") for p in r.get("providers", []))
        out.append(f"| {r['model']} | {r['tokens']} | {r['variant']} | {r['precision']} | {1e3 * r['p50_s']:.1f} | "
                   f"{1e3 * r['p95_s']:.1f} | {fps:.2f} | {ratio} | {r['peak_mem_mib']:.0f} | {gflops} | {frac} | "
                   f"{absrel_text} | {note} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--single", help=argparse.SUPPRESS)
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=["vits", "vitb", "vitl"])
    p.add_argument("--tokens", nargs="+", type=int, default=[1200, 2400, 3600])
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=["eager", "compiled", "ort-cpu"])
    p.add_argument("--precisions", nargs="+", choices=["fp32", "fp16", "bf16"], default=["fp32"])
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--peak-tflops", type=float, default=None, help="override the device peak (TFLOP/s)")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    p.add_argument("--no-absrel", action="store_true", help="skip the depth AbsRel against eager fp32")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per configuration")
    p.add_argument("--json", help="write every row (with all samples) to this file")
    p.add_argument("--quick", action="store_true", help="smoke run: public model, 300 tokens, eager + ort-cpu, n=2")
    args = p.parse_args(argv)
    if args.single:
        print(json.dumps(run_single(json.loads(args.single))))
        return 0
    if args.quick:
        args.models, args.tokens, args.variants, args.repeats, args.warmup = ["public"], [300], ["eager", "ort-cpu"], 2, 1
    import torch

    device = args.device
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
        peaks = {prec: gpu_peak(name, prec != "fp32") for prec in ("fp32", "fp16", "bf16")}
    else:
        name = cpu_model_name()
        peaks = {prec: cpu_peak(args.threads) for prec in ("fp32", "fp16", "bf16")}
    if args.peak_tflops:
        peaks = {k: (args.peak_tflops * 1e12, f"{args.peak_tflops} TFLOP/s (given)") for k in peaks}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_backends_") as workdir:
        for model in args.models:
            for tokens in args.tokens:
                for variant in args.variants:
                    for precision in args.precisions:
                        if variant.startswith("ort-") and precision != "fp32" and not (
                                variant == "ort-tensorrt" and precision == "fp16"):
                            log(f"{model} {tokens} {variant} {precision}: skipped (the ONNX graph "
                                "is fp32; half precision on ONNX Runtime is TensorRT's fp16 mode only)")
                            continue
                        if variant == "cuda-graphs" and device == "cpu":
                            log(f"{model} {tokens} {variant} {precision}: skipped (CUDA graphs need a CUDA device)")
                            continue
                        spec = dict(model=model, tokens=tokens, variant=variant, precision=precision, device=device,
                                    height=args.height, width=args.width, batch=args.batch, repeats=args.repeats,
                                    warmup=args.warmup, threads=args.threads, workdir=workdir,
                                    count_flops=not args.no_flops and variant == "eager" and precision == "fp32",
                                    absrel=not args.no_absrel)
                        log(f"{model} {tokens} {variant} {precision} ...")
                        row = run_child(__file__, spec, args.timeout)
                        outcome = row.get("error") or f"p50 {1e3 * row['p50_s']:.1f} ms"
                        log(f"    {outcome} ({row['wall_s']:.0f} s)")
                        rows.append(row)
    flops = {(r["model"], r["tokens"]): r["flops"] for r in rows if "flops" in r}
    for r in rows:
        if "flops" not in r and (r["model"], r["tokens"]) in flops:
            r["flops"] = flops[(r["model"], r["tokens"])]
    print(f"## bench_backends: {name}, torch {torch.__version__}, {args.width}x{args.height}, batch {args.batch}, "
          f"{args.threads} thread(s), repeats {args.repeats}\n")
    print(table(rows, device, peaks["fp32"][1] + ("" if device == "cpu" else f"; half: {peaks['fp16'][1]}"),
                lambda prec: peaks[prec][0]))
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "machine": machine_info(device, args.threads),
                                               "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
