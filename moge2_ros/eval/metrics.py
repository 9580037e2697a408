"""The official MoGe evaluation metrics (``moge/test/metrics.py`` semantics, see ``../shared/reference/NOTES.md`` §8).

Per-pixel error functions (each returns a Python float, computed in the input's dtype like the official
``.item()`` calls):

* :func:`rel_depth` - AbsRel ``mean(|p - g| / (g + 1e-6))``; :func:`delta1_depth` - ``mean(max(g/p, p/g) < 1.25)``;
* :func:`rel_point` - ``mean(|p - g| / (|g| + 1e-6))`` (Euclidean norms); :func:`delta1_point` -
  ``mean(|p - g| < 0.25 min(|g|, |p|))``; ``*_local`` variants divide by / compare with a given diameter;
* :func:`boundary_f1` - the depth-boundary sharpness F1 averaged over 10 relative-depth thresholds.

:func:`compute_metrics` evaluates one unbatched prediction against one ground truth with the official alignment
choices: scale-invariant, affine-invariant and metric (no alignment for depth, an xyz shift for points);
the robust L1 alignments run on a 64x64 mask-aware nearest-neighbour subsample with weights ``1 / gt depth``
(depth) or ``1 / |gt point|`` (points).  :func:`evaluate_geometry` builds its inputs from a
:class:`~moge2_ros.inference.result.Geometry` and a :class:`~moge2_ros.data.sample.Sample`.

Keys of the returned dict are flat ``"<group>/<metric>"`` strings, e.g. ``"depth_metric/rel"``,
``"points_scale_invariant/delta1"``, ``"boundary/radius1_f1"``, ``"fov_x/mae"`` (degrees): the official nested
dict ``{group: {metric: value}}`` joined with ``/``.  Use :func:`nest_metrics` for the nested form.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Collection, Iterable, Literal, Mapping, NamedTuple

import torch

from moge2_ros.errors import GeometryError
from moge2_ros.eval import METRIC_GROUPS
from moge2_ros.geometry.alignment import (
    align_affine_lstsq,
    align_depth_affine,
    align_depth_scale,
    align_points_scale,
    align_points_scale_xyz_shift,
    align_points_xyz_shift,
)
from moge2_ros.geometry.intrinsics import intrinsics_to_fov, pixel_to_normalized_intrinsics
from moge2_ros.geometry.projection import depth_to_points
from moge2_ros.geometry.resize import masked_nearest_resize

if TYPE_CHECKING:  # pragma: no cover
    from moge2_ros.data.sample import Sample
    from moge2_ros.inference.result import Geometry

__all__ = [
    "ALIGN_RESOLUTION",
    "METRIC_GROUPS",
    "BOUNDARY_RADII",
    "rel_depth",
    "delta1_depth",
    "rel_point",
    "delta1_point",
    "rel_point_local",
    "delta1_point_local",
    "boundary_f1",
    "compute_metrics",
    "evaluate_geometry",
    "gt_from_sample",
    "pred_from_geometry",
    "key_average",
    "nest_metrics",
]

#: Size of the mask-aware nearest subsample the alignments are solved on (official: 64 x 64).
ALIGN_RESOLUTION = (64, 64)
#: Radii of the boundary F1 (official: 1, 2, 3 pixels).
BOUNDARY_RADII = (1, 2, 3)
_NAN = float("nan")


# ------------------------------------------------------------------------------------------------ error functions


def rel_depth(pred: torch.Tensor, gt: torch.Tensor, eps: float = 1e-6) -> float:
    """AbsRel of depth: ``mean(|pred - gt| / (gt + eps))`` over ``(N,)`` (or any equal shapes) valid values."""
    return (torch.abs(pred - gt) / (gt + eps)).mean().item()


def delta1_depth(pred: torch.Tensor, gt: torch.Tensor, eps: float = 1e-6) -> float:
    """Share of values with ``max(gt / pred, pred / gt) < 1.25`` (``eps`` unused, as in the official code)."""
    return (torch.maximum(gt / pred, pred / gt) < 1.25).float().mean().item()


def rel_point(pred: torch.Tensor, gt: torch.Tensor, eps: float = 1e-6) -> float:
    """Relative point error ``mean(|pred - gt| / (|gt| + eps))`` of ``(..., 3)`` points (Euclidean norms)."""
    return (torch.linalg.vector_norm(pred - gt, dim=-1) / (torch.linalg.vector_norm(gt, dim=-1) + eps)).mean().item()


def delta1_point(pred: torch.Tensor, gt: torch.Tensor, eps: float = 1e-6) -> float:
    """Share of ``(..., 3)`` points with ``|pred - gt| < 0.25 min(|gt|, |pred|)`` (``eps`` unused)."""
    err = torch.linalg.vector_norm(pred - gt, dim=-1)
    bound = torch.minimum(torch.linalg.vector_norm(gt, dim=-1), torch.linalg.vector_norm(pred, dim=-1))
    return (err < 0.25 * bound).float().mean().item()


def rel_point_local(pred: torch.Tensor, gt: torch.Tensor, diameter: torch.Tensor | float) -> float:
    """``mean(|pred - gt| / diameter)`` of ``(..., 3)`` points (local, per-object version)."""
    return (torch.linalg.vector_norm(pred - gt, dim=-1) / diameter).mean().item()


def delta1_point_local(pred: torch.Tensor, gt: torch.Tensor, diameter: torch.Tensor | float) -> float:
    """Share of ``(..., 3)`` points with ``|pred - gt| < 0.25 diameter``."""
    return (torch.linalg.vector_norm(pred - gt, dim=-1) < 0.25 * diameter).float().mean().item()


def _windows(x: torch.Tensor, radius: int) -> torch.Tensor:
    """All ``(2r+1) x (2r+1)`` windows of an ``(H, W)`` map, no padding: ``(H-2r, W-2r, 2r+1, 2r+1)``."""
    size = 2 * radius + 1
    return x.unfold(0, size, 1).unfold(1, size, 1)


def boundary_f1(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, radius: int = 1) -> float:
    """Depth-boundary F1 of the official evaluation (sharpness of depth discontinuities).

    For every pixel whose full ``(2r+1)^2`` window lies inside the image (no padding), each neighbour within the
    disk ``dx^2 + dy^2 <= r^2 + 1e-5`` is labelled "boundary" when ``neighbour / centre > 1 + t`` (separately for
    prediction and ground truth); pairs count only where both pixels are valid.  For each of the 10 thresholds
    ``t = linspace(0.05, 0.25, 10)`` (float32 values), ``P = TP / #gt labels``, ``R = TP / #pred labels``,
    ``F1 = 2PR / (P + R)`` (denominators clamped at 1e-12); the result is the t-weighted mean of the F1s.

    Args:
        pred, gt: ``(H, W)`` depth maps (any positive scale: only ratios matter), ``H, W > 2r``.
        mask: ``(H, W)`` bool validity of the ground truth.
        radius: neighbourhood radius in pixels (>= 1).

    Returns:
        The weighted F1 in [0, 1] (0 when there is no boundary at all in either map).
    """
    if radius < 1 or int(radius) != radius:
        raise GeometryError(f"boundary_f1: radius must be a positive integer, found {radius!r}")
    if pred.ndim != 2 or pred.shape != gt.shape or mask.shape != pred.shape:
        raise GeometryError(
            f"boundary_f1: expected (H, W) pred, gt and mask of one shape, found {tuple(pred.shape)}, "
            f"{tuple(gt.shape)}, {tuple(mask.shape)}"
        )
    if min(pred.shape) <= 2 * radius:
        raise GeometryError(f"boundary_f1: a {tuple(pred.shape)} map is too small for radius {radius}")
    r = int(radius)
    offsets = torch.linspace(-r, r, 2 * r + 1, device=pred.device)
    dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
    disk = (dx**2 + dy**2) <= r**2 + 1e-5
    centre = (slice(r, -r), slice(r, -r), None, None)
    pred_rel = _windows(pred, r) / pred[centre]
    gt_rel = _windows(gt, r) / gt[centre]
    valid = mask[centre] & disk & _windows(mask, r)

    thresholds = torch.linspace(0.05, 0.25, 10).tolist()
    f1s = []
    for t in thresholds:
        pred_label = pred_rel > 1 + t
        gt_label = gt_rel > 1 + t
        tp = (pred_label & gt_label & valid).float().sum()
        precision = tp / (gt_label & valid).float().sum().clamp_min(1e-12)
        recall = tp / (pred_label & valid).float().sum().clamp_min(1e-12)
        f1s.append((2 * precision * recall / (precision + recall).clamp_min(1e-12)).item())
    return sum(w * f for w, f in zip(thresholds, f1s)) / sum(thresholds)


# ------------------------------------------------------------------------------------------------ compute_metrics


def _pair(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, point: bool) -> dict[str, float]:
    p, g = pred[mask], gt[mask]
    if p.shape[0] == 0:
        return {"rel": _NAN, "delta1": _NAN}
    if point:
        return {"rel": rel_point(p, g), "delta1": delta1_point(p, g)}
    return {"rel": rel_depth(p, g), "delta1": delta1_depth(p, g)}


def _first(pred: Mapping[str, torch.Tensor], *keys: str) -> torch.Tensor | None:
    for key in keys:
        if key in pred:
            return pred[key]
    return None


class _AlignedGroup(NamedTuple):
    """A metric group whose prediction is aligned to the gt by a robust solver on the low-resolution subsample."""

    sources: tuple[str, ...]  # prediction keys; the first one present is aligned
    solve: Callable[..., Any]  # ``solve(pred_lowres, gt_lowres, weight)`` of geometry.alignment
    fits: Literal["scale", "shift", "affine"]  # what ``solve`` returns (``affine``: ``(scale, shift)``)
    point: bool  # points (weights ``1 / |gt point|``) or depth (weights ``1 / gt depth``)


_ALIGNED_GROUPS: dict[str, _AlignedGroup] = {
    "depth_scale_invariant": _AlignedGroup(
        ("depth_scale_invariant", "depth_metric"), align_depth_scale, "scale", point=False),
    "depth_affine_invariant": _AlignedGroup(
        ("depth_affine_invariant", "depth_scale_invariant", "depth_metric"), align_depth_affine, "affine", point=False),
    "points_metric": _AlignedGroup(("points_metric",), align_points_xyz_shift, "shift", point=True),
    "points_scale_invariant": _AlignedGroup(
        ("points_scale_invariant", "points_metric"), align_points_scale, "scale", point=True),
    "points_affine_invariant": _AlignedGroup(
        ("points_affine_invariant", "points_scale_invariant", "points_metric"), align_points_scale_xyz_shift,
        "affine", point=True),
}


def _align_to_gt(
    group: _AlignedGroup, src: torch.Tensor, gt: torch.Tensor, lowres: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """``src`` (full resolution) aligned to ``gt`` by ``group.solve`` on the subsample ``lowres`` picks."""
    g = lowres(gt)
    solution = group.solve(lowres(src), g, 1 / g.norm(dim=-1) if group.point else 1 / g)
    if group.fits == "scale":
        return src * solution
    if group.fits == "shift":
        return src + solution
    scale, shift = solution
    return src * scale + shift


def _check_inputs(pred: Mapping[str, torch.Tensor], gt: Mapping[str, Any]) -> None:
    for key in ("depth", "depth_mask", "points"):
        if key not in gt:
            raise GeometryError(f"compute_metrics: ground truth has no '{key}' (keys: {sorted(gt)})")
    mask = gt["depth_mask"]
    if not isinstance(mask, torch.Tensor) or mask.ndim != 2 or mask.dtype != torch.bool:
        raise GeometryError(f"compute_metrics: gt 'depth_mask' must be an (H, W) bool tensor, found "
                            f"{getattr(mask, 'dtype', type(mask).__name__)} {tuple(getattr(mask, 'shape', ()))}")
    hw = tuple(mask.shape)
    named = [(key, value) for key, value in pred.items()] + [(f"gt {k}", gt[k]) for k in ("depth", "points")]
    if gt.get("intrinsics") is not None:
        named.append(("gt intrinsics", gt["intrinsics"]))
    for key, value in named:
        if not isinstance(value, torch.Tensor):
            raise GeometryError(f"compute_metrics: '{key}' must be a torch.Tensor, found {type(value).__name__}")
        if key.endswith("intrinsics"):
            want: tuple[int, ...] = (3, 3)
        elif "points" in key:
            want = hw + (3,)
        else:
            want = hw
        if tuple(value.shape) != want:
            raise GeometryError(f"compute_metrics: '{key}' must have shape {want}, found {tuple(value.shape)}")


def compute_metrics(
    pred: Mapping[str, torch.Tensor],
    gt: Mapping[str, Any],
    *,
    align_resolution: tuple[int, int] = ALIGN_RESOLUTION,
    skip: Collection[str] = (),
    return_aligned: bool = False,
) -> dict[str, float] | tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Official metrics of ONE unbatched prediction (``moge/test/metrics.py::compute_metrics`` semantics).

    Args:
        pred: any of ``depth_metric``, ``depth_scale_invariant``, ``depth_affine_invariant``,
            ``disparity_affine_invariant`` ``(H, W)``; ``points_metric``, ``points_scale_invariant``,
            ``points_affine_invariant`` ``(H, W, 3)`` (camera frame, OpenCV axes); ``intrinsics`` ``(3, 3)``
            NORMALISED.  MoGe-2 gives ``points_metric``, ``depth_metric``, ``intrinsics``.  Values outside the
            gt mask are never read except inside the boundary F1 windows (where they are masked out).
        gt: ``depth`` ``(H, W)`` (metres if metric; the official loader puts +inf outside the mask),
            ``depth_mask`` ``(H, W)`` bool, ``points`` ``(H, W, 3)``, optional ``intrinsics`` ``(3, 3)``
            normalised, ``is_metric`` (bool, default False), ``has_sharp_boundary`` (bool, default False).
        align_resolution: ``(h, w)`` of the subsample the robust alignments are solved on; the official value is
            64 x 64.  The affine-invariant solvers cost O(N^2 log N) in the N = h*w subsampled pixels (seconds on a
            CPU at 64 x 64), so a smaller value is a fast, non-official approximation.
        skip: metric groups not to compute (e.g. ``{"points_affine_invariant", "depth_affine_invariant"}``, the
            two slow ones).
        return_aligned: also return ``{"pred_depth": ...}`` - the depth map the boundary F1 used (metric if
            evaluated, otherwise the first aligned one), or ``{}``.

    Returns:
        Flat ``"<group>/<metric>"`` floats.  Groups (present when their inputs are):
        ``depth_metric`` (gt metric only), ``depth_scale_invariant``, ``depth_affine_invariant``,
        ``disparity_affine_invariant``, ``points_metric`` (gt metric only; an xyz shift is aligned, the scale is
        not), ``points_scale_invariant``, ``points_affine_invariant`` - each with ``rel`` and ``delta1``;
        ``fov_x/mae`` and ``fov_x/deviation`` (degrees, pred - gt) when both have intrinsics;
        ``boundary/radius{1,2,3}_f1`` when ``has_sharp_boundary``.  With no valid gt pixel in the 64x64
        alignment subsample the aligned groups are NaN (the official code would fail).
    """
    _check_inputs(pred, gt)
    mask: torch.Tensor = gt["depth_mask"]
    gt_depth: torch.Tensor = gt["depth"]
    gt_points: torch.Tensor = gt["points"]
    is_metric = bool(gt.get("is_metric", False))
    unknown = set(skip) - set(METRIC_GROUPS)
    if unknown:
        raise GeometryError(f"compute_metrics: unknown metric groups to skip {sorted(unknown)} "
                            f"(known: {list(METRIC_GROUPS)})")
    lr_mask, lr_index = masked_nearest_resize(mask=mask, size=align_resolution, return_index=True)
    can_align = bool(lr_mask.any())
    groups: dict[str, dict[str, float]] = {}
    aligned_depth: torch.Tensor | None = None

    def lowres(x: torch.Tensor) -> torch.Tensor:
        return x[lr_index][lr_mask]

    def aligned(name: str) -> torch.Tensor | None:
        """Group ``name`` of ``_ALIGNED_GROUPS`` into ``groups``; its aligned prediction, or None if not evaluated."""
        group = _ALIGNED_GROUPS[name]
        src = _first(pred, *group.sources)
        if src is None or name in skip:
            return None
        if not can_align:
            groups[name] = {"rel": _NAN, "delta1": _NAN}
            return None
        gt_full = gt_points if group.point else gt_depth
        result = _align_to_gt(group, src, gt_full, lowres)
        groups[name] = _pair(result, gt_full, mask, point=group.point)
        return result

    # --- depth
    if "depth_metric" in pred and is_metric and "depth_metric" not in skip:
        groups["depth_metric"] = _pair(pred["depth_metric"], gt_depth, mask, point=False)
        aligned_depth = pred["depth_metric"]

    for name in ("depth_scale_invariant", "depth_affine_invariant"):
        depth = aligned(name)
        aligned_depth = depth if aligned_depth is None else aligned_depth

    if "disparity_affine_invariant" in pred:
        disparity = pred["disparity_affine_invariant"]
    else:
        src = _first(pred, "depth_scale_invariant", "depth_metric")
        disparity = None if src is None else 1 / src
    if disparity is not None and "disparity_affine_invariant" not in skip:
        if bool(mask.any()):
            scale, shift = align_affine_lstsq(disparity[mask], 1 / gt_depth[mask])
            disparity = disparity * scale + shift
            # Disparities near 0 would explode: clamp at the smallest gt disparity (official choice).
            depth = 1 / disparity.clamp_min(1 / gt_depth[mask].max().item())
            groups["disparity_affine_invariant"] = _pair(depth, gt_depth, mask, point=False)
            aligned_depth = 1 / disparity.clamp_min(1e-6) if aligned_depth is None else aligned_depth
        else:
            groups["disparity_affine_invariant"] = {"rel": _NAN, "delta1": _NAN}

    # --- points (metric: an xyz shift is aligned, the scale is not)
    if is_metric:
        aligned("points_metric")
    aligned("points_scale_invariant")
    aligned("points_affine_invariant")

    # --- field of view (the official code reports only the horizontal one)
    if "intrinsics" in pred and gt.get("intrinsics") is not None and "fov_x" not in skip:
        pred_fov_x, _ = intrinsics_to_fov(pred["intrinsics"])
        gt_fov_x, _ = intrinsics_to_fov(gt["intrinsics"].to(pred["intrinsics"]))
        deviation = torch.rad2deg(pred_fov_x - gt_fov_x)
        groups["fov_x"] = {"mae": deviation.abs().mean().item(), "deviation": deviation.item()}

    # --- sharpness
    if aligned_depth is not None and bool(gt.get("has_sharp_boundary", False)) and "boundary" not in skip:
        groups["boundary"] = {
            f"radius{r}_f1": boundary_f1(aligned_depth, gt_depth, mask, radius=r) for r in BOUNDARY_RADII
        }

    flat = {f"{group}/{name}": value for group, values in groups.items() for name, value in values.items()}
    if return_aligned:
        return flat, ({} if aligned_depth is None else {"pred_depth": aligned_depth})
    return flat


