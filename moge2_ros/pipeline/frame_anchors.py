"""Metric anchoring inside the frame pipeline (:mod:`moge2_ros.pipeline.frame`): how a configuration change keeps
or restarts the anchoring, the geometry message's scale fields, and anchors given in the raw camera's optical frame
moved into a rectified camera's frame.  ROS-free."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from moge2_ros.anchors import (
    Anchor,
    AnchorConfig,
    CameraHeightAnchor,
    DepthImageAnchor,
    Extrinsic,
    PointCloudAnchor,
    RangeAnchor,
    ScaleAnchoring,
    ScaleDecision,
)
from moge2_ros.errors import InputError
from moge2_ros.pipeline.rectify import Rectifier

__all__ = ["depth_as_points", "follow_anchor_config", "in_rectified_frame", "scale_fields"]


def follow_anchor_config(anchoring: ScaleAnchoring | None, config: AnchorConfig | None) -> ScaleAnchoring | None:
    """The anchoring for a new configuration: None when off; the running one (its filters kept) when only thresholds
    change; a new one when it was off or its mode or filter parameters change."""
    if config is None:
        return None
    old = anchoring.config if anchoring is not None else None
    if anchoring is None or old is None or (old.mode, old.kalman, old.temporal) != \
            (config.mode, config.kalman, config.temporal):
        return ScaleAnchoring(config)
    anchoring.config = config
    return anchoring


def scale_fields(decision: ScaleDecision | None, network_scale: float) -> dict[str, Any]:
    """The MonocularGeometry scale fields of a frame (the network's own scale when anchoring is off)."""
    if decision is None:
        return {"scale_source": "network", "network_scale": network_scale}
    return {"scale_source": decision.source, "network_scale": decision.network_scale,
            "scale_log_std": decision.log_std, "anchor_count": decision.anchor_count,
            "anchor_inliers": decision.inliers, "anchor_residual_m": decision.residual_m}


def in_rectified_frame(anchors: Sequence[Anchor], rectifier: Rectifier) -> list[Anchor]:
    """Anchors given in the raw camera's optical frame moved into the rectified camera's (``p_rect = R p_raw``): the
    extrinsics of clouds and range cones composed with R, the up direction rotated, a registered depth image turned
    into the raw-frame points of its pixels (the raw camera's undistorted rays).  A reading that is malformed is
    passed on unchanged: the anchoring refuses and counts it."""
    r = rectifier.camera.r
    identity = bool(np.allclose(r, np.eye(3)))
    out: list[Anchor] = []
    for anchor in anchors:
        try:
            if isinstance(anchor, DepthImageAnchor):
                anchor = depth_as_points(anchor, rectifier)
            elif identity:
                pass
            elif isinstance(anchor, (PointCloudAnchor, RangeAnchor)):
                rot, t = anchor.extrinsic.matrix()
                anchor = replace(anchor, extrinsic=Extrinsic.from_matrix(r @ rot, r @ t))
            elif isinstance(anchor, CameraHeightAnchor):
                _, up = anchor.checked()
                anchor = replace(anchor, up=tuple(float(c) for c in r @ up))
        except InputError:
            pass
        out.append(anchor)
    return out


def depth_as_points(anchor: DepthImageAnchor, rectifier: Rectifier) -> PointCloudAnchor:
    """A depth image registered to the raw (distorted) image as the points of its valid pixels, in the raw camera's
    optical frame, with the rectification rotation as extrinsic (at most ``anchor.max_samples`` points, a fixed
    stride)."""
    camera = rectifier.camera
    depth = anchor.resampled(camera.width, camera.height)
    raw = rectifier.raw_grid()
    valid = np.isfinite(depth) & raw.valid.cpu().numpy()
    v, u = np.nonzero(valid)
    if v.size > anchor.max_samples:
        stride = math.ceil(v.size / anchor.max_samples)
        v, u = v[::stride], u[::stride]
    # gather the sampled rays where they live (the inference device): only the samples cross to the host
    index = torch.from_numpy(v * camera.width + u).to(raw.rays.device)
    rays = raw.rays.reshape(-1, 3).index_select(0, index).cpu().numpy().astype(np.float64)
    return PointCloudAnchor(rays * depth[v, u][:, None], Extrinsic.from_matrix(camera.r), anchor.stamp,
                            anchor.weight, kind="depth")
