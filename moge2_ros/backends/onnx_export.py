"""ONNX export of MoGe-2 with the official I/O whose outputs equal the eager PyTorch forward.

The exported graph has the inputs ``image`` ``(B, 3, H, W)`` float32 RGB in [0, 1] and ``num_tokens`` (int64
scalar) and the outputs ``points`` ``(B, H, W, 3)``, ``normal`` ``(B, H, W, 3)``, ``mask`` ``(B, H, W)``,
``metric_scale`` ``(B,)`` (those the model has) — the I/O of the official MoGe-2 ONNX files, so either file works
with :class:`moge2_ros.backends.onnx_runtime.OnnxRuntimeBackend`.  With ``dynamic=True`` batch, height and width
are dynamic and the token grid ``rows = round(sqrt(n·H/W))``, ``cols = round(sqrt(n·W/H))`` is computed inside the
graph (float64, round half to even, as Python's ``round`` in eager); a static export fixes B = 1, H, W and the
token budget and has the single input ``image``.

The graph is a trace of the model's own :meth:`~moge2_ros.model.moge2.MoGe2Model.forward`; only the primitives
of its size-dependent steps are swapped for their export variant (:class:`~moge2_ros.backends.onnx_ops.ExportOps`:
tensor maths computed in-graph from the sizes).  Exact mode (default) keeps what the official exporter switches off:
the antialiased encoder resize and DINOv2's positional-embedding interpolation with its 0.1 offset and its
no-interpolation shortcut for a 37×37 grid.  ``official_compatible=True`` reproduces the official "onnx compatible
mode" instead (plain bilinear encoder resize, bicubic pos-embed resize to the grid size, no shortcut), and is
validated against the eager forward with the same numerics (``SizeOps(official_compatible=True)``).

Every export is validated before the file is written: ``onnx.checker`` (full check), then ONNX Runtime (CPU) on
several image sizes — including a size and aspect ratio the export did not see — against the eager forward of the
same weights.  A file that does not match is not written (:class:`OnnxExportError`).
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..errors import InputError, Moge2RosError
from ..io.atomic import atomic_path
from ..model.moge2 import MoGe2Model
from ..model.size_ops import SizeOps, token_grid
from .onnx_ops import ExportOps
from .onnx_runtime import META_PREFIX

LOG = logging.getLogger(__name__)

#: Opset of the exported graphs (LayerNormalization needs 17; 18 is the floor the issue asks for).
DEFAULT_OPSET = 18
#: Default tolerance of the export validation, float32: |onnx - torch| <= atol * max(1, |torch|).
FP32_ATOL = 1e-4
#: fp16 exports are compared with the float32 eager outputs: |Δ| <= 5e-2 * max(1, |torch|) on every output.
FP16_ATOL = 5e-2


class OnnxExportError(Moge2RosError):
    """The model could not be exported, or the exported graph does not reproduce the PyTorch outputs."""


class ExportableMoGe2(nn.Module):
    """What the exporter traces: the model's own :meth:`~MoGe2Model.forward` with the export variant of its
    size-dependent primitives (:class:`~moge2_ros.backends.onnx_ops.ExportOps`); shares the model's modules.

    ``forward(image (B, 3, H, W) float32, num_tokens int64 scalar)`` -> tuple of the model's outputs in
    :data:`~moge2_ros.model.moge2.OUTPUT_NAMES` order, float32.

    Args:
        model: the MoGe-2 model (eval mode).
        official_compatible: reproduce the official exporter's "onnx compatible mode" instead of eager numerics.
        static_num_tokens: a fixed token budget (static export: ``num_tokens`` is not an input).
        fp16: run the network in float16 (inputs and outputs stay float32; the model must have been converted).
    """

    def __init__(self, model: MoGe2Model, official_compatible: bool = False, static_num_tokens: int | None = None,
                 fp16: bool = False) -> None:
        super().__init__()
        self.model = model
        self.ops = ExportOps(official_compatible=official_compatible)
        self.static_num_tokens = static_num_tokens
        self.compute_dtype = torch.float16 if fp16 else torch.float32
        self.output_names = model.output_names

    def forward(self, image: torch.Tensor, num_tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        budget = self.static_num_tokens if self.static_num_tokens is not None else num_tokens
        assert budget is not None, "a dynamic export takes num_tokens"
        out = self.model(image.to(self.compute_dtype), budget, ops=self.ops)
        return tuple(out[k].float() for k in self.output_names)


# ---------------------------------------------------------------------------------------------- export + validation


@dataclass
class ValidationCase:
    """One validation input: image ``height × width``, ``batch`` images, token budget ``num_tokens``."""

    height: int
    width: int
    num_tokens: int
    batch: int = 1


@dataclass
class ExportReport:
    """What :func:`export_onnx` did: file, settings, timings and the per-case maximum differences to torch."""

    path: Path
    dynamic: bool
    fp16: bool
    official_compatible: bool
    opset: int
    export_seconds: float
    validate_seconds: float
    output_names: list[str]
    #: one entry per validation case: ``{"case": {...}, "max_abs": {output: float}, "max_scaled": {...}}``
    validation: list[dict[str, Any]] = field(default_factory=list)

    def max_abs(self) -> dict[str, float]:
        """Largest |onnx - torch| per output over all validation cases."""
        result: dict[str, float] = {}
        for entry in self.validation:
            for k, v in entry["max_abs"].items():
                result[k] = max(result.get(k, 0.0), v)
        return result


def default_validation_cases(height: int, width: int, num_tokens: int, dynamic: bool) -> list[ValidationCase]:
    """The export size, plus for dynamic exports: batch 2 at a portrait aspect ratio not seen by the export, and
    an image smaller than the encoder input (the encoder resize then upsamples) with a third aspect ratio."""
    cases = [ValidationCase(height, width, num_tokens)]
    if dynamic:
        cases.append(ValidationCase(max(2, round(width * 0.75)), max(2, round(height * 0.6)), num_tokens, batch=2))
        cases.append(ValidationCase(70, 90, max(1, num_tokens // 2)))
    return cases


def _example_image(case: ValidationCase, seed: int = 0) -> torch.Tensor:
    """A deterministic image with smooth structure and noise (uint8 levels / 255), ``(B, 3, H, W)``."""
    g = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, case.height)[:, None]
    x = torch.linspace(0, 1, case.width)[None, :]
    base = torch.stack(torch.broadcast_tensors(x * 0.8 + 0.1, y * 0.7 + 0.2, 0.5 + 0.4 * torch.sin(6.0 * x + 4.0 * y)))
    noise = torch.rand(case.batch, 3, case.height, case.width, generator=g) * 0.2 - 0.1
    return (torch.round((base[None] + noise).clamp(0, 1) * 255) / 255).float()


def _check_args(model: MoGe2Model, height: int, width: int, num_tokens: int, opset: int) -> None:
    if not isinstance(model, MoGe2Model):
        raise InputError(f"export_onnx: expected a MoGe2Model, found {type(model).__name__}")
    if not model.has_head("points_head"):
        raise InputError("export_onnx: the model has no points head")
    if height < 2 or width < 2:
        raise InputError(f"export_onnx: image size must be at least 2x2, found {width}x{height}")
    if num_tokens < 1:
        raise InputError(f"export_onnx: num_tokens must be positive, found {num_tokens}")
    rows, cols = token_grid(num_tokens, width / height)
    if rows < 1 or cols < 1:
        raise InputError(f"export_onnx: {num_tokens} tokens at {width}x{height} give an empty token grid")
    if opset < 18:
        raise InputError(f"export_onnx: opset must be >= 18, found {opset}")


def export_onnx(
    model: MoGe2Model,
    path: str | os.PathLike,
    *,
    dynamic: bool = True,
    fp16: bool = False,
    official_compatible: bool = False,
    height: int = 480,
    width: int = 640,
    num_tokens: int = 1200,
    opset: int = DEFAULT_OPSET,
    validation_cases: Sequence[ValidationCase] | None = None,
    atol: float | None = None,
    validate: bool = True,
) -> ExportReport:
    """Export ``model`` to ``path`` as ONNX, validate it, and only then write the file.

    Args:
        model: a :class:`MoGe2Model` (any device; exported from a CPU float32 copy of its weights).
        path: output ``.onnx`` file (written atomically; an existing file is replaced only on success).
        dynamic: dynamic batch / height / width and a ``num_tokens`` input; else a static graph for
            ``1 × 3 × height × width`` and ``num_tokens`` tokens with the single input ``image``.
        fp16: float16 network (I/O stays float32); validated against the float32 eager outputs with
            :data:`FP16_ATOL` — needs float16 kernels in ONNX Runtime's CPU provider for the validation.
        official_compatible: the official exporter's numerics (non-antialiased encoder resize, no pos-embed offset);
            validated against an eager run of those numerics, and its gap to the eager model is reported.
        height, width, num_tokens: example (and, for static graphs, the fixed) input size and token budget.
        opset: ONNX opset (>= 18).
        validation_cases: sizes to compare on (default :func:`default_validation_cases`).
        atol: validation tolerance, ``|onnx - torch| <= atol * max(1, |torch|)`` (default :data:`FP32_ATOL`, or
            :data:`FP16_ATOL` for fp16).
        validate: run the checker and the numerical comparison (only tests of the validation itself turn it off).
    Returns:
        :class:`ExportReport`.
    Raises:
        InputError: bad arguments.  OnnxExportError: export failure, checker failure or mismatch (no file written).
    """
    import onnx

    _check_args(model, height, width, num_tokens, opset)
    path = Path(path)
    if path.is_dir():
        raise InputError(f"export_onnx: output {path} is a directory; give a file name such as model.onnx")
    if not path.parent.exists():
        raise InputError(f"export_onnx: output folder {path.parent} does not exist")
    cases = list(validation_cases) if validation_cases is not None else \
        default_validation_cases(height, width, num_tokens, dynamic)
    if not dynamic:
        bad = [c for c in cases if (c.height, c.width, c.num_tokens, c.batch) != (height, width, num_tokens, 1)]
        if bad:
            raise InputError(f"export_onnx: a static export only accepts 1x3x{height}x{width} at {num_tokens} "
                             f"tokens; validation case {bad[0]} does not fit")
    cpu_model = _cpu_float32_copy(model)
    net = copy.deepcopy(cpu_model).half() if fp16 else cpu_model  # never convert the caller's model in place
    twin = ExportableMoGe2(net, official_compatible=official_compatible,
                           static_num_tokens=None if dynamic else num_tokens, fp16=fp16).eval()
    # batch 2 for dynamic graphs: torch.export specialises a size-1 dimension to the constant 1
    example = _example_image(ValidationCase(height, width, num_tokens, batch=2 if dynamic else 1))
    t0 = time.perf_counter()
    onnx_model = _run_exporter(twin, example, num_tokens, dynamic, opset)
    export_seconds = time.perf_counter() - t0
    _set_metadata(onnx_model, cpu_model, dynamic=dynamic, fp16=fp16, official_compatible=official_compatible,
                  height=height, width=width, num_tokens=num_tokens)
    report = ExportReport(path, dynamic, fp16, official_compatible, opset, export_seconds, 0.0, list(twin.output_names))
    with atomic_path(path, suffix=".tmp") as tmp:
        onnx.save_model(onnx_model, str(tmp))
        if validate:
            t1 = time.perf_counter()
            reference = functools.partial(cpu_model, ops=SizeOps(official_compatible=True)) \
                if official_compatible else None
            report.validation = _validate(tmp, cpu_model, cases, dynamic,
                                          atol if atol is not None else (FP16_ATOL if fp16 else FP32_ATOL), reference)
            report.validate_seconds = time.perf_counter() - t1
            _add_validation_metadata(tmp, report)
    LOG.info("exported %s in %.1f s (validation %.1f s): max |onnx - torch| %s", path, report.export_seconds,
             report.validate_seconds, report.max_abs())
    return report


def _cpu_float32_copy(model: MoGe2Model) -> MoGe2Model:
    if model.device.type == "cpu" and model.dtype == torch.float32 and not model.training:
        return model
    return copy.deepcopy(model).to(device="cpu", dtype=torch.float32).eval()


class _DropTorchvisionNotice(logging.Filter):
    """torch.onnx's op registry logs a WARNING 'torchvision is not installed. Skipping torchvision::<op>' for each
    torchvision op it cannot register; MoGe-2 uses none of them, so those lines are noise to a user."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("torchvision is not installed")