# ------------------------------------------------------------------------------------------------ Geometry / Sample


def gt_from_sample(sample: "Sample", has_sharp_boundary: bool | None = None,
                   device: torch.device | str = "cpu") -> dict[str, Any]:
    """The ``gt`` dict of :func:`compute_metrics` from a :class:`Sample`.

    ``depth`` float32 metres (+inf where unknown, as the official loader), ``depth_mask`` (finite positive
    depth), ``points`` (back-projected with the sample's intrinsics through pixel centres; +inf where unknown),
    ``intrinsics`` NORMALISED, ``is_metric``, ``has_sharp_boundary`` (argument, else
    ``sample.meta["has_sharp_boundary"]``, else False).
    """
    import numpy as np

    valid = sample.valid()
    depth = torch.from_numpy(np.where(valid, sample.depth, np.float32(np.inf)).astype(np.float32)).to(device)
    k_px = torch.as_tensor(np.asarray(sample.intrinsics, dtype=np.float64), device=device)
    k_norm = pixel_to_normalized_intrinsics(k_px, sample.width, sample.height).to(torch.float32)
    mask = torch.from_numpy(valid).to(device)
    points = depth_to_points(torch.where(mask, depth, 1.0), k_norm)
    points = torch.where(mask[..., None], points, torch.inf)
    if has_sharp_boundary is None:
        has_sharp_boundary = bool(sample.meta.get("has_sharp_boundary", False))
    return {
        "depth": depth,
        "depth_mask": mask,
        "points": points,
        "intrinsics": k_norm,
        "is_metric": bool(sample.is_metric),
        "has_sharp_boundary": bool(has_sharp_boundary),
    }


