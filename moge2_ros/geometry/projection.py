"""Depth map <-> point map <-> image coordinates with NORMALISED intrinsics.

Conventions: OpenCV camera frame (x right, y down, z forward, z = depth along the optical axis); normalised
image coordinates in uv units (the image spans [0, 1]; pixel ``(i, j)`` has its centre at
``((j + 0.5) / W, (i + 0.5) / H)``); intrinsics ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` in the same units
(see :mod:`moge2_ros.geometry.intrinsics`).
"""

from __future__ import annotations

import torch

from moge2_ros.errors import GeometryError
from moge2_ros.geometry._checks import check_intrinsics_shape
from moge2_ros.geometry.uv import pixel_center_grid

__all__ = ["depth_to_points", "points_to_depth", "project_points"]


def _intrinsics_params(intrinsics: torch.Tensor, n_spatial: int) -> tuple[torch.Tensor, ...]:
    """fx, fy, cx, cy, skew of ``(..., 3, 3)``, each shaped ``(..., 1 x n_spatial)`` for broadcasting."""
    tail = (1,) * n_spatial
    k = intrinsics
    return tuple(k[..., r, c].reshape(*k.shape[:-2], *tail) for r, c in ((0, 0), (1, 1), (0, 2), (1, 2), (0, 1)))


def depth_to_points(depth: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Unproject a depth map through the pixel centres.

    ``b = (v - cy) / fy``, ``a = (u - cx - s * b) / fx``, point ``= (a * d, b * d, d)`` with ``(u, v)`` the
    normalised pixel centre.  Equals utils3d's ``depth_map_to_point_map`` (which multiplies by the inverse of
    the 4x4 intrinsics) within float32 rounding (~1e-7 relative).  Non-finite depth gives non-finite points.

    Args:
        depth: ``(..., H, W)`` depth (z, any length unit).
        intrinsics: ``(..., 3, 3)`` normalised intrinsics, batch dims broadcastable with ``depth``'s.

    Returns:
        ``(..., H, W, 3)`` camera-frame points, same unit as ``depth``.
    """
    if not isinstance(depth, torch.Tensor) or depth.ndim < 2 or not depth.is_floating_point():
        found = tuple(depth.shape) if isinstance(depth, torch.Tensor) else type(depth).__name__
        raise GeometryError(f"depth: expected a floating tensor of shape (..., H, W), found {found}")
    check_intrinsics_shape(intrinsics)
    height, width = depth.shape[-2:]
    k = intrinsics.to(device=depth.device, dtype=depth.dtype)
    fx, fy, cx, cy, skew = _intrinsics_params(k, 2)
    # Separable pixel-centre coordinates (same values as pixel_center_grid): u varies along W, v along H.
    u = (torch.arange(width, dtype=depth.dtype, device=depth.device) + 0.5) / width
    v = ((torch.arange(height, dtype=depth.dtype, device=depth.device) + 0.5) / height)[:, None]
    b = (v - cy) / fy
    a = (u - cx - skew * b) / fx
    try:
        batch = torch.broadcast_shapes(depth.shape, a.shape, b.shape)
    except RuntimeError:
        raise GeometryError(
            f"depth_to_points: batch dims of depth {tuple(depth.shape[:-2])} and intrinsics "
            f"{tuple(intrinsics.shape[:-2])} do not broadcast"
        ) from None
    # Write the three coordinates straight into one (..., H, W, 3) buffer (no stack of three temporaries).
    out = torch.empty((*batch, 3), dtype=depth.dtype, device=depth.device)
    torch.mul(a, depth, out=out[..., 0])
    torch.mul(b, depth, out=out[..., 1])
    out[..., 2] = depth
    return out


def points_to_depth(points: torch.Tensor) -> torch.Tensor:
    """Depth (the z coordinate) of camera-frame points ``(..., 3)`` -> ``(...)``."""
    if not isinstance(points, torch.Tensor) or points.ndim < 1 or points.shape[-1] != 3:
        found = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
        raise GeometryError(f"points: expected shape (..., 3), found {found}")
    return points[..., 2]


def project_points(points: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Project camera-frame points to normalised image coordinates.

    ``u = fx * X / Z + s * Y / Z + cx``, ``v = fy * Y / Z + cy`` (uv units: the image spans [0, 1]; multiply by
    (W, H) and subtract 0.5 for OpenCV pixel coordinates).  Points with ``Z <= 0`` give meaningless / infinite
    coordinates; mask them yourself.

    Args:
        points: ``(..., N, 3)`` or ``(..., H, W, 3)``; the dims after ``intrinsics``' batch dims are spatial.
        intrinsics: ``(..., 3, 3)`` normalised intrinsics; its batch dims are the leading dims of ``points``
            (a plain ``(3, 3)`` applies to everything).

    Returns:
        ``points.shape[:-1] + (2,)`` uv coordinates.
    """
    if not isinstance(points, torch.Tensor) or points.ndim < 2 or points.shape[-1] != 3:
        found = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
        raise GeometryError(f"points: expected shape (..., N, 3) or (..., H, W, 3), found {found}")
    check_intrinsics_shape(intrinsics)
    n_spatial = points.ndim - 1 - (intrinsics.ndim - 2)
    if n_spatial < 1:
        raise GeometryError(
            f"project_points: points {tuple(points.shape)} need at least one spatial dim beyond the intrinsics' "
            f"batch dims {tuple(intrinsics.shape[:-2])}"
        )
    k = intrinsics.to(device=points.device, dtype=points.dtype)
    fx, fy, cx, cy, skew = _intrinsics_params(k, n_spatial)
    xn = points[..., 0] / points[..., 2]
    yn = points[..., 1] / points[..., 2]
    try:
        return torch.stack([fx * xn + skew * yn + cx, fy * yn + cy], dim=-1)
    except RuntimeError:
        raise GeometryError(
            f"project_points: points {tuple(points.shape)} and intrinsics {tuple(intrinsics.shape)} do not broadcast"
        ) from None
