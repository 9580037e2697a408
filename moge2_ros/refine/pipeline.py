"""Refinement of one real label: mismatch filtering, then log-depth Poisson completion.

:func:`refine_depth` works on plain arrays (real depth, the model's points in the same camera, pixel intrinsics);
:func:`refine_sample` applies it to a :class:`moge2_ros.data.sample.Sample` and sets ``provenance``
(:data:`moge2_ros.data.sample.PROVENANCE`):

* ``kept`` (1): real depth that passed the filter (unchanged);
* ``filtered`` (2): real depth removed by the filter and not refilled (no anchored region / no prediction);
* ``filled`` (3): depth computed by the completion (removed pixels and pixels that had no real depth);
* ``missing`` (0): no depth.

:func:`predict_points` runs a :class:`moge2_ros.inference.Predictor` with the label's own intrinsics, so the
model's points live in the real camera (only the depth shift is solved; the metric scale does not matter, the
filter and the completion are scale-invariant).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from moge2_ros.data.sample import PROVENANCE, Sample, validate_sample
from moge2_ros.errors import GeometryError
from moge2_ros.geometry.intrinsics import gt_focal_from_intrinsics, pixel_to_normalized_intrinsics
from moge2_ros.geometry.projection import depth_to_points
from moge2_ros.refine.filter import FilterConfig, mismatch_filter
from moge2_ros.refine.poisson import Solver, solve_log_depth_poisson

if TYPE_CHECKING:  # pragma: no cover
    from moge2_ros.inference import Predictor

__all__ = ["RefineConfig", "RefineOutput", "refine_depth", "refine_sample", "predict_points"]


@dataclass(frozen=True)
class RefineConfig:
    """Parameters of the refinement.

    Attributes:
        filter: mismatch filter parameters.
        filter_enabled: run the mismatch filter (False: only complete the holes).
        fill: run the Poisson completion (False: only filter).
        fill_missing: also fill pixels that had no real depth (False: only the filtered ones).
        solver: Poisson solver, ``"auto"``, ``"scipy"`` or ``"torch"``.
    """

    filter: FilterConfig = field(default_factory=FilterConfig)
    filter_enabled: bool = True
    fill: bool = True
    fill_missing: bool = True
    solver: Solver = "auto"


@dataclass
class RefineOutput:
    """Result of :func:`refine_depth`.

    Attributes:
        depth: ``(H, W)`` float32 refined depth in metres, NaN where no label.
        provenance: ``(H, W)`` uint8 codes of :data:`moge2_ros.data.sample.PROVENANCE`.
        stats: per-frame numbers: ``valid_real`` (pixels with real depth), ``filtered_percent`` (of them),
            ``filled_percent`` (of all pixels), ``kept_percent`` (of all pixels), ``unanchored`` (pixels that
            could not be filled), ``global_scale`` (robust real -> model scale), ``solver``, ``filter_s``,
            ``fill_s`` (seconds).
    """

    depth: np.ndarray
    provenance: np.ndarray
    stats: dict[str, Any]


def _to_tensor(name: str, value: np.ndarray | torch.Tensor, shape: tuple[int, ...], device: torch.device
               ) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
    if tuple(t.shape) != shape:
        raise GeometryError(f"refine: expected {name} of shape {shape}, found {tuple(t.shape)}")
    return t.to(device=device, dtype=torch.float32)


def refine_depth(
    depth: np.ndarray | torch.Tensor,
    pred_points: np.ndarray | torch.Tensor,
    intrinsics: np.ndarray | torch.Tensor,
    config: RefineConfig | None = None,
    device: torch.device | str | None = None,
) -> RefineOutput:
    """Filter and complete one real depth label with a model's prediction.

    Args:
        depth: ``(H, W)`` real depth in metres, NaN (or <= 0) where unknown.
        pred_points: ``(H, W, 3)`` model points in the SAME camera (pixel grid and intrinsics), OpenCV frame,
            NaN where the model has no valid prediction; any global scale.
        intrinsics: ``(3, 3)`` pixel intrinsics of the label (ROS ``CameraInfo.K``).
        config: :class:`RefineConfig` (defaults when None).
        device: where to compute ('cpu', 'cuda'; default CPU).

    Returns:
        :class:`RefineOutput` (numpy arrays on the host).
    """
    config = config or RefineConfig()
    device = torch.device(device or "cpu")
    depth_t = torch.as_tensor(np.asarray(depth) if not isinstance(depth, torch.Tensor) else depth)
    if depth_t.ndim != 2 or min(depth_t.shape) < 2:
        raise GeometryError(f"refine: expected depth of shape (H, W), found {tuple(depth_t.shape)}")
    height, width = (int(s) for s in depth_t.shape)
    depth_t = depth_t.to(device=device, dtype=torch.float32)
    pred = _to_tensor("pred_points", pred_points, (height, width, 3), device)
    k_px = _to_tensor("intrinsics", intrinsics, (3, 3), device)
    if not bool(torch.isfinite(k_px).all()) or not (k_px[0, 0] > 0 and k_px[1, 1] > 0):
        raise GeometryError(f"refine: expected finite pixel intrinsics with fx, fy > 0, found {k_px.tolist()}")
    k_norm = pixel_to_normalized_intrinsics(k_px, width, height)
    focal = float(gt_focal_from_intrinsics(k_norm))

    real_valid = torch.isfinite(depth_t) & (depth_t > 0)
    pred_valid = torch.isfinite(pred).all(-1) & (pred[..., 2] > 0)
    real_points = depth_to_points(torch.where(real_valid, depth_t, 1.0), k_norm)

    start = time.perf_counter()
    if config.filter_enabled:
        result = mismatch_filter(real_points, real_valid, pred, pred_valid, focal, config.filter)
        removed, global_scale = result.removed, result.global_scale
    else:
        removed, global_scale = torch.zeros_like(real_valid), float("nan")
    filter_s = time.perf_counter() - start

    start = time.perf_counter()
    kept = real_valid & ~removed
    filled = torch.zeros_like(real_valid)
    unanchored = 0
    out = torch.where(kept, depth_t, torch.nan)
    solver_used = "none"
    if config.fill:
        unknown = removed | (~real_valid if config.fill_missing else torch.zeros_like(real_valid))
        guide = torch.where(pred_valid, pred[..., 2], torch.nan)
        solve = solve_log_depth_poisson(torch.where(kept, depth_t, torch.nan), guide, unknown, solver=config.solver)
        filled = solve.filled
        out = torch.where(filled, solve.depth.to(device), out)
        unanchored = int(solve.unanchored.sum())
        solver_used = solve.solver
    fill_s = time.perf_counter() - start

    provenance = torch.full((height, width), PROVENANCE["missing"], dtype=torch.uint8, device=device)
    provenance[removed] = PROVENANCE["filtered"]
    provenance[kept] = PROVENANCE["kept"]
    provenance[filled] = PROVENANCE["filled"]
    n_valid = int(real_valid.sum())
    n_pixels = height * width
    stats = {
        "valid_real": n_valid,
        "filtered_percent": 100.0 * int(removed.sum()) / max(1, n_valid),
        "filled_percent": 100.0 * int(filled.sum()) / n_pixels,
        "kept_percent": 100.0 * int(kept.sum()) / n_pixels,
        "unanchored": unanchored,
        "global_scale": global_scale,
        "solver": solver_used,
        "filter_s": filter_s,
        "fill_s": fill_s,
    }
    return RefineOutput(out.cpu().numpy().astype(np.float32), provenance.cpu().numpy(), stats)


def refine_sample(
    sample: Sample,
    pred_points: np.ndarray | torch.Tensor,
    config: RefineConfig | None = None,
    device: torch.device | str | None = None,
) -> Sample:
    """:func:`refine_depth` on a :class:`Sample`: a new sample with the refined ``depth``, its ``provenance``
    and ``meta["refine"]`` (the per-frame stats).  Normals of the input (if any) are dropped (they no longer match
    the filled depth); image, intrinsics, sky, label type and metric flag are kept.

    Args:
        sample: a validated real label (``label_type`` "B" or "C" typically).
        pred_points: ``(H, W, 3)`` model points in the sample's camera (see :func:`predict_points`).
        config, device: as :func:`refine_depth`.
    """
    validate_sample(sample)
    try:
        out = refine_depth(sample.depth, pred_points, sample.intrinsics, config, device)
    except GeometryError as exc:
        raise GeometryError(f"{sample.source or 'sample'}: {exc}") from None
    meta = dict(sample.meta)
    meta["refine"] = out.stats
    return sample.replace(depth=out.depth, provenance=out.provenance, normal=None, meta=meta)


def predict_points(predictor: "Predictor", sample: Sample) -> np.ndarray:
    """The model's metric points of ``sample.image`` in the sample's camera: ``(H, W, 3)`` float32, NaN where the
    model's mask is False.  The label's pixel intrinsics are given to the predictor as known intrinsics."""
    geometry = predictor.predict(sample.image, intrinsics=sample.intrinsics)
    return geometry.points[0].detach().cpu().numpy().astype(np.float32)
