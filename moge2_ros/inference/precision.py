"""``precision: auto``: the fastest accurate network precision for a device.

* CUDA: fp16 autocast (tensor cores; the official code's own GPU choice).
* A CPU with native bf16 instructions (AVX512-BF16 or AMX-BF16, as oneDNN reports them): bf16 autocast —
  1.3–1.8x faster than fp32 for ViT-S/B/L on such a CPU, at a depth AbsRel of 2.4e-3 – 6.5e-3 against fp32 on
  the trained reference model (``bench/bench_backends.py``, docs/BENCHMARKS.md).
* Any other CPU: fp32 (bf16 there is emulated and slower; fp16 on a CPU is 7–18x slower).
* The ONNX backend on a CPU: fp32 (autocast does not apply to ONNX Runtime); on CUDA fp16 (TensorRT fp16).

Post-processing always runs in float32 whatever the network precision.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import InputError

#: Precisions a user can ask for; ``auto`` resolves to one of the other three.
PRECISIONS = ("auto", "fp32", "fp16", "bf16")

#: What the choice costs in accuracy, as measured (docs/BENCHMARKS.md), for the start-up log line.
MEASURED_ERROR = {
    "bf16": "depth AbsRel 2.4e-3 - 6.5e-3 against fp32 (reference model, CPU), 1.3-1.8x faster",
    "fp16": "half-precision autocast on CUDA (not measured on a GPU by this project yet)",
    "fp32": "exact",
}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bf16 natively (oneDNN's check; else the /proc/cpuinfo flags avx512_bf16 / amx_bf16)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        pass
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device, backend: str = "torch") -> tuple[str, str]:
    """``(precision, why)``: ``precision`` as given, or what ``auto`` picks for ``device`` and ``backend``.

    Raises:
        InputError: a precision that is not one of :data:`PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision: expected one of {', '.join(PRECISIONS)}, found {precision!r}")
    if precision != "auto":
        return precision, "as asked"
    if device.type == "cuda":
        return "fp16", "auto: CUDA device"
    if backend != "torch":
        return "fp32", "auto: ONNX Runtime on a CPU"
    if cpu_has_native_bf16():
        return "bf16", "auto: CPU with native bf16 instructions"
    return "fp32", "auto: CPU without native bf16 instructions"


def precision_note(precision: str, why: str) -> str:
    """One start-up line: the precision in use, why, and its measured error."""
    return f"precision {precision} ({why}; {MEASURED_ERROR.get(precision, '')})"