#: The logger of torch.onnx's op registry (torch/onnx/_internal/exporter/_registration.py).
_REGISTRY_LOGGER = "torch.onnx._internal.exporter._registration"


def _run_exporter(twin: ExportableMoGe2, example: torch.Tensor, num_tokens: int, dynamic: bool, opset: int) -> Any:
    import warnings

    if dynamic:
        args: tuple[Any, ...] = (example, torch.tensor(num_tokens, dtype=torch.int64))
        dims = {0: torch.export.Dim("batch", max=1024), 2: torch.export.Dim("height", min=2, max=16384),
                3: torch.export.Dim("width", min=2, max=16384)}
        kwargs: dict[str, Any] = dict(input_names=["image", "num_tokens"],
                                      dynamic_shapes={"image": dims, "num_tokens": None})
    else:
        args = (example,)
        kwargs = dict(input_names=["image"])
    registry_logger, notice = logging.getLogger(_REGISTRY_LOGGER), _DropTorchvisionNotice()
    registry_logger.addFilter(notice)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(twin, args, dynamo=True, opset_version=opset, output_names=twin.output_names,
                                        optimize=True, verbose=False, **kwargs)
    except Exception as exc:  # the exporter raises many types (torch._dynamo / export errors, onnxscript errors)
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise OnnxExportError(f"torch.onnx.export failed: {type(exc).__name__}: {first}") from exc
    finally:
        registry_logger.removeFilter(notice)
    return program.model_proto


