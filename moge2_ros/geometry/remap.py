"""Image resampling through pixel maps (``cv2.remap`` semantics) in pure PyTorch, on the input's device.

A map gives, for every output pixel, the source pixel coordinate to sample (x = column, y = row; pixel centres at
integer coordinates, ROS / OpenCV convention).  :func:`pixel_map_to_grid` turns such a map into the normalised
grid of :func:`torch.nn.functional.grid_sample` with ``align_corners=True`` (-1 and +1 are the centres of the
first and last source pixel), so that :func:`remap` samples where ``cv2.remap(..., INTER_LINEAR,
BORDER_CONSTANT)`` does: neighbours outside the source count as 0 (``padding_mode='zeros'``).  OpenCV quantises
its bilinear weights to 1/32 pixel; the two agree within that.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["pixel_map_to_grid", "remap"]


def pixel_map_to_grid(map_x: torch.Tensor, map_y: torch.Tensor, src_width: int, src_height: int) -> torch.Tensor:
    """``(1, H, W, 2)`` grid_sample grid (``align_corners=True``) of a pixel map.

    Args:
        map_x, map_y: ``(H, W)`` source pixel coordinates of each output pixel (column, row), float.
        src_width, src_height: size of the source image, pixels.

    Returns:
        ``(1, H, W, 2)`` float32 grid on the maps' device; coordinates outside ``[-1, 1]`` are outside the source.
    """
    sx = 2.0 / max(src_width - 1, 1)
    sy = 2.0 / max(src_height - 1, 1)
    grid = torch.stack([map_x.to(torch.float32) * sx - 1.0, map_y.to(torch.float32) * sy - 1.0], dim=-1)
    return grid.unsqueeze(0)


def remap(image: torch.Tensor, grid: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Sample ``image`` at ``grid`` (one ``grid_sample``; ``cv2.remap`` semantics, see the module docstring).

    Args:
        image: ``(C, H, W)`` or ``(B, C, H, W)`` float image (any value range), on the grid's device.
        grid: ``(1, h, w, 2)`` from :func:`pixel_map_to_grid` (shared by the batch).
        mode: ``bilinear`` (images) or ``nearest`` (depth, masks: no values mixed across edges).

    Returns:
        ``(C, h, w)`` or ``(B, C, h, w)``, the input's dtype; 0 where the map points outside the source.
    """
    single = image.dim() == 3
    batch = image.unsqueeze(0) if single else image
    if grid.shape[0] != batch.shape[0]:
        grid = grid.expand(batch.shape[0], -1, -1, -1)
    out = F.grid_sample(batch, grid.to(batch.dtype), mode=mode, padding_mode="zeros", align_corners=True)
    return out[0] if single else out
