"""From raw MoGe-2 outputs to metric camera-frame geometry (shared by ``model.infer`` and the Predictor).

Steps, in the official order: threshold the mask (> 0.5); recover focal and z-shift from the affine point map
(or only the shift when the focal / full intrinsics are known); shift z; drop non-positive depth from the mask;
re-project points from depth and intrinsics (``force_projection``); multiply by the metric scale.
All in float32 torch on the input's device, batched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import GeometryError
from .focal_shift import (
    focal_to_normalized_intrinsics,
    fov_x_to_focal,
    recover_focal_shift,
    recover_shift_with_intrinsics,
)
from .projection import depth_to_points


@dataclass(frozen=True)
class RecoveredGeometry:
    """Camera-frame geometry before masking.

    Attributes:
        points: ``(B, H, W, 3)`` points (metric when a scale was given), optical frame.
        depth: ``(B, H, W)`` z of ``points``.
        mask: ``(B, H, W)`` bool validity (model mask > 0.5 and depth > 0), or None when no mask and no points.
        intrinsics: ``(B, 3, 3)`` NORMALISED intrinsics (image spans [0, 1] in u and v).
        shift: ``(B,)`` z-shift added to the affine point map (before metric scaling).
    """

    points: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor | None
    intrinsics: torch.Tensor
    shift: torch.Tensor


def recover_geometry(
    points: torch.Tensor,
    mask_prob: torch.Tensor | None = None,
    metric_scale: torch.Tensor | None = None,
    *,
    fov_x: float | torch.Tensor | None = None,
    intrinsics: torch.Tensor | None = None,
    force_projection: bool = True,
) -> RecoveredGeometry:
    """Turn an affine-invariant point map into camera-frame geometry.

    Args:
        points: ``(B, H, W, 3)`` affine-invariant points (network output after remap), float32.
        mask_prob: ``(B, H, W)`` validity probability or None.
        metric_scale: ``(B,)`` metric scale or None (result stays relative).
        fov_x: known horizontal FoV in degrees (centred principal point) — the official option.
        intrinsics: known ``(B, 3, 3)`` NORMALISED intrinsics with any fx, fy and principal point; only the
            z-shift is then solved.  Mutually exclusive with ``fov_x``.
        force_projection: recompute x and y from depth and intrinsics.
    """
    if points.dim() != 4 or points.shape[-1] != 3:
        raise GeometryError(f"points: expected (B, H, W, 3), found {tuple(points.shape)}")
    if fov_x is not None and intrinsics is not None:
        raise GeometryError("give either fov_x or intrinsics, not both")
    batch, height, width, _ = points.shape
    aspect_ratio = width / height
    mask = mask_prob > 0.5 if mask_prob is not None else None

    if intrinsics is not None:
        if intrinsics.shape != (batch, 3, 3):
            raise GeometryError(f"intrinsics: expected ({batch}, 3, 3), found {tuple(intrinsics.shape)}")
        intrinsics = intrinsics.to(points)
        shift = recover_shift_with_intrinsics(points, intrinsics, mask)
    elif fov_x is None:
        focal, shift = recover_focal_shift(points, mask)
        intrinsics = focal_to_normalized_intrinsics(focal, aspect_ratio)
    else:
        focal = fov_x_to_focal(fov_x, aspect_ratio, (batch,)).to(points.device)
        _, shift = recover_focal_shift(points, mask, focal=focal)
        intrinsics = focal_to_normalized_intrinsics(focal, aspect_ratio)

    z = points[..., 2] + shift[:, None, None]
    if mask is not None:
        mask = mask & (z > 0)
    depth = z
    if force_projection:  # x and y come from depth and intrinsics: the shifted affine x, y are never needed
        points = depth_to_points(depth, intrinsics)
    else:
        points = torch.cat([points[..., :2], z[..., None]], dim=-1)
    if metric_scale is not None:
        points = points * metric_scale[:, None, None, None]
        depth = depth * metric_scale[:, None, None]
    return RecoveredGeometry(points=points, depth=depth, mask=mask, intrinsics=intrinsics, shift=shift)
