"""The ONNX exporter's variant of the model's size-dependent primitives (:class:`ExportOps`).

:class:`~moge2_ros.model.moge2.MoGe2Model` writes its size-dependent steps once over a
:class:`~moge2_ros.model.size_ops.SizeOps` strategy.  The eager kernels do not export with dynamic sizes, or export
with other numerics (``F.interpolate(antialias=True)`` has no ONNX counterpart that every runtime implements the
same way; ``Resize`` nodes round coordinates differently; ``linspace`` only exports with a static length), so the
exporter passes :class:`ExportOps`, whose primitives are plain tensor maths (:mod:`.onnx_resize`) that trace with
symbolic sizes and reproduce PyTorch's CPU kernels to float32 rounding:

* bilinear resizes, with or without antialiasing, as dense weight matrices or two-tap gathers;
* the bicubic positional-embedding resize as two matrix products, with DINOv2's stored-grid shortcut decided
  in-graph (identity weights when the token grid equals the stored grid);
* ``linspace`` as PyTorch's two-sided formula over ``arange`` of a symbolic length.

It also runs eagerly: ``model(image, n, ops=ExportOps())`` is the exported graph's computation in PyTorch (tested
against ``model(image, n)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model.size_ops import Number, Size, SizeOps
from .onnx_resize import cubic_matrix, resize_bilinear, resize_bilinear_aa


def _float_scalar(value: Number, dtype: torch.dtype, device: torch.device | str | None) -> torch.Tensor:
    """``value`` (Python number or 0-d tensor) as a 0-d tensor of ``dtype`` (one rounding from float64)."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype=dtype, device=device).reshape(())
    return torch.full((), value, dtype=dtype, device=device)


def _identity_rows(size: Size, columns: int, device: torch.device) -> torch.Tensor:
    """``(size, columns)`` float32 matrix with ones on the diagonal (the identity when ``size == columns``)."""
    i = torch.arange(size, dtype=torch.float32, device=device)
    j = torch.arange(columns, dtype=torch.float32, device=device)
    return (i[:, None] == j[None, :]).to(torch.float32)


@dataclass(frozen=True)
class ExportOps(SizeOps):
    """:class:`~moge2_ros.model.size_ops.SizeOps` with export-friendly implementations (same contracts)."""

    def resize_bilinear(self, x: torch.Tensor, height: Size, width: Size, antialias: bool) -> torch.Tensor:
        return resize_bilinear_aa(x, height, width) if antialias else resize_bilinear(x, height, width)

    def resize_bicubic(self, x: torch.Tensor, height: Size, width: Size,
                       scale_factor: tuple[Number, Number] | None = None,
                       keep: bool | torch.Tensor = False) -> torch.Tensor:
        if isinstance(keep, bool) and keep:
            return x
        in_h, in_w = x.shape[-2], x.shape[-1]  # the stored grid: static
        sy, sx = (None, None) if scale_factor is None else \
            (_float_scalar(s, torch.float64, x.device) for s in scale_factor)
        wy, wx = cubic_matrix(in_h, height, sy, x.device), cubic_matrix(in_w, width, sx, x.device)
        if isinstance(keep, torch.Tensor):
            wy = torch.where(keep, _identity_rows(height, in_h, x.device), wy)
            wx = torch.where(keep, _identity_rows(width, in_w, x.device), wx)
        return torch.matmul(torch.matmul(wy.to(x.dtype), x), wx.transpose(0, 1).to(x.dtype))

    def linspace(self, start: Number, end: Number, steps: Size, *, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> torch.Tensor:
        """PyTorch's CPU formula in float32: ``start + step·i`` for the first half (``[start]`` for one step),
        ``end - step·(steps - 1 - i)`` for the second, ``step = (end - start) / (steps - 1)``; cast to ``dtype``."""
        first, last = _float_scalar(start, torch.float32, device), _float_scalar(end, torch.float32, device)
        idx = torch.arange(steps, dtype=torch.float32, device=device)
        n = torch.full((), steps, dtype=torch.float32, device=device)
        step = (last - first) / torch.clamp(n - 1.0, min=1.0)
        halfway = torch.clamp(torch.floor(n / 2.0), min=1.0)  # steps == 1: [start], as torch.linspace
        values = torch.where(idx < halfway, first + step * idx, last - step * (n - 1.0 - idx))
        return values.to(dtype or torch.float32)