def _set_metadata(onnx_model: Any, model: MoGe2Model, **settings: Any) -> None:
    values = {"format": "moge2_ros/1", "num_tokens_range": json.dumps(list(model.num_tokens_range)),
              "remap_output": model.remap_output, **{k: json.dumps(v) for k, v in settings.items()}}
    for entry in [e for e in onnx_model.metadata_props if e.key.startswith(META_PREFIX)]:
        onnx_model.metadata_props.remove(entry)
    for key, value in values.items():
        entry = onnx_model.metadata_props.add()
        entry.key, entry.value = META_PREFIX + key, str(value)
    onnx_model.producer_name = "moge2_ros"


def _add_validation_metadata(path: Path, report: ExportReport) -> None:
    import onnx

    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_PREFIX + "validation_max_abs", json.dumps(report.max_abs())
    onnx.save_model(proto, str(path))


def _validate(path: Path, model: MoGe2Model, cases: Sequence[ValidationCase], dynamic: bool, atol: float,
              reference: Callable[[torch.Tensor, int], dict[str, torch.Tensor]] | None) -> list[dict[str, Any]]:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # onnx.checker.ValidationError / InferenceError
        raise OnnxExportError(f"onnx.checker rejected the exported graph: {str(exc).splitlines()[0][:300]}") from exc
    from .onnx_runtime import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(path, providers=["cpu"])
    results = []
    for i, case in enumerate(cases):
        image = _example_image(case, seed=i)
        with torch.no_grad():
            expected = (reference or model)(image, case.num_tokens)
        got = backend(image, case.num_tokens)
        max_abs, max_scaled = {}, {}
        for name, ref in expected.items():
            ref = ref.float()
            if name not in got or got[name].shape != ref.shape:
                raise OnnxExportError(f"validation {case}: output {name!r} has shape "
                                      f"{tuple(got[name].shape) if name in got else None}, torch {tuple(ref.shape)}")
            diff = (got[name] - ref).abs()
            max_abs[name] = float(diff.max()) if diff.numel() else 0.0
            max_scaled[name] = float((diff / ref.abs().clamp(min=1.0)).max()) if diff.numel() else 0.0
            if not math.isfinite(max_scaled[name]) or max_scaled[name] > atol:
                raise OnnxExportError(
                    f"the exported graph does not reproduce torch on {case.batch}x3x{case.height}x{case.width} at "
                    f"{case.num_tokens} tokens: output {name!r} differs by {max_abs[name]:.3g} "
                    f"(scaled {max_scaled[name]:.3g} > tolerance {atol:g}); file not written")
        results.append({"case": vars(case).copy(), "max_abs": max_abs, "max_scaled": max_scaled})
    return results
