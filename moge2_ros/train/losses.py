"""Training losses of MoGe-2 (semantics of the official ``moge/train/losses.py``) and the loss sets of the
official training recipe (``configs/train/v2.json``).

Conventions (as in the official code):

* Point maps are ``(..., H, W, 3)`` in the OpenCV camera frame.  The prediction is the network's affine-invariant
  point map (unit-less); the ground truth is metric (metres) or up to scale, with **non-finite values (``+inf``)
  marking invalid pixels**.  An optional ``mask`` (``(..., H, W)`` bool) further restricts the valid pixels; it is
  combined with ``isfinite(gt)`` (``mask=None`` reproduces the official behaviour exactly).
* Every loss returns ``(loss, misc)`` where ``loss`` has the batch shape ``(...)`` (0-d for one instance, as the
  official trainer calls them) unless said otherwise, and ``misc`` is a dict of Python floats for logging (this
  costs one host sync per call, as in the official code).
* The robust alignments are the exact (truncated) L1 solvers of :mod:`moge2_ros.geometry.alignment`, run on
  low-resolution copies made by :func:`moge2_ros.geometry.resize.masked_nearest_resize`.  The aligned scale and
  shift are differentiable functions of the prediction (they are recomputed from the two defining points), so
  gradients flow through them, as in the official code.

The metric-scale loss is ``|log s_hat - stopgrad(log s*)|^2`` where ``s*`` is the scale found by the global
alignment (:func:`affine_invariant_global_loss` returns it detached; :func:`scale_loss_target` makes the stop
gradient explicit).

References: Wang et al., "MoGe-2: Accurate Monocular Geometry with Metric Scale and Sharp Details" (2025);
Wang et al., "MoGe: Unlocking Accurate Monocular Geometry Estimation for Open-Domain Images with Optimal Training
Supervision" (CVPR 2025).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from moge2_ros.data.sample import INVALID_LABEL, LABEL_TYPES
from moge2_ros.errors import Moge2RosError
from moge2_ros.geometry.alignment import align_points_scale_xyz_shift, align_points_scale_z_shift
from moge2_ros.geometry.resize import masked_nearest_resize

__all__ = [
    "LossError",
    "LOSS_FUNCTIONS",
    "LossTerm",
    "LossSet",
    "OFFICIAL_LOSS_SETS",
    "LOSS_SET_LABELS",
    "loss_set_for_label",
    "compute_instance_losses",
    "affine_invariant_global_loss",
    "affine_invariant_local_loss",
    "anchor_sampling_weight",
    "sample_patch_anchors",
    "edge_loss",
    "normal_loss",
    "normal_map_loss",
    "mask_bce_loss",
    "metric_scale_loss",
    "scale_loss_target",
    "angle_between",
]

Misc = dict[str, float]

MIN_POINTS_PER_PATCH = 32
"""Patches of the local loss with fewer valid ground-truth points (inside the 3-D radius) are dropped."""
ANCHOR_NUM_TEST = 64
"""Random neighbours per pixel used to estimate the local point density for anchor importance sampling."""


class LossError(Moge2RosError, ValueError):
    """A loss received inconsistent shapes or a loss-set configuration is malformed."""


# ----------------------------------------------------------------------------------------------------------------
# small helpers (semantics of moge/utils/geometry_torch.py and utils3d)
# ----------------------------------------------------------------------------------------------------------------


def _smooth(err: torch.Tensor, beta: float = 0.0) -> torch.Tensor:
    """Huber-like smoothing: identity for ``beta == 0``, else quadratic below ``beta``."""
    if beta == 0:
        return err
    return torch.where(err < beta, 0.5 * err.square() / beta, err - 0.5 * beta)


def _weighted_mean(
    x: torch.Tensor, w: torch.Tensor, dim: int | tuple[int, ...] | None = None, keepdim: bool = False, eps: float = 1e-7
) -> torch.Tensor:
    """``mean(x w) / (mean(w) + eps)`` over ``dim`` (all dims if None)."""
    w = w.to(x.dtype)
    if dim is None:
        return (x * w).mean() / w.mean().add(eps)
    return (x * w).mean(dim=dim, keepdim=keepdim) / w.mean(dim=dim, keepdim=keepdim).add(eps)


def _harmonic_mean(x: torch.Tensor, w: torch.Tensor, dim: tuple[int, ...], eps: float = 1e-7) -> torch.Tensor:
    """Weighted harmonic mean ``1 / (weighted_mean(1 / (x + eps)) + eps)``."""
    return _weighted_mean(x.add(eps).reciprocal(), w, dim=dim, eps=eps).add(eps).reciprocal()


def _angle_diff_vec3(v1: torch.Tensor, v2: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Angle (radians) between unnormalised 3-vectors: ``atan2(|v1 x v2| + eps, v1 . v2)``."""
    return torch.atan2(torch.cross(v1, v2, dim=-1).norm(dim=-1) + eps, (v1 * v2).sum(dim=-1))


