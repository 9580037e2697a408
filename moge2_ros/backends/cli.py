"""``moge2-ros export-onnx``: write a validated ONNX file of a MoGe-2 model (registered through ``add_parsers``).

No heavy import at module level: torch and onnx are imported by the handler.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from moge2_ros.cli_args import add_model_arguments, note, positive_float, positive_int

__all__ = ["add_parsers", "cmd_export_onnx"]


def add_parsers(sub: Any) -> None:
    """Register ``export-onnx`` on the ``moge2-ros`` subcommand parser ``sub``."""
    p = sub.add_parser(
        "export-onnx",
        help="export a model to ONNX (official I/O: image, num_tokens -> points, normal, mask, metric_scale)",
        description="Export a MoGe-2 model to ONNX and validate it (onnx checker + ONNX Runtime outputs compared "
                    "with PyTorch on several sizes); a file that does not match is not written.",
        epilog="Exit status: 0 success, 1 runtime error (model, export, validation), 2 usage error.",
    )
    add_model_arguments(p, precision=False, tokens=False, device=None,
                        model_help="model to export (loaded on the CPU):")
    p.add_argument("--output", "-o", required=True, metavar="FILE", help="output .onnx file")
    p.add_argument("--dynamic", action="store_true",
                   help="dynamic batch, height and width and a num_tokens input (default: static 1x3xHxW graph "
                        "with the token budget baked in)")
    p.add_argument("--fp16", action="store_true", help="float16 network (inputs / outputs stay float32)")
    p.add_argument("--official-compatible", action="store_true",
                   help="the official exporter's numerics (no antialiased encoder resize, no pos-embed offset) "
                        "instead of outputs equal to eager PyTorch")
    p.add_argument("--height", type=positive_int, default=480, help="example / static image height (default 480)")
    p.add_argument("--width", type=positive_int, default=640, help="example / static image width (default 640)")
    p.add_argument("--num-tokens", type=positive_int, default=1200,
                   help="example / static ViT token budget (default 1200)")
    p.add_argument("--opset", type=positive_int, default=18, help="ONNX opset, >= 18 (default 18)")
    p.add_argument("--atol", type=positive_float, default=None, metavar="A",
                   help="validation tolerance, |onnx - torch| <= atol * max(1, |torch|) (default 1e-4, fp16 5e-2)")
    p.add_argument("--json", action="store_true", help="print the export report as JSON on stdout")
    p.set_defaults(handler=cmd_export_onnx)


def cmd_export_onnx(args: argparse.Namespace) -> int:
    """Handler of ``export-onnx``: load, export, validate, report.  Errors propagate as moge2_ros errors."""
    from ..assets import model_source
    from ..checkpoints import load_model
    from .onnx_export import export_onnx

    model = load_model(model_source(args.model, say=note), device="cpu")
    report = export_onnx(model, args.output, dynamic=args.dynamic, fp16=args.fp16,
                         official_compatible=args.official_compatible, height=args.height, width=args.width,
                         num_tokens=args.num_tokens, opset=args.opset, atol=args.atol)
    summary = {
        "output": str(report.path), "dynamic": report.dynamic, "fp16": report.fp16,
        "official_compatible": report.official_compatible, "opset": report.opset,
        "outputs": report.output_names, "export_seconds": round(report.export_seconds, 2),
        "validate_seconds": round(report.validate_seconds, 2), "max_abs_diff": report.max_abs(),
        "validation": report.validation,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        diffs = ", ".join(f"{k} {v:.2g}" for k, v in report.max_abs().items())
        print(f"wrote {report.path} ({'dynamic' if report.dynamic else 'static'}, "
              f"{'fp16' if report.fp16 else 'fp32'}{', official-compatible' if report.official_compatible else ''}); "
              f"export {report.export_seconds:.1f} s, validation {report.validate_seconds:.1f} s on "
              f"{len(report.validation)} size(s); max |onnx - torch|: {diffs}", file=sys.stdout)
    return 0
