"""Image-plane coordinate grids.

MoGe conditions its decoder on, and recovers focal length against, a "normalised view plane": the image
rectangle scaled so that its half diagonal is 1.  Pixel centres are used, so for a W×H image
``u_j = span_x * (2j + 1 - W) / W`` with ``span_x = ar / sqrt(1 + ar²)`` and ``v_i = span_y * (2i + 1 - H) / H``
with ``span_y = 1 / sqrt(1 + ar²)``, ``ar = W / H`` (or the aspect ratio given).  A camera-frame point
(X, Y, Z) (OpenCV / REP 103 optical frame: x right, y down, z forward) projects to ``focal * (X, Y) / Z`` on
this plane, with ``focal`` in units of the half diagonal.
"""

from __future__ import annotations

from typing import Callable

import torch


def view_plane_axes(
    width: int,
    height: int,
    aspect_ratio: float | torch.Tensor | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    linspace: Callable[..., torch.Tensor] = torch.linspace,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The 1-D axes of :func:`normalized_view_plane_uv`: ``(u (W,), v (H,))``; the grid is their outer product.

    ``aspect_ratio`` may be a float64 0-d tensor and the sizes symbolic, with a ``linspace`` (same signature as
    ``torch.linspace``) that accepts them: that is how the ONNX exporter builds the model's uv grids in-graph.
    """
    if aspect_ratio is None:
        aspect_ratio = width / height
    span_x = aspect_ratio / (1 + aspect_ratio**2) ** 0.5
    span_y = 1 / (1 + aspect_ratio**2) ** 0.5
    u = linspace(-span_x * (width - 1) / width, span_x * (width - 1) / width, width, dtype=dtype, device=device)
    v = linspace(-span_y * (height - 1) / height, span_y * (height - 1) / height, height, dtype=dtype, device=device)
    return u, v


def normalized_view_plane_uv(
    width: int,
    height: int,
    aspect_ratio: float | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """UV coordinates of pixel centres on the normalised view plane.

    Args:
        width, height: grid size in pixels (or tokens).
        aspect_ratio: width / height of the *image* the grid covers; defaults to ``width / height``.
        dtype, device: of the result (float32 / CPU by default).

    Returns:
        ``(height, width, 2)`` tensor; ``[..., 0]`` is u (rightwards), ``[..., 1]`` is v (downwards).
        Computed with ``torch.linspace`` exactly like the official implementation.
    """
    u, v = view_plane_axes(width, height, aspect_ratio, dtype, device)
    return grid_from_axes(u, v)


def pixel_center_axes(
    width: int, height: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The 1-D axes of :func:`pixel_center_grid`: ``(u (W,), v (H,))``."""
    u = (torch.arange(width, dtype=dtype, device=device) + 0.5) / width
    v = (torch.arange(height, dtype=dtype, device=device) + 0.5) / height
    return u, v


def pixel_center_grid(
    width: int, height: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """Normalised image coordinates of pixel centres: ``((j + 0.5) / W, (i + 0.5) / H)``.

    Returns:
        ``(height, width, 2)`` tensor in [0, 1] ("uv units": the image spans [0, 1] on both axes).
    """
    return grid_from_axes(*pixel_center_axes(width, height, dtype, device))


def grid_from_axes(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``(len(v), len(u), 2)`` grid with ``[i, j] = (u[j], v[i])``."""
    uu, vv = torch.meshgrid(u, v, indexing="xy")
    return torch.stack([uu, vv], dim=-1)
