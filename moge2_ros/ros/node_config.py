"""The node's parameters (a ``{name: value}`` dict, :func:`moge2_ros.ros.params.declare_all`) turned into the
typed settings of the layers below: :class:`PredictorOptions` (the model), :class:`FrameConfig` (one camera's
frames) and the predictor's run-time budget and filters.  ROS-free apart from the names: plain dicts in, plain
objects out.
"""

from __future__ import annotations

import math
from typing import Any

from ..anchors import AnchorConfig, FitOptions
from ..inference.factory import PredictorOptions
from ..pipeline.frame import FrameConfig

__all__ = ["anchor_config", "apply_dynamic", "depth_range", "frame_config", "predictor_options"]


def depth_range(cfg: dict[str, Any]) -> tuple[float, float] | None:
    """``(min, max)`` metres kept from min_depth / max_depth (0 = no limit), None when both are off."""
    lo, hi = cfg["min_depth"], cfg["max_depth"]
    return (lo, hi if hi > 0 else math.inf) if (lo > 0 or hi > 0) else None


def predictor_options(cfg: dict[str, Any]) -> PredictorOptions:
    """The :class:`PredictorOptions` of the node's parameters (the ONNX file only counts for backend onnx)."""
    onnx = cfg["backend"] == "onnx"
    return PredictorOptions(
        model=cfg["model"] or None, device=cfg["device"], precision=cfg["precision"],
        resolution_level=cfg["resolution_level"], num_tokens=cfg["num_tokens"] or None,
        edge_rtol=cfg["edge_rtol"] or None, depth_range=depth_range(cfg), max_pixels=cfg["max_pixels"] or None,
        memory_budget_mb=cfg["memory_budget_mb"] or None,
        backend=cfg["backend"], onnx_path=(cfg["onnx_path"] or None) if onnx else None,
        onnx_providers=tuple(cfg["onnx_providers"]), onnx_cache_dir=cfg["onnx_cache_dir"] or None,
        compile=cfg["compile"], cuda_graphs=cfg["cuda_graphs"], channels_last=cfg["channels_last"],
        pinned_memory=cfg["pinned_memory"],
    )


def frame_config(cfg: dict[str, Any]) -> FrameConfig:
    """The :class:`FrameConfig` of the node's parameters (raises InputError for values it refuses)."""
    fixed = cfg["fixed_intrinsics"]
    return FrameConfig(
        intrinsics_source=cfg["intrinsics_source"],
        fixed_intrinsics=tuple(fixed) if cfg["intrinsics_source"] == "fixed" else None,
        intrinsics_stabilization=cfg["intrinsics_stabilization"], intrinsics_window=cfg["intrinsics_window"],
        scale_smoothing=cfg["scale_smoothing"], depth_encoding=cfg["depth_encoding"],
        invalid_depth=cfg["invalid_depth"], cloud_organized=cfg["cloud_organized"],
        cloud_stride=cfg["cloud_stride"], cloud_rgb=cfg["cloud_rgb"], cloud_normals=cfg["cloud_normals"],
        rectify=cfg["rectify"], output_grid=cfg["output_grid"], rectified_fov_deg=cfg["rectified_fov_deg"],
        rectified_size=tuple(int(v) for v in cfg["rectified_size"]),  # type: ignore[arg-type]
        fixed_distortion=tuple(float(v) for v in cfg["fixed_distortion"]) if cfg["intrinsics_source"] == "fixed"
        else (),
        fixed_distortion_model=cfg["fixed_distortion_model"],
        anchors=anchor_config(cfg),
        camera_height_m=cfg["camera_height"] if cfg["anchor_mode"] != "off" else 0.0,
        camera_up=tuple(float(v) for v in cfg["camera_up"]),  # type: ignore[arg-type]
    )


def anchor_config(cfg: dict[str, Any]) -> AnchorConfig | None:
    """The :class:`AnchorConfig` of the node's anchor parameters, None when ``anchor_mode`` is off."""
    if cfg["anchor_mode"] == "off":
        return None
    threshold = cfg["anchor_inlier_threshold"]
    return AnchorConfig(mode=cfg["anchor_mode"], max_age_s=cfg["anchor_max_age"], temporal=cfg["anchor_temporal"],
                        fit=FitOptions(trunc=threshold, inlier_threshold=threshold))


def apply_dynamic(predictor: Any, cfg: dict[str, Any]) -> None:
    """Apply the run-time adjustable parameters of ``cfg`` (a camera's) to the shared predictor before that
    camera's frame: the token budget as :meth:`Predictor.budget_for` resolves it (a static ONNX export keeps its
    own), the edge filter, the depth range and the image limit."""
    predictor.num_tokens = predictor.budget_for(cfg["num_tokens"] or None, cfg["resolution_level"])
    predictor.edge_rtol = cfg["edge_rtol"] or None
    predictor.depth_range = depth_range(cfg)
    predictor.max_pixels = cfg["max_pixels"] or None
