"""The primitive operations of MoGe-2's size-dependent steps, and the size arithmetic shared by eager and export.

MoGe-2's forward wraps an expensive core whose shapes depend only on the token grid (ViT, neck, heads) in cheap
steps whose shapes depend on the image size and the token budget: the token grid itself, the encoder resize, the
positional-embedding interpolation, the uv conditioning grids and the output resize.  The model writes those steps
once (:meth:`~moge2_ros.model.moge2.MoGe2Model.grid_inputs`,
:meth:`~moge2_ros.model.moge2.MoGe2Model.finish_outputs`) over the primitives of a :class:`SizeOps`:

* :class:`SizeOps` itself (:data:`EAGER`, the default) — PyTorch's kernels (``F.interpolate``, ``torch.linspace``),
  i.e. the numerics of the official model;
* the ONNX exporter's subclass, :class:`moge2_ros.backends.onnx_ops.ExportOps` — the same operations written as
  tensor maths that export with dynamic sizes (resizes as matrix products, a ``linspace`` of symbolic length).

A strategy changes how a primitive is computed, never what the model does with it.  ``official_compatible=True``
selects the numerics of the official exporter's "onnx compatible mode" in either strategy: encoder resize without
antialiasing, positional embeddings resized to the grid size without DINOv2's 0.1 offset or its stored-grid shortcut.

Sizes are Python ints in eager code and ``torch.SymInt`` in a dynamic export.  :func:`as_number` lifts a symbolic
size or a tensor to a float64 0-d tensor and leaves Python numbers alone (Python floats are float64 too), so size
arithmetic such as :func:`token_grid` is written once and gives the same bits either way; :func:`grid_size` turns a
tensor grid side back into a size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch
import torch.nn.functional as F

#: A size: a Python int in eager code, a ``torch.SymInt`` inside a dynamic export.
Size = Union[int, torch.SymInt]
#: A size or count for arithmetic: a Python number, or a float64 0-d tensor (see :func:`as_number`).
Number = Union[int, float, torch.Tensor]
#: Upper bound of a token-grid side (the exporter's symbolic shape reasoning needs one).
GRID_MAX = 4096


def as_number(value: int | float | torch.SymInt | torch.Tensor) -> Number:
    """``value`` for float64 arithmetic: Python numbers as they are; a ``SymInt`` or a tensor as a 0-d float64 tensor
    (so that, in a dynamic export, arithmetic on sizes becomes graph operations with Python's float64 numerics)."""
    if isinstance(value, torch.Tensor):
        return value.to(torch.float64).reshape(())
    if isinstance(value, (torch.SymInt, torch.SymFloat)):
        return torch.full((), value, dtype=torch.float64)
    return value


def token_grid(num_tokens: int | torch.Tensor, aspect_ratio: Number) -> tuple[Number, Number]:
    """Token rows and columns for a budget of ``num_tokens`` at ``aspect_ratio = W / H``.

    ``rows = round(sqrt(n / ar))``, ``cols = round(sqrt(n * ar))`` in float64, round half to even; ``rows * cols``
    generally differs from ``n``.  Python numbers give ints; a tensor budget or aspect ratio gives int64 0-d tensors
    with the same values (:func:`grid_size` turns them into sizes).
    """
    n = as_number(num_tokens)
    rows, cols = (n / aspect_ratio) ** 0.5, (n * aspect_ratio) ** 0.5
    if isinstance(rows, torch.Tensor):
        return rows.round().long(), cols.round().long()
    return round(rows), round(cols)


def grid_size(value: int | torch.Tensor) -> Size:
    """A token-grid side as a size: an int as it is; a tensor through ``.item()``, checked to lie in
    ``[1, GRID_MAX]`` (in a dynamic export those checks bound the resulting unbacked ``SymInt``)."""
    if not isinstance(value, torch.Tensor):
        return value
    size = value.to(torch.int64).item()
    torch._check(size >= 1)
    torch._check(size <= GRID_MAX)
    return size


@dataclass(frozen=True)
class SizeOps:
    """How the size-dependent steps compute their primitives: PyTorch's own kernels (the official numerics).

    Attributes:
        official_compatible: the numerics of the official exporter's "onnx compatible mode" (read by the model's
            steps: plain bilinear encoder resize, positional embeddings resized to the grid size, no shortcut).
    """

    official_compatible: bool = False

    def resize_bilinear(self, x: torch.Tensor, height: Size, width: Size, antialias: bool) -> torch.Tensor:
        """Bilinear resize (``align_corners=False``) of ``(B, C, H, W)`` to ``(B, C, height, width)``."""
        return F.interpolate(x, (height, width), mode="bilinear", align_corners=False, antialias=antialias)

    def resize_bicubic(self, x: torch.Tensor, height: Size, width: Size,
                       scale_factor: tuple[Number, Number] | None = None,
                       keep: bool | torch.Tensor = False) -> torch.Tensor:
        """Bicubic resize (A = -0.75, ``align_corners=False``, no antialias) of ``(1, C, h, w)`` to
        ``(1, C, height, width)``.

        Args:
            scale_factor: ``(sy, sx)``: sample at ``1 / s`` pixel steps, as ``F.interpolate(scale_factor=...)``
                (then ``floor(h * sy) == height`` and ``floor(w * sx) == width``); None: ``h / height``, ``w / width``.
            keep: return ``x`` unchanged instead (``height == h`` and ``width == w`` then); a 0-d bool tensor where
                the decision is made in-graph.
        """
        if keep:
            return x
        if scale_factor is not None:
            return F.interpolate(x, scale_factor=scale_factor, mode="bicubic", antialias=False)
        return F.interpolate(x, size=(height, width), mode="bicubic", antialias=False)

    def linspace(self, start: Number, end: Number, steps: Size, *, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> torch.Tensor:
        """``steps`` evenly spaced values from ``start`` to ``end`` (``torch.linspace``)."""
        return torch.linspace(start, end, steps, dtype=dtype, device=device)


#: The default strategy: eager PyTorch kernels, the official model's numerics.
EAGER = SizeOps()