def pred_from_geometry(pred: "Geometry", index: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``(pred dict, valid mask)`` of :func:`compute_metrics` for image ``index`` of a :class:`Geometry` batch:
    ``points_metric`` ``(H, W, 3)``, ``depth_metric`` ``(H, W)`` (metres), ``intrinsics`` normalised ``(3, 3)``,
    and the ``(H, W)`` bool mask of pixels with a valid (finite, positive) prediction."""
    if not 0 <= index < pred.batch_size:
        raise GeometryError(f"pred_from_geometry: index {index} outside a batch of {pred.batch_size}")
    depth = pred.depth[index].float()
    points = pred.points[index].float()
    height, width = depth.shape
    k_norm = pixel_to_normalized_intrinsics(pred.intrinsics[index].float(), width, height)
    valid = pred.mask[index].bool() & torch.isfinite(depth) & (depth > 0) & torch.isfinite(points).all(dim=-1)
    return {"points_metric": points, "depth_metric": depth, "intrinsics": k_norm}, valid


def evaluate_geometry(
    pred: "Geometry",
    sample: "Sample",
    *,
    has_sharp_boundary: bool | None = None,
    index: int = 0,
    align_resolution: tuple[int, int] = ALIGN_RESOLUTION,
    skip: Collection[str] = (),
) -> dict[str, float]:
    """Official metrics of a :class:`Predictor` result against a :class:`Sample` (see :func:`compute_metrics`).

    Difference to the official evaluation: the official MoGe baseline runs ``infer(apply_mask=False)`` so every
    pixel has a prediction; a :class:`Geometry` is NaN where the model's mask (or a filter) rejects a pixel, so
    the metrics are taken over the ground-truth pixels that ALSO have a valid prediction, and ``coverage`` (the
    share of valid gt pixels with a prediction, in [0, 1]) is reported next to them.

    Args:
        pred: a batch; image ``index`` is evaluated; it must have the sample's size.
        sample: ground truth (metric depth, pixel intrinsics).
        has_sharp_boundary: compute the boundary F1 (default: ``sample.meta.get("has_sharp_boundary")``).
        align_resolution, skip: see :func:`compute_metrics`.

    Returns:
        Flat metrics (``"depth_metric/rel"``, ...) plus ``"coverage"``.
    """
    pred_dict, pred_valid = pred_from_geometry(pred, index)
    if tuple(pred_dict["depth_metric"].shape) != (sample.height, sample.width):
        raise GeometryError(
            f"evaluate_geometry: prediction is {tuple(pred_dict['depth_metric'].shape)[::-1]} (W, H) but the sample "
            f"{sample.source or ''} is {(sample.width, sample.height)}"
        )
    device = pred_dict["depth_metric"].device
    gt = gt_from_sample(sample, has_sharp_boundary, device=device)
    gt_valid = gt["depth_mask"]
    gt["depth_mask"] = gt_valid & pred_valid
    n_gt = int(gt_valid.sum())
    metrics = compute_metrics(pred_dict, gt, align_resolution=align_resolution, skip=skip)
    assert isinstance(metrics, dict)
    metrics["coverage"] = (int(gt["depth_mask"].sum()) / n_gt) if n_gt else _NAN
    return metrics


# ------------------------------------------------------------------------------------------------ aggregation


def key_average(records: Iterable[Mapping[str, float | None]]) -> dict[str, float]:
    """Mean of every key over ``records``, ignoring missing, None and NaN values (official ``key_average``
    semantics, on flat dicts); keys sorted; NaN where no record has a value."""
    records = list(records)
    keys = sorted({k for r in records for k in r})
    out: dict[str, float] = {}
    for key in keys:
        values = [float(v) for r in records if (v := r.get(key)) is not None and not math.isnan(float(v))]
        out[key] = sum(values) / len(values) if values else _NAN
    return out


def nest_metrics(flat: Mapping[str, float]) -> dict[str, Any]:
    """``{"a/b": v}`` -> ``{"a": {"b": v}}`` (the official nested form); keys without ``/`` stay top-level."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split("/")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out