def angle_between(v1: torch.Tensor, v2: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Angle (radians, ``[0, pi]``) between two batches of vectors ``(..., D)`` -> ``(...)`` (utils3d semantics).

    Both are normalised (``F.normalize(eps=eps)``); ``cos`` is their dot product and ``sin`` the smaller of the two
    rejection norms ``|v2 - cos v1|``, ``|v1 - cos v2|``; the result is ``atan2(sin + eps, cos)`` (the ``eps`` keeps
    the gradient finite at zero angle).  More accurate than ``acos`` near 0 and pi.
    """
    v1 = F.normalize(v1, dim=-1, eps=eps)
    v2 = F.normalize(v2, dim=-1, eps=eps)
    cos = (v1 * v2).sum(dim=-1)
    sin = torch.minimum((v2 - v1 * cos[..., None]).norm(dim=-1), (v1 - v2 * cos[..., None]).norm(dim=-1))
    return torch.atan2(sin + eps, cos)


def _check_point_pair(name: str, pred: torch.Tensor, gt: torch.Tensor) -> None:
    for label, t in (("prediction", pred), ("ground truth", gt)):
        if not isinstance(t, torch.Tensor) or t.ndim < 3 or t.shape[-1] != 3 or not t.is_floating_point():
            found = f"{tuple(t.shape)} {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise LossError(f"{name}: expected the {label} as a floating tensor (..., H, W, 3), found {found}")
    if pred.shape != gt.shape:
        raise LossError(f"{name}: prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in shape")


def _valid_mask(name: str, gt: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``isfinite(gt).all(-1)`` and-ed with the optional ``mask`` of shape ``gt.shape[:-1]``."""
    valid = torch.isfinite(gt).all(dim=-1)
    if mask is None:
        return valid
    if not isinstance(mask, torch.Tensor) or mask.shape != valid.shape:
        found = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise LossError(f"{name}: expected mask of shape {tuple(valid.shape)}, found {found}")
    return valid & mask.to(device=valid.device, dtype=torch.bool)


def _per_batch(name: str, value: torch.Tensor | float, batch: int, like: torch.Tensor) -> torch.Tensor:
    """A scalar or ``(...)`` per-instance value as a flat ``(batch,)`` tensor."""
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device).reshape(-1)
    if t.numel() == 1 and batch != 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise LossError(f"{name}: expected a scalar or one value per instance ({batch}), found {t.numel()} values")
    return t


# ----------------------------------------------------------------------------------------------------------------
# affine-invariant point losses
# ----------------------------------------------------------------------------------------------------------------


def affine_invariant_global_loss(
    pred_points: torch.Tensor,
    gt_points: torch.Tensor,
    mask: torch.Tensor | None = None,
    align_resolution: int = 48,
    beta: float = 0.0,
    trunc: float = 1.0,
    sparsity_aware: bool = False,
) -> tuple[torch.Tensor, Misc, torch.Tensor]:
    """Global affine-invariant point loss: robust (truncated L1) scale + z-shift alignment, then weighted L1.

    1. Both maps are reduced to ``align_resolution x align_resolution`` with :func:`masked_nearest_resize`; the
       scale ``s`` and z-shift ``t`` minimising ``sum_i min(trunc, w_i |s p_i + t - g_i|_1)`` with
       ``w_i = 1 / max(g_z, 1e-2)`` (valid low-resolution pixels only) are found exactly.  A non-positive scale is
       invalid: then ``s = 0, t = 0`` and the instance contributes no loss.
    2. With the per-pixel weight ``w = 1 / max(g_z, 1e-5)``, clamped at 10x its mean over the valid pixels, the
       loss is ``mean_{H, W, xyz}(smooth_beta(|s p + t - g| w))`` over all pixels (invalid ones count as zero).
    3. ``sparsity_aware`` divides by ``valid_fraction / low_res_valid_fraction`` (for sparse labels; not used by
       the official recipe).

    Args:
        pred_points: ``(..., H, W, 3)`` predicted affine-invariant point map.
        gt_points: ``(..., H, W, 3)`` ground truth, non-finite where invalid (metres for metric data).
        mask: optional ``(..., H, W)`` bool, combined with ``isfinite(gt_points)``.
        align_resolution: side of the low-resolution copy used for the alignment (official recipe: 48).
        beta: smoothing of the L1 error (0 = plain L1).
        trunc: truncation of the alignment objective.
        sparsity_aware: re-weight by label sparsity.

    Returns:
        ``(loss, misc, scale)``: ``loss (...)``; ``misc = {"truncated_error", "delta"}`` (floats over the whole
        batch: mean of ``min(1, |aligned - gt| / g_z)`` and fraction with relative error < 1); ``scale (...)``,
        the global alignment scale ``s*`` (gt units per prediction unit, 0 if invalid), **detached**.
    """
    _check_point_pair("affine_invariant_global_loss", pred_points, gt_points)
    valid_gt = _valid_mask("affine_invariant_global_loss", gt_points, mask)
    gt_points = torch.where(valid_gt[..., None], gt_points, 1)

    pred_lr, gt_lr, lr_mask = masked_nearest_resize(
        pred_points, gt_points, mask=valid_gt, size=(align_resolution, align_resolution)
    )
    align_weight = lr_mask.flatten(-2, -1) / gt_lr[..., 2].flatten(-2, -1).clamp_min(1e-2)
    scale, shift = align_points_scale_z_shift(
        pred_lr.flatten(-3, -2), gt_lr.flatten(-3, -2), align_weight, trunc=trunc
    )
    valid = scale > 0
    scale = torch.where(valid, scale, 0)
    shift = torch.where(valid[..., None], shift, 0)
    aligned = scale[..., None, None, None] * pred_points + shift[..., None, None, :]

    weight = (valid[..., None, None] & valid_gt).to(gt_points.dtype) / gt_points[..., 2].clamp_min(1e-5)
    # Guard against extremely small depths dominating the loss.
    weight = weight.clamp_max(10.0 * _weighted_mean(weight, valid_gt, dim=(-2, -1), keepdim=True))
    loss = _smooth((aligned - gt_points).abs() * weight[..., None], beta=beta).mean(dim=(-3, -2, -1))

    if sparsity_aware:
        lr_fraction = lr_mask.to(loss.dtype).mean(dim=(-2, -1))
        sparsity = valid_gt.to(loss.dtype).mean(dim=(-2, -1)) / lr_fraction.clamp_min(torch.finfo(loss.dtype).tiny)
        loss = loss / (sparsity + 1e-7)

    err = (aligned.detach() - gt_points).norm(dim=-1) / gt_points[..., 2]
    misc = {
        "truncated_error": _weighted_mean(err.clamp_max(1.0), valid_gt).item(),
        "delta": _weighted_mean((err < 1).to(err.dtype), valid_gt).item(),
    }
    return loss, misc, scale.detach()


