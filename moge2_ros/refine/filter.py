"""Mismatch filtering of real geometry labels against a synthetic-trained model's prediction.

For every neighbourhood ``S_j`` of the image (multi-scale spheres, as the local loss of the training code), the
real points ``p_i`` of ``S_j`` are aligned to the model's points ``p_hat_i`` with a per-neighbourhood scale and
shift, found by the exact truncated-L1 solver of the training code
(:func:`moge2_ros.geometry.alignment.align_points_scale_xyz_shift`):

    ``(s*_j, t*_j) = argmin sum_i min(1, |s p_i + t - p_hat_i|_1 / r_hat_j)``

and every member with ``|s*_j p_i + t*_j - p_hat_i| > threshold * r_hat_j`` gets a *flag vote*; each member gets
a *coverage vote*.  A real point is removed when, at some level, at least ``vote_fraction`` of that level's
neighbourhoods that contain it flagged it (votes are counted per level: fine levels see bleeding and
misregistration at edges, coarse levels see outlier blobs that fine neighbourhoods lie inside of).  Because each neighbourhood has its own scale and shift, a global (or slowly varying) scale error of
the model does not cause flags; what is flagged is local geometry that disagrees with the model: edge bleeding and
misregistration at depth discontinuities, outliers, multipath, reflections.

Neighbourhoods (per ``level`` L, as :func:`moge2_ros.train.losses.sample_patch_anchors`): pixel radius
``r_2d = ceil(0.5 / L * sqrt(H^2 + W^2))``, 3-D radius ``r_hat_j = 0.5 / L / focal * z_hat(anchor)`` (focal in
units of the image diagonal); the members are the pixels of the ``(2 r_2d + 1)^2`` window whose *predicted* point
lies within ``r_hat_j`` of the anchor's predicted point and that have valid real and predicted geometry.  Anchors
lie on a regular grid of stride ``stride_fraction * r_2d`` (with a random sub-stride offset), which covers every
pixel several times; the importance sampling of the training loss is built for stochastic training and is not
used here.  Each neighbourhood is reduced to at most ``align_points`` members drawn uniformly at random (a grid
subsampling would keep too few points of the thin spheres of surfaces seen at grazing angles) before the O(N^2)
alignment; the votes use all members.

Frames and units: OpenCV camera frame (x right, y down, z forward), metres; maps are ``(H, W)`` / ``(H, W, 3)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from moge2_ros.errors import GeometryError
from moge2_ros.geometry.alignment import align_points_scale_xyz_shift, align_points_scale_z_shift
from moge2_ros.geometry.resize import masked_nearest_resize

__all__ = ["FilterConfig", "FilterResult", "mismatch_filter"]


@dataclass(frozen=True)
class FilterConfig:
    """Parameters of :func:`mismatch_filter`.

    Attributes:
        levels: neighbourhood levels (diameter = image diagonal / level), coarse to fine.
        align_points: members used by each level's alignment (random subset; one value per level).
        threshold: a member is flagged when its aligned distance exceeds ``threshold * r_hat_j``; one value per
            level (coarse levels have large radii, so they use a smaller fraction of it).
        vote_fraction: a point is removed when ``flags >= vote_fraction * coverage`` (coverage > 0) at some
            level.
        min_points: neighbourhoods with fewer members are skipped (at most a third of the window, so that the
            finest level still works on small images).
        stride_fraction: anchor grid stride in units of the level's pixel radius.
        trunc: truncation of the alignment objective (in units of ``r_hat_j``).
        max_scale_ratio: a neighbourhood whose scale differs from the global scale by more than this factor (or is
            not positive) is treated as unreliable and casts no votes.
        seed: offset of the anchor grids.
        chunk_elements: bound on ``patches x window pixels`` processed at once (memory).
    """

    levels: tuple[float, ...] = (4.0, 16.0, 64.0)
    align_points: tuple[int, ...] = (32, 24, 16)
    threshold: tuple[float, ...] = (0.25, 0.5, 1.0)
    vote_fraction: float = 0.5
    min_points: int = 16
    stride_fraction: float = 1.0
    trunc: float = 0.5
    max_scale_ratio: float = 4.0
    seed: int = 0
    chunk_elements: int = 2**21

    def __post_init__(self) -> None:
        if not self.levels or any(not (math.isfinite(float(level)) and level > 0) for level in self.levels):
            raise GeometryError(f"filter config: levels must be positive numbers, found {self.levels!r}")
        if len(self.align_points) != len(self.levels) or any(int(a) < 2 for a in self.align_points):
            raise GeometryError(f"filter config: align_points needs one int >= 2 per level "
                                f"({len(self.levels)}), found {self.align_points!r}")
        if len(self.threshold) != len(self.levels) or any(
                not (math.isfinite(float(t)) and t > 0) for t in self.threshold):
            raise GeometryError(f"filter config: threshold needs one positive number per level "
                                f"({len(self.levels)}), found {self.threshold!r}")
        for name in ("stride_fraction", "trunc", "max_scale_ratio"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise GeometryError(f"filter config: {name} must be a positive number, found {value!r}")
        if not 0 < self.vote_fraction <= 1:
            raise GeometryError(f"filter config: vote_fraction must be in (0, 1], found {self.vote_fraction!r}")
        if self.max_scale_ratio < 1:
            raise GeometryError(f"filter config: max_scale_ratio must be >= 1, found {self.max_scale_ratio!r}")
        if int(self.min_points) < 2:
            raise GeometryError(f"filter config: min_points must be >= 2, found {self.min_points!r}")


@dataclass
class FilterResult:
    """Output of :func:`mismatch_filter` (tensors on the input device).

    Attributes:
        removed: ``(H, W)`` bool, real points flagged as mismatched.
        flags: ``(L, H, W)`` int32, flag votes per level and pixel.
        coverage: ``(L, H, W)`` int32, neighbourhoods (with a usable alignment) of each level containing the
            pixel.
        global_scale: the robust global scale of real -> predicted points (diagnostic; 0 if undefined).
        patches: number of neighbourhoods aligned, per level.
    """

    removed: torch.Tensor
    flags: torch.Tensor
    coverage: torch.Tensor
    global_scale: float
    patches: list[int] = field(default_factory=list)


def _check_inputs(real_points: torch.Tensor, real_valid: torch.Tensor, pred_points: torch.Tensor,
                  pred_valid: torch.Tensor) -> None:
    for name, t in (("real_points", real_points), ("pred_points", pred_points)):
        if not isinstance(t, torch.Tensor) or t.ndim != 3 or t.shape[-1] != 3 or not t.is_floating_point():
            found = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise GeometryError(f"mismatch_filter: expected {name} as a float tensor (H, W, 3), found {found}")
    if real_points.shape != pred_points.shape:
        raise GeometryError(f"mismatch_filter: real_points {tuple(real_points.shape)} and pred_points "
                            f"{tuple(pred_points.shape)} differ in shape")
    for name, t in (("real_valid", real_valid), ("pred_valid", pred_valid)):
        if not isinstance(t, torch.Tensor) or t.shape != real_points.shape[:2]:
            found = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise GeometryError(f"mismatch_filter: expected {name} of shape {tuple(real_points.shape[:2])}, "
                                f"found {found}")


def _global_scale(real: torch.Tensor, pred: torch.Tensor, both: torch.Tensor, size: int = 16) -> torch.Tensor:
    """Robust global scale + z-shift of real -> predicted points (weights 1 / z_hat), as the global loss does."""
    real_lr, pred_lr, lr_mask = masked_nearest_resize(real, pred, mask=both, size=(size, size))
    weight = lr_mask.flatten().to(real.dtype) / pred_lr[..., 2].flatten().clamp_min(1e-2)
    scale, _ = align_points_scale_z_shift(real_lr.reshape(-1, 3), pred_lr.reshape(-1, 3), weight, trunc=1.0)
    return scale


def _anchor_grid(height: int, width: int, stride: int, generator: torch.Generator, device: torch.device
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    off = torch.randint(0, stride, (2,), generator=generator)
    rows = torch.arange(int(off[0]), height, stride, device=device)
    cols = torch.arange(int(off[1]), width, stride, device=device)
    grid_i, grid_j = torch.meshgrid(rows, cols, indexing="ij")
    return grid_i.reshape(-1), grid_j.reshape(-1)


def mismatch_filter(
    real_points: torch.Tensor,
    real_valid: torch.Tensor,
    pred_points: torch.Tensor,
    pred_valid: torch.Tensor,
    focal: float,
    config: FilterConfig | None = None,
) -> FilterResult:
    """Flag real points whose local geometry disagrees with the model's (see the module docstring).

    Args:
        real_points: ``(H, W, 3)`` real label points (metres, camera frame); any value where ``real_valid`` False.
        real_valid: ``(H, W)`` bool.
        pred_points: ``(H, W, 3)`` model points of the same camera (any global scale); any value where invalid.
        pred_valid: ``(H, W)`` bool.
        focal: focal length in units of the image diagonal, ``f_px / sqrt(W^2 + H^2)`` for square pixels
            (:func:`moge2_ros.geometry.intrinsics.gt_focal_from_intrinsics` of the normalised intrinsics).
        config: :class:`FilterConfig` (default values when None).

    Returns:
        :class:`FilterResult`; ``removed`` is a subset of ``real_valid & pred_valid``.
    """
    config = config or FilterConfig()
    _check_inputs(real_points, real_valid, pred_points, pred_valid)
    if not (math.isfinite(float(focal)) and focal > 0):
        raise GeometryError(f"mismatch_filter: focal must be a positive number, found {focal!r}")
    device = real_points.device
    height, width = real_valid.shape
    real_valid = real_valid.to(torch.bool)
    pred_valid = pred_valid.to(torch.bool)
    both = real_valid & pred_valid & torch.isfinite(real_points).all(-1) & torch.isfinite(pred_points).all(-1)
    both &= pred_points[..., 2] > 0
    real = torch.where(both[..., None], real_points, 1).float()
    pred = torch.where(both[..., None], pred_points, 1).float()
    n_levels = len(config.levels)
    flags = torch.zeros(n_levels, height * width, dtype=torch.int32, device=device)
    coverage = torch.zeros(n_levels, height * width, dtype=torch.int32, device=device)
    patches: list[int] = []
    if int(both.sum()) < config.min_points:
        return FilterResult(both & False, flags.reshape(n_levels, height, width),
                            coverage.reshape(n_levels, height, width), 0.0, [0] * n_levels)
    global_scale = _global_scale(real, pred, both)
    generator = torch.Generator().manual_seed(int(config.seed))
    diagonal = math.hypot(height, width)

    for li, (level, n_align, threshold) in enumerate(zip(config.levels, config.align_points, config.threshold)):
        radius_2d = math.ceil(0.5 / level * diagonal)
        stride = max(1, round(config.stride_fraction * radius_2d))
        anchor_i, anchor_j = _anchor_grid(height, width, stride, generator, device)
        keep = both[anchor_i, anchor_j]
        anchor_i, anchor_j = anchor_i[keep], anchor_j[keep]
        offsets = torch.arange(-radius_2d, radius_2d + 1, device=device)
        window = (2 * radius_2d + 1) ** 2
        min_points = min(int(config.min_points), max(4, window // 3))
        chunk = max(1, config.chunk_elements // window)
        count = 0
        for start in range(0, anchor_i.numel(), chunk):
            a_i, a_j = anchor_i[start:start + chunk], anchor_j[start:start + chunk]
            p_i = offsets[None, :, None] + a_i[:, None, None]
            p_j = offsets[None, None, :] + a_j[:, None, None]
            member = (p_i >= 0) & (p_i < height) & (p_j >= 0) & (p_j < width)
            p_i, p_j = p_i.clamp(0, height - 1), p_j.clamp(0, width - 1)
            member &= both[p_i, p_j]
            pred_anchor = pred[a_i, a_j]  # (P, 3)
            radius_3d = 0.5 / level / focal * pred_anchor[:, 2]  # (P,)
            pred_patch = pred[p_i, p_j]  # (P, K, K, 3)
            member &= (pred_patch - pred_anchor[:, None, None]).norm(dim=-1) <= radius_3d[:, None, None]
            ok = member.sum(dim=(-2, -1)) >= min_points
            if not bool(ok.any()):
                continue
            member, p_i, p_j, pred_patch, radius_3d = member[ok], p_i[ok], p_j[ok], pred_patch[ok], radius_3d[ok]
            real_patch = real[p_i, p_j]
            # Random subset of at most n_align members per neighbourhood.
            keys = torch.rand(member.shape, generator=generator).to(device)
            keys = torch.where(member, keys, -1.0).flatten(1)
            n_take = min(int(n_align), keys.shape[1])
            top_keys, top = keys.topk(n_take, dim=1)
            sub = top[..., None].expand(-1, -1, 3)
            real_sub = real_patch.flatten(1, 2).gather(1, sub)
            pred_sub = pred_patch.flatten(1, 2).gather(1, sub)
            weight = (top_keys >= 0).to(real.dtype) / radius_3d[:, None]
            scale, shift = align_points_scale_xyz_shift(real_sub, pred_sub, weight, trunc=config.trunc)
            ratio = scale / global_scale if float(global_scale) > 0 else scale
            usable = (scale > 0) & (ratio < config.max_scale_ratio) & (ratio > 1 / config.max_scale_ratio)
            aligned = scale[:, None, None, None] * real_patch + shift[:, None, None, :]
            residual = (aligned - pred_patch).norm(dim=-1)
            member &= usable[:, None, None]
            flagged = member & (residual > threshold * radius_3d[:, None, None])
            flat = (p_i * width + p_j).reshape(-1)
            coverage[li].index_add_(0, flat, member.reshape(-1).to(torch.int32))
            flags[li].index_add_(0, flat, flagged.reshape(-1).to(torch.int32))
            count += int(usable.sum())
        patches.append(count)

    flags = flags.reshape(n_levels, height, width)
    coverage = coverage.reshape(n_levels, height, width)
    per_level = (coverage > 0) & (flags.float() >= config.vote_fraction * coverage.float())
    removed = both & per_level.any(dim=0)
    return FilterResult(removed, flags, coverage, float(global_scale), patches)
