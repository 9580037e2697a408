"""Image resizing written as plain tensor maths, so that it exports to ONNX with the numerics of PyTorch's CPU kernels.

``F.interpolate(..., antialias=True)`` has no ONNX counterpart that every runtime implements the same way, and the
exporters turn the other modes into ``Resize`` nodes whose coordinate maths (``1 / scale`` in float32, no fused
multiply-add) differs from PyTorch's by up to ~1e-5 of a pixel.  Here each resize is one of:

* :func:`resize_bilinear_aa` — antialiased bilinear (the MoGe-2 encoder input): a dense weight matrix per axis,
  ``out = Wy @ x @ Wx^T``, built in-graph from the sizes with the formulas of PyTorch's separable AA kernel
  (triangle filter stretched by ``max(scale, 1)``, taps clipped to the image, weights normalised to sum 1);
* :func:`resize_bilinear` — plain bilinear, ``align_corners=False`` (the output resize of the heads, and the
  encoder resize of the official "ONNX compatible mode"): two taps per axis gathered and blended;
* :func:`cubic_matrix` — bicubic (A = -0.75, clamped borders) as a matrix, for the positional-embedding grid.

Every function takes sizes as Python ints, ``torch.SymInt`` (``torch.export``) or 0-d integer tensors, so the same
code runs eagerly (tested against ``F.interpolate``) and inside an exported graph with dynamic sizes.  Scalar
coordinate steps that PyTorch computes in double precision (or with one fused multiply-add) are computed here in
float64 and rounded once to float32, which reproduces the float32 kernels to ~1 ulp.  Sizes are in pixels; inputs
are ``(..., H, W)`` tensors.
"""

from __future__ import annotations

from typing import Union

import torch

Size = Union[int, torch.SymInt, torch.Tensor]