def anchor_sampling_weight(
    points: torch.Tensor,
    mask: torch.Tensor,
    radius_2d: int,
    radius_3d: torch.Tensor,
    num_test: int = ANCHOR_NUM_TEST,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Importance weights of patch anchors: inversely proportional to the local density of valid points.

    For every pixel, ``num_test`` random offsets in ``[-radius_2d, radius_2d]^2`` (two ``torch.randint`` draws of
    shape ``(H, W, num_test)``, shared by the batch) are tested; the density is the number of tested pixels that
    are inside the image, valid and within ``radius_3d`` (3-D distance) of the pixel's point.  The weight is
    ``1 / max(1, density)`` on valid pixels, 0 elsewhere, normalised to sum to ~1 per instance.

    Args:
        points: ``(B, H, W, 3)`` ground-truth points (finite everywhere; invalid pixels filled).
        mask: ``(B, H, W)`` bool validity.
        radius_2d: pixel radius of the tested neighbourhood.
        radius_3d: ``(B, H, W)`` 3-D radius per pixel (same unit as ``points``).
        num_test: neighbours tested per pixel.
        generator: torch RNG (None: the global RNG of the points' device).

    Returns:
        ``(B, H, W)`` weights.
    """
    batch, height, width = mask.shape
    device = points.device
    pixel_i, pixel_j = torch.meshgrid(
        torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij"
    )
    shape = (height, width, num_test)
    delta_i = torch.randint(-radius_2d, radius_2d + 1, shape, device=device, generator=generator)
    delta_j = torch.randint(-radius_2d, radius_2d + 1, shape, device=device, generator=generator)
    test_i, test_j = pixel_i[..., None] + delta_i, pixel_j[..., None] + delta_j
    inside = (test_i >= 0) & (test_i < height) & (test_j >= 0) & (test_j < width)
    test_i, test_j = test_i.clamp(0, height - 1), test_j.clamp(0, width - 1)
    counts = []
    for b in range(batch):  # one instance at a time bounds the (H, W, num_test, 3) temporaries
        test_mask = inside & mask[b][test_i, test_j]
        test_dist = (points[b][test_i, test_j, :] - points[b][..., None, :]).norm(dim=-1)
        counts.append(((test_dist <= radius_3d[b][..., None]) & test_mask).float().sum(dim=-1))
    weight = 1 / torch.stack(counts).clamp_min(1)
    weight = torch.where(mask, weight, 0)
    return weight / weight.sum(dim=(-2, -1), keepdim=True).add(1e-7)


def sample_patch_anchors(
    gt_points: torch.Tensor,
    gt_mask: torch.Tensor,
    focal: torch.Tensor,
    level: float,
    num_patches: int,
    generator: torch.Generator | None = None,
) -> tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw the patch anchors of :func:`affine_invariant_local_loss` (official RNG order: the two ``randint`` of
    :func:`anchor_sampling_weight`, then one ``multinomial``).

    ``radius_2d = ceil(0.5 / level * sqrt(H^2 + W^2))``; the per-pixel 3-D radius is ``0.5 / level / focal * g_z``;
    ``num_patches * B`` anchors are drawn with replacement among the valid pixels of the whole batch, with the
    (per-instance normalised) weights of :func:`anchor_sampling_weight`.

    Args:
        gt_points: ``(B, H, W, 3)`` ground truth with invalid pixels filled by finite values.
        gt_mask: ``(B, H, W)`` bool validity (at least one True).
        focal: ``(B,)`` focal length in units of the image diagonal.
        level: patch level (4, 16, 64 in the recipe).
        num_patches: anchors per instance.
        generator: torch RNG (None: global RNG).

    Returns:
        ``(radius_2d, batch_index, row, col)``, the last three ``(num_patches * B,)`` long tensors.
    """
    batch, height, width = gt_mask.shape
    radius_2d = math.ceil(0.5 / level * (height**2 + width**2) ** 0.5)
    radius_3d = 0.5 / level / focal[:, None, None] * gt_points[..., 2]
    weights = anchor_sampling_weight(
        gt_points, gt_mask, radius_2d, radius_3d, num_test=ANCHOR_NUM_TEST, generator=generator
    )
    where_mask = torch.where(gt_mask)
    selection = torch.multinomial(weights[where_mask], num_patches * batch, replacement=True, generator=generator)
    patch_b, anchor_i, anchor_j = (indices[selection] for indices in where_mask)
    return radius_2d, patch_b, anchor_i, anchor_j


def affine_invariant_local_loss(
    pred_points: torch.Tensor,
    gt_points: torch.Tensor,
    mask: torch.Tensor | None,
    focal: torch.Tensor | float,
    global_scale: torch.Tensor | float | None,
    level: float,
    align_resolution: int = 32,
    num_patches: int = 16,
    beta: float = 0.0,
    trunc: float = 1.0,
    sparsity_aware: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, Misc]:
    """Multi-scale local loss: random spherical patches, each aligned by its own scale + xyz shift.

    Patch sampling (torch RNG; pass ``generator`` for reproducibility, None uses the global RNG exactly like the
    official code):

    * ``radius_2d = ceil(0.5 / level * sqrt(H^2 + W^2))`` pixels; an anchor's 3-D radius is
      ``0.5 / level / focal * g_z`` (``focal`` normalised by the image diagonal, see
      :func:`~moge2_ros.geometry.intrinsics.gt_focal_from_intrinsics`);
    * ``num_patches`` anchors per instance are drawn (``torch.multinomial`` with replacement over all valid pixels
      of the batch) with the weights of :func:`anchor_sampling_weight`;
    * a patch is the ``(2 radius_2d + 1)^2`` pixel window around its anchor, restricted to valid pixels within the
      anchor's 3-D radius; patches with fewer than 32 such points are dropped.  If none is left the result is
      ``(zeros(...), {})``.

    Each patch is reduced to ``align_resolution^2`` (:func:`masked_nearest_resize`) and aligned with a scale and xyz
    shift (truncated L1, weight ``1 / radius_3d``).  With ``global_scale`` a patch is kept only if
    ``0.1 < s_local / s_global < 10`` and ``s_global > 0``, without it only if ``s_local > 0``.  The patch loss is
    ``mean(smooth_beta(|s p + t - g| / max(g_z, 0.1 * harmonic_mean(g_z))))`` over the patch window; an instance's
    loss is the sum over its patches divided by ``num_patches``.

    Args:
        pred_points: ``(..., H, W, 3)`` predicted affine-invariant point map.
        gt_points: ``(..., H, W, 3)`` ground truth, non-finite where invalid.
        mask: optional ``(..., H, W)`` bool combined with ``isfinite(gt_points)`` (None: official behaviour).
        focal: ``(...)`` or scalar ground-truth focal length in units of the image diagonal, i.e.
            ``1 / sqrt(1 / fx^2 + 1 / fy^2)`` of the uv-normalised intrinsics
            (:func:`~moge2_ros.geometry.intrinsics.gt_focal_from_intrinsics`).
        global_scale: ``(...)`` or scalar scale ``s*`` from :func:`affine_invariant_global_loss`, or None.
        level: 4, 16 or 64 in the official recipe (patch diameter = image diagonal / level).
        align_resolution: side of each patch's low-resolution copy.
        num_patches: anchors drawn per instance.
        beta, trunc, sparsity_aware: as in :func:`affine_invariant_global_loss`.
        generator: optional torch RNG on the points' device.

    Returns:
        ``(loss (...), misc)`` with ``misc = {"truncated_error", "delta"}`` (relative to each patch's 3-D radius,
        floats over all kept patches), or ``{}`` when no patch was kept.
    """
    name = "affine_invariant_local_loss"
    _check_point_pair(name, pred_points, gt_points)
    device, dtype = pred_points.device, pred_points.dtype
    *batch_shape, height, width, _ = pred_points.shape
    batch = math.prod(batch_shape)
    if not isinstance(level, (int, float)) or not math.isfinite(level) or level <= 0:
        raise LossError(f"{name}: expected a positive level (4, 16 or 64 in the recipe), found {level!r}")

    gt_mask = _valid_mask(name, gt_points, mask)
    gt_points = torch.where(gt_mask[..., None], gt_points, 1)
    pred = pred_points.reshape(batch, height, width, 3)
    gt = gt_points.reshape(batch, height, width, 3)
    gt_mask = gt_mask.reshape(batch, height, width)
    focal = _per_batch(f"{name}: focal", focal, batch, gt)
    if global_scale is not None:
        global_scale = _per_batch(f"{name}: global_scale", global_scale, batch, gt)

    def empty() -> tuple[torch.Tensor, Misc]:
        return torch.zeros(batch_shape, dtype=dtype, device=device), {}

    if not bool(gt_mask.any()):
        return empty()

    radius_2d, patch_b, anchor_i, anchor_j = sample_patch_anchors(gt, gt_mask, focal, level, num_patches, generator)

    # Patch windows (P, 2r + 1, 2r + 1).
    offsets = torch.arange(-radius_2d, radius_2d + 1, device=device)
    grid_i, grid_j = torch.meshgrid(offsets, offsets, indexing="ij")
    patch_i, patch_j = grid_i + anchor_i[:, None, None], grid_j + anchor_j[:, None, None]
    patch_mask = (patch_i >= 0) & (patch_i < height) & (patch_j >= 0) & (patch_j < width)
    patch_i, patch_j = patch_i.clamp(0, height - 1), patch_j.clamp(0, width - 1)

    gt_anchor = gt[patch_b, anchor_i, anchor_j]  # (P, 3)
    gt_radius_3d = 0.5 / level / focal[patch_b] * gt_anchor[:, 2]  # (P,)
    gt_patch = gt[patch_b[:, None, None], patch_i, patch_j]
    gt_dist = (gt_patch - gt_anchor[:, None, None, :]).norm(dim=-1)
    patch_mask &= gt_mask[patch_b[:, None, None], patch_i, patch_j]
    patch_mask &= gt_dist <= gt_radius_3d[:, None, None]

    keep = torch.where(patch_mask.sum(dim=(-2, -1)) >= MIN_POINTS_PER_PATCH)
    if keep[0].shape[0] == 0:
        return empty()
    patch_b, patch_i, patch_j = patch_b[keep], patch_i[keep], patch_j[keep]
    patch_mask, gt_patch, gt_radius_3d = patch_mask[keep], gt_patch[keep], gt_radius_3d[keep]
    pred_patch = pred[patch_b[:, None, None], patch_i, patch_j]

    # Per-patch robust alignment.
    pred_lr, gt_lr, lr_mask = masked_nearest_resize(
        pred_patch, gt_patch, mask=patch_mask, size=(align_resolution, align_resolution)
    )
    local_scale, local_shift = align_points_scale_xyz_shift(
        pred_lr.flatten(-3, -2), gt_lr.flatten(-3, -2), lr_mask.flatten(-2) / gt_radius_3d[:, None].add(1e-7),
        trunc=trunc,
    )
    if global_scale is not None:
        patch_global = global_scale[patch_b]
        ratio = local_scale / patch_global
        patch_valid = (ratio > 0.1) & (ratio < 10.0) & (patch_global > 0)
    else:
        patch_valid = local_scale > 0
    local_scale = torch.where(patch_valid, local_scale, 0)
    local_shift = torch.where(patch_valid[:, None], local_shift, 0)
    patch_mask &= patch_valid[:, None, None]
    aligned = local_scale[:, None, None, None] * pred_patch + local_shift[:, None, None, :]

    gt_mean = _harmonic_mean(gt[..., 2], gt_mask, dim=(-2, -1))  # (B,)
    patch_weight = patch_mask.float() / gt_patch[..., 2].clamp_min(0.1 * gt_mean[patch_b, None, None])
    loss = _smooth((aligned - gt_patch).abs() * patch_weight[..., None], beta=beta).mean(dim=(-3, -2, -1))
    if sparsity_aware:
        lr_fraction = lr_mask.float().mean(dim=(-2, -1))
        sparsity = patch_mask.float().mean(dim=(-2, -1)) / lr_fraction.clamp_min(torch.finfo(torch.float32).tiny)
        loss = loss / (sparsity + 1e-7)
    loss = torch.scatter_reduce(
        torch.zeros(batch, dtype=dtype, device=device), dim=0, index=patch_b, src=loss, reduce="sum"
    )
    loss = (loss / num_patches).reshape(batch_shape)

    err = (aligned.detach() - gt_patch).norm(dim=-1) / gt_radius_3d[..., None, None]
    misc = {
        "truncated_error": _weighted_mean(err.clamp_max(1), patch_mask).item(),
        "delta": _weighted_mean((err < 1).float(), patch_mask).item(),
    }
    return loss, misc


# ----------------------------------------------------------------------------------------------------------------
# edge / normal / mask / scale losses
# ----------------------------------------------------------------------------------------------------------------


def edge_loss(
    points: torch.Tensor, gt_points: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, Misc]:
    """Angle between predicted and ground-truth neighbour differences (the "normal" term of the MoGe-2 recipe).

    For the vertical differences ``p[i] - p[i+1]`` and the horizontal ones ``p[:, j] - p[:, j+1]`` (both pixels
    valid), the angle to the ground-truth difference is clamped to [0.1, 90] degrees and smoothed with beta = 3
    degrees; ``loss = (mean_vertical + mean_horizontal) / (2 max(H, W))`` (means over all difference positions).

    Args:
        points: ``(..., H, W, 3)`` predicted points; gt_points: ``(..., H, W, 3)``, non-finite where invalid.
        mask: optional ``(..., H, W)`` bool combined with ``isfinite(gt_points)``.

    Returns:
        ``(loss (...), {})`` (radians, divided by ``2 max(H, W)``).
    """
    _check_point_pair("edge_loss", points, gt_points)
    valid = _valid_mask("edge_loss", gt_points, mask)
    gt_points = torch.where(valid[..., None], gt_points, 1)
    d_rows = points[..., :-1, :, :] - points[..., 1:, :, :]
    d_cols = points[..., :, :-1, :] - points[..., :, 1:, :]
    gt_d_rows = gt_points[..., :-1, :, :] - gt_points[..., 1:, :, :]
    gt_d_cols = gt_points[..., :, :-1, :] - gt_points[..., :, 1:, :]
    mask_rows = valid[..., :-1, :] & valid[..., 1:, :]
    mask_cols = valid[..., :, :-1] & valid[..., :, 1:]
    lo, hi, beta = math.radians(0.1), math.radians(90), math.radians(3)
    loss_rows = mask_rows * _smooth(_angle_diff_vec3(d_rows, gt_d_rows).clamp(lo, hi), beta=beta)
    loss_cols = mask_cols * _smooth(_angle_diff_vec3(d_cols, gt_d_cols).clamp(lo, hi), beta=beta)
    loss = (loss_rows.mean(dim=(-2, -1)) + loss_cols.mean(dim=(-2, -1))) / (2 * max(points.shape[-3:-1]))
    return loss, {}


def normal_loss(
    points: torch.Tensor, gt_points: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, Misc]:
    """Angle between predicted and ground-truth triangle normals of every 2x2 pixel block (MoGe-1 normal loss).

    Each 2x2 block gives four corner cross products (the corner's two edges); where the corner's three pixels are
    valid, the angle to the ground-truth cross product is clamped to [1, 90] degrees and smoothed (beta = 3
    degrees).  The four terms are summed per block and the result is ``mean over everything / (4 max(H, W))``.

    Returns:
        ``(loss, {})`` with a **single 0-d** loss (the mean also runs over the batch, as in the official code).
    """
    _check_point_pair("normal_loss", points, gt_points)
    valid = _valid_mask("normal_loss", gt_points, mask)
    gt_points = torch.where(valid[..., None], gt_points, 1)

    def corner_normals(p: torch.Tensor) -> tuple[torch.Tensor, ...]:
        lu, ru, ld, rd = p[..., :-1, :-1, :], p[..., :-1, 1:, :], p[..., 1:, :-1, :], p[..., 1:, 1:, :]
        return (
            torch.cross(ru - rd, ld - rd, dim=-1),  # at the right-down corner
            torch.cross(lu - ru, rd - ru, dim=-1),  # at the right-up corner
            torch.cross(ld - lu, ru - lu, dim=-1),  # at the left-up corner
            torch.cross(rd - ld, lu - ld, dim=-1),  # at the left-down corner
        )

    m_lu, m_ru, m_ld, m_rd = valid[..., :-1, :-1], valid[..., :-1, 1:], valid[..., 1:, :-1], valid[..., 1:, 1:]
    corner_masks = (m_ru & m_ld & m_rd, m_lu & m_rd & m_ru, m_ld & m_ru & m_lu, m_rd & m_lu & m_ld)
    lo, hi, beta = math.radians(1), math.radians(90), math.radians(3)
    loss = None
    for n, gt_n, m in zip(corner_normals(points), corner_normals(gt_points), corner_masks):
        term = m * _smooth(_angle_diff_vec3(n, gt_n).clamp(lo, hi), beta=beta)
        loss = term if loss is None else loss + term
    return loss.mean() / (4 * max(points.shape[-3:-1])), {}


def normal_map_loss(
    pred_normal: torch.Tensor, gt_normal: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, Misc]:
    """Squared angle (radians^2) between predicted and ground-truth normal maps, averaged over ``(H, W)``
    (invalid pixels, i.e. non-finite ground truth or ``mask`` False, count as zero).

    Args:
        pred_normal, gt_normal: ``(..., H, W, 3)`` (need not be unit length).
        mask: optional ``(..., H, W)`` bool.

    Returns:
        ``(loss (...), {})``.
    """
    _check_point_pair("normal_map_loss", pred_normal, gt_normal)
    valid = _valid_mask("normal_map_loss", gt_normal, mask)
    gt_normal = torch.where(valid[..., None], gt_normal, 1)
    loss = (valid * angle_between(pred_normal, gt_normal).square()).mean(dim=(-2, -1))
    return loss, {}


def mask_bce_loss(
    pred_mask_prob: torch.Tensor, gt_mask_pos: torch.Tensor, gt_mask_neg: torch.Tensor
) -> tuple[torch.Tensor, Misc]:
    """Binary cross-entropy of the validity mask on labelled pixels.

    ``loss = mean_{H, W}((pos | neg) * BCE(prob, pos))`` with ``BCE(p, y) = -(y log p + (1 - y) log(1 - p))``
    (logs clamped at -100 as in ``F.binary_cross_entropy``); pixels that are neither positive (valid depth) nor
    negative (known infinite, e.g. sky) count as zero.

    Args:
        pred_mask_prob: ``(..., H, W)`` predicted probability in [0, 1].
        gt_mask_pos: ``(..., H, W)`` bool, finite ground truth; gt_mask_neg: ``(..., H, W)`` bool, infinite.

    Returns:
        ``(loss (...), {})``.
    """
    if not isinstance(pred_mask_prob, torch.Tensor) or pred_mask_prob.ndim < 2:
        raise LossError("mask_bce_loss: expected pred_mask_prob of shape (..., H, W)")
    for label, t in (("gt_mask_pos", gt_mask_pos), ("gt_mask_neg", gt_mask_neg)):
        if not isinstance(t, torch.Tensor) or t.shape != pred_mask_prob.shape:
            found = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise LossError(f"mask_bce_loss: expected {label} of shape {tuple(pred_mask_prob.shape)}, found {found}")
    pos, neg = gt_mask_pos.to(torch.bool), gt_mask_neg.to(torch.bool)
    bce = F.binary_cross_entropy(pred_mask_prob, pos.to(pred_mask_prob.dtype), reduction="none")
    return ((pos | neg) * bce).mean(dim=(-2, -1)), {}


def scale_loss_target(global_scale: torch.Tensor, is_metric: bool | torch.Tensor = True) -> torch.Tensor:
    """Target ``s*`` of the metric-scale loss with the stop-gradient made explicit.

    ``s*`` is the scale of the global alignment (:func:`affine_invariant_global_loss`) that maps the predicted
    affine-invariant points onto the metric ground truth.  It is **detached**: the metric-scale loss trains only the
    scale head and never pushes the point map.  Instances whose ground truth is not metric (``is_metric`` False)
    get target 0, which :func:`metric_scale_loss` ignores.

    Args:
        global_scale: ``(...)`` scale from the global loss.
        is_metric: bool or ``(...)`` bool tensor.

    Returns:
        ``(...)`` detached target (0 = no target).
    """
    target = global_scale.detach()
    is_metric = torch.as_tensor(is_metric, dtype=torch.bool, device=target.device)
    return torch.where(is_metric, target, torch.zeros((), dtype=target.dtype, device=target.device))


def metric_scale_loss(scale_pred: torch.Tensor, scale_gt: torch.Tensor) -> tuple[torch.Tensor, Misc]:
    """``(log scale_pred - log stopgrad(scale_gt))^2`` elementwise; 0 where ``scale_gt <= 0`` (no target).

    ``scale_gt`` is detached here as well (see :func:`scale_loss_target`), so no gradient can reach whatever
    produced it.

    Args:
        scale_pred: ``(...)`` positive predicted metric scale.
        scale_gt: ``(...)`` target scale (``<= 0``: ignored).

    Returns:
        ``(loss (...), {})``.
    """
    scale_gt = scale_gt.detach()
    valid = scale_gt > 0
    target = torch.where(valid, scale_gt.log(), 0)
    return torch.where(valid, F.mse_loss(scale_pred.log(), target, reduction="none"), 0), {}


# ----------------------------------------------------------------------------------------------------------------
# loss sets of the training recipe
# ----------------------------------------------------------------------------------------------------------------

LOSS_FUNCTIONS: Mapping[str, Callable[..., Any]] = {
    "affine_invariant_global_loss": affine_invariant_global_loss,
    "affine_invariant_local_loss": affine_invariant_local_loss,
    "edge_loss": edge_loss,
    "normal_loss": normal_loss,
    "normal_map_loss": normal_map_loss,
    "mask_bce_loss": mask_bce_loss,
    "metric_scale_loss": metric_scale_loss,
}

_TUNABLE = {
    "affine_invariant_global_loss": {"align_resolution", "beta", "trunc", "sparsity_aware"},
    "affine_invariant_local_loss": {"level", "align_resolution", "num_patches", "beta", "trunc", "sparsity_aware"},
}


@dataclass(frozen=True)
class LossTerm:
    """One weighted term of a loss set (one entry of the official ``"loss"`` config).

    Attributes:
        name: key used in logs, e.g. ``"patch_16"``.
        function: one of :data:`LOSS_FUNCTIONS`.
        weight: multiplier of the term in the total loss.
        params: keyword arguments of the function (only the point losses take any).
    """

    name: str
    function: str
    weight: float
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.function not in LOSS_FUNCTIONS:
            raise LossError(f"loss term {self.name!r}: unknown function {self.function!r}; "
                            f"expected one of {sorted(LOSS_FUNCTIONS)}")
        allowed = _TUNABLE.get(self.function, set())
        unknown = set(self.params) - allowed
        if unknown:
            raise LossError(f"loss term {self.name!r}: {self.function} takes no parameter(s) {sorted(unknown)}; "
                            f"allowed: {sorted(allowed)}")
        if self.function == "affine_invariant_local_loss" and "level" not in self.params:
            raise LossError(f"loss term {self.name!r}: affine_invariant_local_loss needs params['level']")
        if not math.isfinite(float(self.weight)) or float(self.weight) < 0:
            raise LossError(f"loss term {self.name!r}: expected a finite weight >= 0, found {self.weight!r}")
        object.__setattr__(self, "params", dict(self.params))


@dataclass(frozen=True)
class LossSet:
    """Ordered loss terms applied to the instances of one label type.

    Order matters: the global term must come before the local and metric-scale terms, which use its scale, and the
    local terms consume the RNG in order.
    """

    terms: tuple[LossTerm, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "terms", tuple(self.terms))
        names = [t.name for t in self.terms]
        if len(set(names)) != len(names):
            raise LossError(f"loss set: duplicate term names in {names}")
        functions = [t.function for t in self.terms]
        if functions.count("affine_invariant_global_loss") > 1:
            raise LossError("loss set: at most one affine_invariant_global_loss term")
        g = functions.index("affine_invariant_global_loss") if "affine_invariant_global_loss" in functions else None
        for i, f in enumerate(functions):
            if f == "metric_scale_loss" and (g is None or i < g):
                raise LossError("loss set: metric_scale_loss needs an affine_invariant_global_loss term before it "
                                "(its target is the global alignment scale)")
            if f == "affine_invariant_local_loss" and g is not None and i < g:
                raise LossError("loss set: affine_invariant_local_loss terms must come after the global term")

    @classmethod
    def from_dict(cls, config: Mapping[str, Mapping[str, Any]]) -> LossSet:
        """From the official JSON form ``{name: {"function": ..., "weight": ..., "params": {...}}}``."""
        try:
            return cls(tuple(
                LossTerm(name, spec["function"], float(spec.get("weight", 1.0)), dict(spec.get("params", {})))
                for name, spec in config.items()
            ))
        except (KeyError, TypeError, AttributeError) as exc:
            raise LossError(f"loss set: malformed config ({exc!r}); expected "
                            "{name: {'function': str, 'weight': float, 'params': dict}}") from None

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The official JSON form (inverse of :meth:`from_dict`)."""
        out: dict[str, dict[str, Any]] = {}
        for t in self.terms:
            entry: dict[str, Any] = {"function": t.function, "weight": t.weight}
            if t.params:
                entry["params"] = dict(t.params)
            out[t.name] = entry
        return out


def _term(name: str, function: str, weight: float, **params: Any) -> LossTerm:
    return LossTerm(name, function, weight, params)


_GLOBAL = _term("global", "affine_invariant_global_loss", 1.0, align_resolution=48)
_PATCH_4 = _term("patch_4", "affine_invariant_local_loss", 1.0, level=4, align_resolution=24, num_patches=16)
_PATCH_16 = _term("patch_16", "affine_invariant_local_loss", 1.0, level=16, align_resolution=12, num_patches=256)
_PATCH_64 = _term("patch_64", "affine_invariant_local_loss", 1.0, level=64, align_resolution=6, num_patches=4096)
_EDGE = _term("normal", "edge_loss", 1.0)  # the official key is "normal" although the function is edge_loss
_NORMAL_MAP = _term("normal_map", "normal_map_loss", 0.1)
_METRIC = _term("metric_scale", "metric_scale_loss", 0.1)
_MASK = _term("mask", "mask_bce_loss", 0.1)

OFFICIAL_LOSS_SETS: Mapping[str, LossSet] = {
    # Synthetic, dense and exact labels: every term, including the finest local level.
    "A": LossSet((_GLOBAL, _PATCH_4, _PATCH_16, _PATCH_64, _EDGE, _NORMAL_MAP, _METRIC, _MASK)),
    # Real SfM / MVS / RGB-D labels (refined): no level-64 patches.
    "B": LossSet((_GLOBAL, _PATCH_4, _PATCH_16, _METRIC, _EDGE, _NORMAL_MAP, _MASK)),
    # LiDAR, sparse labels: coarse geometry, scale and mask only.
    "C": LossSet((_GLOBAL, _PATCH_4, _METRIC, _MASK)),
    # Instances without usable labels contribute nothing.
    INVALID_LABEL: LossSet(()),
}
"""Loss sets of microsoft/MoGe ``configs/train/v2.json`` (``"loss"`` section), per label type, in config order."""

#: The keys of a loss-set mapping: every Sample label type, plus the training items without usable labels.
LOSS_SET_LABELS = (*LABEL_TYPES, INVALID_LABEL)


def loss_set_for_label(label_type: str, loss_sets: Mapping[str, LossSet] | None = None) -> LossSet:
    """The loss set of ``label_type`` (``"A"``, ``"B"``, ``"C"`` or ``"invalid"``) in ``loss_sets`` (default: the
    official recipe)."""
    sets = OFFICIAL_LOSS_SETS if loss_sets is None else loss_sets
    try:
        return sets[label_type]
    except KeyError:
        raise LossError(f"unknown label type {label_type!r}; expected one of {sorted(sets)}") from None


def compute_instance_losses(
    loss_set: LossSet,
    *,
    pred_points: torch.Tensor,
    gt_points: torch.Tensor,
    gt_focal: torch.Tensor | float | None = None,
    gt_mask: torch.Tensor | None = None,
    pred_mask: torch.Tensor | None = None,
    pred_normal: torch.Tensor | None = None,
    pred_metric_scale: torch.Tensor | None = None,
    gt_normal: torch.Tensor | None = None,
    gt_mask_pos: torch.Tensor | None = None,
    gt_mask_neg: torch.Tensor | None = None,
    is_metric: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, Misc]]:
    """Evaluate a loss set on one instance (or a batch of instances sharing a label type), as the official
    trainer does.

    * The global term's scale ``s*`` feeds the local terms (patch validity) and, through
      :func:`scale_loss_target`, the metric-scale term.
    * The metric-scale term is evaluated only when ``is_metric`` and ``pred_metric_scale`` is given; the mask and
      normal-map terms only when the model predicts a mask / normals (a model without that head skips them).

    Args:
        loss_set: the terms, e.g. :func:`loss_set_for_label` ``("A")``.
        pred_points: ``(..., H, W, 3)`` affine-invariant prediction; gt_points: ``(..., H, W, 3)``, inf invalid.
        gt_focal: ``(...)`` focal of :func:`~moge2_ros.geometry.intrinsics.gt_focal_from_intrinsics` (required by
            local terms).
        gt_mask: optional extra validity ``(..., H, W)`` for the point losses.
        pred_mask: ``(..., H, W)`` mask probability; gt_mask_pos / gt_mask_neg: ``(..., H, W)`` bool.
        pred_normal, gt_normal: ``(..., H, W, 3)``.
        pred_metric_scale: ``(...)`` positive scale prediction.
        is_metric: whether the ground truth is metric.
        generator: RNG of the local terms.

    Returns:
        ``(total, losses, misc)``: ``total = sum(weight * loss)`` (``(...)``), the unweighted losses by term name and
        the logged scalars by term name.
    """
    losses: dict[str, torch.Tensor] = {}
    misc: dict[str, Misc] = {}
    global_scale: torch.Tensor | None = None
    for term in loss_set.terms:
        f, p = term.function, term.params
        if f == "affine_invariant_global_loss":
            losses[term.name], misc[term.name], global_scale = affine_invariant_global_loss(
                pred_points, gt_points, gt_mask, **p
            )
        elif f == "affine_invariant_local_loss":
            if gt_focal is None:
                raise LossError(f"loss term {term.name!r}: affine_invariant_local_loss needs gt_focal")
            losses[term.name], misc[term.name] = affine_invariant_local_loss(
                pred_points, gt_points, gt_mask, gt_focal, global_scale, generator=generator, **p
            )
        elif f in ("edge_loss", "normal_loss"):
            losses[term.name], misc[term.name] = LOSS_FUNCTIONS[f](pred_points, gt_points, gt_mask)
        elif f == "normal_map_loss":
            if pred_normal is None:
                continue
            if gt_normal is None:
                raise LossError(f"loss term {term.name!r}: the model predicts normals but gt_normal is missing")
            losses[term.name], misc[term.name] = normal_map_loss(pred_normal, gt_normal)
        elif f == "mask_bce_loss":
            if pred_mask is None:
                continue
            if gt_mask_pos is None or gt_mask_neg is None:
                raise LossError(f"loss term {term.name!r}: mask_bce_loss needs gt_mask_pos and gt_mask_neg")
            losses[term.name], misc[term.name] = mask_bce_loss(pred_mask, gt_mask_pos, gt_mask_neg)
        elif f == "metric_scale_loss":
            if not is_metric or pred_metric_scale is None:
                continue
            assert global_scale is not None  # guaranteed by LossSet validation
            losses[term.name], misc[term.name] = metric_scale_loss(
                pred_metric_scale, scale_loss_target(global_scale, is_metric)
            )
    weights = {t.name: t.weight for t in loss_set.terms}
    total = torch.zeros((), dtype=pred_points.dtype, device=pred_points.device)
    for name, value in losses.items():
        total = total + weights[name] * value
    return total, losses, misc
