"""From raw MoGe-2 outputs to metric camera-frame geometry (shared by ``model.infer`` and the Predictor).

Steps, in the official order: threshold the mask (> 0.5); recover focal and z-shift from the affine point map
(or only the shift when the focal / full intrinsics are known); shift z; drop non-positive depth from the mask
(:func:`recover_camera`); re-project points from depth and intrinsics (``force_projection``); multiply by the
metric scale (:func:`metric_geometry`, which can also set invalid pixels to NaN in the same multiply).
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
class RecoveredCamera:
    """The camera of an affine point map, before metric scaling and projection.

    Attributes:
        depth: ``(B, H, W)`` z of the shifted affine map (affine units).
        mask: ``(B, H, W)`` bool validity (model mask > 0.5 and depth > 0), or None when there is no mask.
        intrinsics: ``(B, 3, 3)`` NORMALISED intrinsics (image spans [0, 1] in u and v).
        shift: ``(B,)`` z-shift added to the affine point map.
    """

    depth: torch.Tensor
    mask: torch.Tensor | None
    intrinsics: torch.Tensor
    shift: torch.Tensor


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


def recover_camera(
    points: torch.Tensor,
    mask_prob: torch.Tensor | None = None,
    *,
    fov_x: float | torch.Tensor | None = None,
    intrinsics: torch.Tensor | None = None,
) -> RecoveredCamera:
    """Focal (or given intrinsics) and z-shift of an affine-invariant point map, and its shifted depth.

    Args:
        points: ``(B, H, W, 3)`` affine-invariant points (network output after remap), float32.
        mask_prob: ``(B, H, W)`` validity probability or None.
        fov_x: known horizontal FoV in degrees (centred principal point) - the official option.
        intrinsics: known ``(B, 3, 3)`` NORMALISED intrinsics with any fx, fy and principal point; only the
            z-shift is then solved.  Mutually exclusive with ``fov_x``.
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

    depth = points[..., 2] + shift[:, None, None]
    if mask is not None:
        mask = mask & (depth > 0)
    return RecoveredCamera(depth=depth, mask=mask, intrinsics=intrinsics, shift=shift)


def metric_geometry(
    depth: torch.Tensor,
    intrinsics: torch.Tensor,
    metric_scale: torch.Tensor | None = None,
    *,
    valid: torch.Tensor | None = None,
    xy: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Points and depth of a recovered camera, times the metric scale, NaN where not ``valid``.

    ``points = depth_to_points(depth, intrinsics) * scale`` and ``depth * scale`` (the official order, so valid
    pixels equal the official values exactly).  Invalid pixels are multiplied by NaN instead of the scale: one
    contiguous multiply, several times cheaper on the CPU than masked fills of the ``(B, H, W, 3)`` map.

    Args:
        depth: ``(B, H, W)`` shifted affine depth (:attr:`RecoveredCamera.depth`).
        intrinsics: ``(B, 3, 3)`` normalised intrinsics.
        metric_scale: ``(B,)`` or None (the result stays in affine units).
        valid: ``(B, H, W)`` bool or None (every pixel kept).
        xy: ``(B, H, W, 2)`` shifted affine x, y to keep instead of re-projecting (``force_projection=False``).

    Returns:
        ``(points (B, H, W, 3), depth (B, H, W))``, fresh tensors.
    """
    factor = None
    if valid is not None:
        factor = valid.to(depth.dtype)
        factor.div_(factor)  # 1 where valid, 0 / 0 = NaN elsewhere
        if metric_scale is not None:
            factor.mul_(metric_scale[:, None, None])
    elif metric_scale is not None:
        factor = metric_scale[:, None, None]
    points = depth_to_points(depth, intrinsics) if xy is None else torch.cat([xy, depth[..., None]], dim=-1)
    if factor is None:
        return points, depth.clone()
    return points.mul_(factor[..., None]), depth * factor


def recover_geometry(
    points: torch.Tensor,
    mask_prob: torch.Tensor | None = None,
    metric_scale: torch.Tensor | None = None,
    *,
    fov_x: float | torch.Tensor | None = None,
    intrinsics: torch.Tensor | None = None,
    force_projection: bool = True,
) -> RecoveredGeometry:
    """Turn an affine-invariant point map into camera-frame geometry (:func:`recover_camera`, then
    :func:`metric_geometry` without masking).

    Args:
        points: ``(B, H, W, 3)`` affine-invariant points (network output after remap), float32.
        mask_prob: ``(B, H, W)`` validity probability or None.
        metric_scale: ``(B,)`` metric scale or None (result stays relative).
        fov_x: known horizontal FoV in degrees (centred principal point) - the official option.
        intrinsics: known ``(B, 3, 3)`` NORMALISED intrinsics with any fx, fy and principal point; only the
            z-shift is then solved.  Mutually exclusive with ``fov_x``.
        force_projection: recompute x and y from depth and intrinsics.
    """
    camera = recover_camera(points, mask_prob, fov_x=fov_x, intrinsics=intrinsics)
    xy = None if force_projection else points[..., :2]
    out_points, depth = metric_geometry(camera.depth, camera.intrinsics, metric_scale, xy=xy)
    return RecoveredGeometry(points=out_points, depth=depth, mask=camera.mask, intrinsics=camera.intrinsics,
                             shift=camera.shift)