def _scalar(value: Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A 0-d tensor of ``dtype`` holding ``value`` (int, SymInt or tensor)."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype=dtype, device=device).reshape(())
    return torch.full((), value, dtype=dtype, device=device)


def _arange(size: Size, device: torch.device) -> torch.Tensor:
    """``0 .. size-1`` as float32 (exact for the sizes of images)."""
    if isinstance(size, torch.Tensor):
        size = size.item()
    return torch.arange(size, dtype=torch.float32, device=device)


def _source_scale(in_size: Size, out_size: Size, scale: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """PyTorch's ``area_pixel_compute_scale`` (``align_corners=False``): float32 ``in / out`` from the sizes, or
    ``float32(1 / scale_factor)`` (division in double) when an explicit scale factor is given."""
    if scale is not None:
        return (1.0 / scale.to(torch.float64)).to(torch.float32)
    return _scalar(in_size, torch.float32, device) / _scalar(out_size, torch.float32, device)


def bilinear_aa_weights(in_size: Size, out_size: Size, device: torch.device | None = None) -> torch.Tensor:
    """Weights ``(out_size, in_size)`` of PyTorch's antialiased bilinear resize along one axis (float32).

    Row ``i`` holds the normalised triangle-filter taps of output pixel ``i``: ``scale = in / out`` (float32),
    ``centre = scale * (i + 0.5)``, ``support = max(scale, 1)``, taps ``j`` in
    ``[trunc(centre - support + 0.5), trunc(centre + support + 0.5))`` clipped to ``[0, in)``, weight
    ``max(0, 1 - |(j - centre + 0.5) / max(scale, 1)|)``, normalised to sum 1 (NOTES.md §2.2).
    """
    device = device or torch.device("cpu")
    scale = _source_scale(in_size, out_size, None, device)
    in_f = _scalar(in_size, torch.float64, device)
    support = torch.where(scale >= 1.0, scale, torch.ones_like(scale))
    invscale = torch.where(scale >= 1.0, (1.0 / scale.to(torch.float64)).to(torch.float32), torch.ones_like(scale))
    centre = scale * (_arange(out_size, device) + 0.5)                      # (out,)
    lo = ((centre - support).to(torch.float64) + 0.5).floor().clamp(min=0.0)  # trunc == floor once clamped at 0
    hi = torch.minimum(((centre + support).to(torch.float64) + 0.5).floor(), in_f)
    j = _arange(in_size, device)                                            # (in,)
    inside = (j.to(torch.float64)[None, :] >= lo[:, None]) & (j.to(torch.float64)[None, :] < hi[:, None])
    x = (((j[None, :] - centre[:, None]).to(torch.float64) + 0.5) * invscale.to(torch.float64)).to(torch.float32)
    w = torch.clamp(1.0 - x.abs(), min=0.0) * inside.to(torch.float32)
    total = w.sum(dim=1, keepdim=True)
    return w / torch.where(total != 0, total, torch.ones_like(total))


def resize_bilinear_aa(x: torch.Tensor, out_h: Size, out_w: Size) -> torch.Tensor:
    """``F.interpolate(x, (out_h, out_w), mode='bilinear', align_corners=False, antialias=True)`` as two matrix
    products (float32 weights; ``x`` is ``(..., H, W)``, any float dtype — weights are cast to it)."""
    h, w = x.shape[-2], x.shape[-1]
    wy = bilinear_aa_weights(h, out_h, x.device).to(x.dtype)
    wx = bilinear_aa_weights(w, out_w, x.device).to(x.dtype)
    return torch.matmul(wy, torch.matmul(x, wx.transpose(0, 1)))


def bilinear_taps(in_size: Size, out_size: Size, device: torch.device | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two-tap bilinear sampling along one axis (``align_corners=False``, no antialias), PyTorch's CPU kernel.

    ``src = max(fma(scale, i + 0.5, -0.5), 0)`` with ``scale = in / out`` (float32, one rounding), ``i0 = floor(src)``
    (at most ``in - 1``), ``i1 = i0 + (i0 < in - 1)``, ``l1 = src - i0``, ``l0 = 1 - l1`` (NOTES.md §2.11).

    Returns:
        ``(i0, i1, l0, l1)``: int64 indices and float32 weights, each ``(out_size,)``.
    """
    device = device or torch.device("cpu")
    scale = _source_scale(in_size, out_size, None, device)
    i = _arange(out_size, device)
    # float64 product of two float32 numbers minus 0.5 is exact; one rounding to float32 == fused multiply-add.
    src = (scale.to(torch.float64) * (i.to(torch.float64) + 0.5) - 0.5).to(torch.float32).clamp(min=0.0)
    last = _scalar(in_size, torch.float32, device) - 1.0
    i0 = torch.minimum(src.floor(), last)
    l1 = torch.clamp(src - i0, 0.0, 1.0)
    i1 = torch.where(i0 < last, i0 + 1.0, i0)
    return i0.to(torch.int64), i1.to(torch.int64), 1.0 - l1, l1


def _blend_axis(x: torch.Tensor, dim: int, taps: tuple[torch.Tensor, ...]) -> torch.Tensor:
    i0, i1, l0, l1 = taps
    shape = [1] * x.dim()
    shape[dim] = -1
    l0, l1 = l0.to(x.dtype).reshape(shape), l1.to(x.dtype).reshape(shape)
    return torch.index_select(x, dim, i0) * l0 + torch.index_select(x, dim, i1) * l1


def resize_bilinear(x: torch.Tensor, out_h: Size, out_w: Size) -> torch.Tensor:
    """``F.interpolate(x, (out_h, out_w), mode='bilinear', align_corners=False, antialias=False)`` for
    ``(..., H, W)`` tensors, as two gathers and blends per axis (exports to ``Gather``/``Mul``/``Add``)."""
    h, w = x.shape[-2], x.shape[-1]
    x = _blend_axis(x, x.dim() - 2, bilinear_taps(h, out_h, x.device))
    return _blend_axis(x, x.dim() - 1, bilinear_taps(w, out_w, x.device))


CUBIC_A = -0.75


def _fma(a: float | torch.Tensor, x: torch.Tensor, c: float) -> torch.Tensor:
    """float32 ``a * x + c`` with one rounding (the fused multiply-add of the compiled kernels): the float64
    product and sum of these short float32 operands are exact, the cast rounds once."""
    a64 = a.to(torch.float64) if isinstance(a, torch.Tensor) else a
    return (a64 * x.to(torch.float64) + c).to(torch.float32)


def _cubic_coefficients(t: torch.Tensor) -> list[torch.Tensor]:
    """Keys' cubic convolution weights (A = -0.75) of the 4 taps at offsets -1, 0, 1, 2 for fraction ``t``
    (float32, Horner steps as fused multiply-adds)."""
    a = CUBIC_A

    def near(x: torch.Tensor) -> torch.Tensor:   # |x| <= 1: ((A + 2) x - (A + 3)) x x + 1
        return _fma(_fma(a + 2, x, -(a + 3)) * x, x, 1.0)

    def far(x: torch.Tensor) -> torch.Tensor:    # 1 < |x| < 2: ((A x - 5 A) x + 8 A) x - 4 A
        return _fma(_fma(_fma(a, x, -5 * a), x, 8 * a), x, -4 * a)

    return [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]


def cubic_matrix(in_size: int, out_size: Size, scale_factor: torch.Tensor | None = None,
                 device: torch.device | None = None) -> torch.Tensor:
    """Weights ``(out_size, in_size)`` of PyTorch's bicubic resize (``align_corners=False``, no antialias).

    ``src = scale * (i + 0.5) - 0.5`` with ``scale = float32(1 / scale_factor)`` when a scale factor (float64
    0-d tensor) is given — as ``F.interpolate(scale_factor=...)`` does — else ``in / out``; taps
    ``floor(src) - 1 .. floor(src) + 2`` clamped to ``[0, in - 1]`` (a clamped tap adds its weight to the border
    pixel).
    """
    device = device or torch.device("cpu")
    scale = _source_scale(in_size, out_size, scale_factor, device)
    i = _arange(out_size, device)
    src = (scale.to(torch.float64) * (i.to(torch.float64) + 0.5) - 0.5).to(torch.float32)
    i0 = torch.minimum(src.floor(), torch.full_like(src, in_size - 1))
    t = torch.clamp(src - i0, 0.0, 1.0)
    j = torch.arange(in_size, dtype=torch.float32, device=device)
    weights = torch.zeros_like(src)[:, None] * j[None, :]
    for k, coefficient in enumerate(_cubic_coefficients(t)):
        tap = torch.clamp(i0 + (k - 1), 0.0, float(in_size - 1))
        weights = weights + coefficient[:, None] * (j[None, :] == tap[:, None]).to(torch.float32)
    return weights
