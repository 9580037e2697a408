"""The per-frame entry point: :class:`ScaleAnchoring` turns the network's metric prediction plus the robot's metric
sensor readings into one trusted metric scale per frame (:class:`ScaleDecision`).

Use (what :class:`moge2_ros.pipeline.frame.FramePipeline` does per frame)::

    anchoring = ScaleAnchoring(AnchorConfig())
    decision = anchoring.update(geometry.points[0], geometry.mask[0], geometry.intrinsics[0],
                                float(geometry.metric_scale[0]), anchors, stamp=t, camera_id=frame_id)
    geometry = geometry.scaled(decision.factor)       # factor = applied_scale / network_scale
    # mode 'scale_shift': depth += decision.shift_m as well; mode 'complete': decision.completed_depth

MoGe-2 predicts an affine-invariant point map and one global metric scale; its metric outputs are
``points = scale * affine``.  Each anchor source (:mod:`moge2_ros.anchors.sources`) yields a correction ``c`` of
the network's metric output with an uncertainty (:mod:`moge2_ros.anchors.fit`); trustworthy ones are fused by
inverse variance in log space.  Over time, per camera, a Kalman filter (:mod:`moge2_ros.anchors.kalman`) tracks
the network's scale *bias* ``b`` in log space (random walk; prior ``0 +- network_log_std``, i.e. the network's
own scale, before any anchor; the first anchored frame of a camera replaces that prior however far off the network
was, within ``max_correction``): a frame's correction is ``b + e`` with ``e`` the network's per-frame scale noise
(``network_frame_log_std``, learned per camera with ``adapt_frame_noise``).  The anchors of a frame measure ``b + e`` (gated: a jump beyond ``gate_sigma`` is
rejected and counted, a streak of them restarts the filter); the frame's scale fuses the filter's prediction with
them by inverse variance, so sharp anchors (a LiDAR) are followed frame by frame, noisy ones (a single range
reading) are smoothed, and when the anchors stop the last anchored correction is held (its uncertainty growing)
instead of falling back to the network's bias.  The network's scale itself is never smoothed: its frame-to-frame
changes follow the camera (MoGe-2's affine map has no fixed normalisation).  ``update`` never raises on bad
sensor data: it is counted (``dropped``) and the frame keeps the network's (or the filter's) scale with a
``reason``.

Frames and units: the camera optical frame of REP 103 (x right, y down, z forward), metres, pixels (ROS K).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from moge2_ros.anchors.fit import FitOptions, SourceFit, fit_depth_samples, fit_ground, fit_range
from moge2_ros.anchors.kalman import KalmanOptions, LogScaleKalman
from moge2_ros.anchors.sources import (
    Anchor,
    AnchorError,
    CameraHeightAnchor,
    DepthImageAnchor,
    DropCounts,
    PointCloudAnchor,
    RangeAnchor,
    check_intrinsics,
)
from moge2_ros.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from moge2_ros.inference.result import Geometry

__all__ = ["MODES", "AnchorConfig", "ScaleDecision", "ScaleAnchoring", "apply_decision"]

MODES = ("scale", "scale_shift", "complete")


@dataclass(frozen=True)
class AnchorConfig:
    """Settings of :class:`ScaleAnchoring`.

    Attributes:
        mode: ``scale`` (one factor, default), ``scale_shift`` (factor + depth shift from points / depth anchors)
            or ``complete`` (``scale``, plus a log-depth Poisson completion of a depth-image anchor's holes from
            the network's gradients, in :attr:`ScaleDecision.completed_depth`).
        max_age_s: readings whose stamp differs from the image's by more are dropped as stale.
        network_log_std: std of the network's scale bias in log space (how far its metric scale may be off before
            any anchor was seen: the filter's prior; also the uncertainty reported for an unanchored frame).
        network_frame_log_std: the network's per-frame scale noise around its slowly varying bias, log space (the
            part of a frame's correction that the filter cannot predict from earlier frames); with
            ``adapt_frame_noise`` the floor of the learned value.
        adapt_frame_noise: learn the network's per-frame scale noise per camera from the anchored frames'
            innovations (an exponential average of their excess squared innovation, each clipped at 3 sigma so a
            single glitch moves it little, never below ``network_frame_log_std``): a network whose scale jumps by
            10-30 % between frames is then followed by sharp anchors instead of having its corrections gated.
        temporal: run the Kalman filter (False: each frame stands alone).
        fit: thresholds of the per-frame fits (robust truncation and inlier thresholds are relative depth
            errors, default 0.15 = 15 %).  Set ``fit.trunc`` / ``fit.inlier_threshold`` above the network's typical
            relative depth error after scaling (a trained MoGe-2 indoors: ~0.05-0.1; the bundled demo model on
            real frames: ~0.3-0.4): below it too few anchors count as inliers and the frame keeps the network's
            scale ("k of n anchors are inliers").
        kalman: filter parameters.
        complete_solver: ``auto`` / ``scipy`` / ``torch`` for mode ``complete``.
        max_correction: a source whose correction of the network's scale is beyond this factor (either way) is
            refused as implausible (a table top taken for the floor, a cloud in the wrong frame).
    """

    mode: str = "scale"
    max_age_s: float = 0.1
    network_log_std: float = 0.2
    network_frame_log_std: float = 0.03
    adapt_frame_noise: bool = True
    temporal: bool = True
    fit: FitOptions = field(default_factory=FitOptions)
    kalman: KalmanOptions = field(default_factory=KalmanOptions)
    complete_solver: str = "auto"
    max_correction: float = 4.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"anchors: mode must be one of {MODES}, found {self.mode!r}")
        if not (self.max_age_s > 0):
            raise InputError(f"anchors: max_age_s must be > 0 seconds, found {self.max_age_s}")
        if not (self.network_log_std > 0 and math.isfinite(self.network_log_std)):
            raise InputError(f"anchors: network_log_std must be finite and > 0, found {self.network_log_std}")
        if not (self.network_frame_log_std >= 0 and math.isfinite(self.network_frame_log_std)):
            raise InputError(f"anchors: network_frame_log_std must be finite and >= 0, found "
                             f"{self.network_frame_log_std}")
        f = self.fit
        if not (0 < f.trunc and 0 < f.inlier_threshold < 1 and f.min_anchors >= 1 and 0 <= f.min_inlier_ratio <= 1
                and 0 < f.range_quantile < 1 and 0 < f.ground_min_fraction < 1):
            raise InputError(f"anchors: fit options out of range: {f}")
        if self.mode == "scale_shift" and not f.fit_shift:
            object.__setattr__(self, "fit", replace(f, fit_shift=True))
        if not (self.max_correction > 1 and math.isfinite(self.max_correction)):
            raise InputError(f"anchors: max_correction must be finite and > 1, found {self.max_correction}")
        if self.complete_solver not in ("auto", "scipy", "torch"):
            raise InputError(f"anchors: complete_solver must be auto, scipy or torch, found {self.complete_solver!r}")


@dataclass(frozen=True)
class ScaleDecision:
    """The metric scale chosen for one frame and why.

    Attributes:
        source: the anchor sources that set this frame's scale, joined by ``+`` (``points``, ``depth``,
            ``range``, ``ground``), or ``network`` when none did.
        network_scale: the network's raw metric scale of this frame.
        applied_scale: the scale to publish with (same units as ``network_scale``).
        log_std: uncertainty of ``applied_scale`` as a std of its log (the filter's when temporal).
        anchor_scale: this frame's anchored scale before the filter (NaN when no source was trustworthy).
        anchor_log_std: its std in log space (inf when none).
        anchor_count: usable anchor samples over the trustworthy sources (all sources when none was).
        inliers: inlier samples, likewise.
        residual_m: median absolute residual of the inliers, metres (NaN when none).
        shift_m: depth shift in metres (mode ``scale_shift``; 0 otherwise) to add to the scaled depth.
        reason: why the frame fell back to the network / filter scale ("" when anchored); several reasons are
            joined by ``"; "``.
        gated: True when this frame's anchored scale was rejected by the temporal filter's gate (a jump).
        dropped: counts of dropped anchor data by reason (see :class:`~moge2_ros.anchors.sources.DropCounts`).
        fits: every source's own estimate.
        completed_depth: ``(H, W)`` float32 metres in mode ``complete`` with a depth anchor: the sensor depth
            where valid, the Poisson completion in its holes, NaN where nothing anchors it; else None.
        time_s: wall time of :meth:`ScaleAnchoring.update`, seconds.
    """

    source: str
    network_scale: float
    applied_scale: float
    log_std: float
    anchor_scale: float = math.nan
    anchor_log_std: float = math.inf
    anchor_count: int = 0
    inliers: int = 0
    residual_m: float = math.nan
    shift_m: float = 0.0
    reason: str = ""
    gated: bool = False
    dropped: dict[str, int] = field(default_factory=dict)
    fits: tuple[SourceFit, ...] = ()
    completed_depth: np.ndarray | None = None
    time_s: float = 0.0

    @property
    def factor(self) -> float:
        """What the frame's metric outputs (points, depth, metric_scale) are multiplied by:
        ``applied_scale / network_scale`` (1 when the network scale is unusable)."""
        if self.network_scale > 0 and math.isfinite(self.network_scale) and math.isfinite(self.applied_scale):
            return self.applied_scale / self.network_scale
        return 1.0

    @property
    def anchored(self) -> bool:
        return self.source != "network"


def _numpy(x: torch.Tensor | np.ndarray, dtype) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32 if dtype is np.float32 else None).numpy()
    return np.asarray(x, dtype=dtype)


def _age(anchor_stamp, image_stamp) -> float:
    """Seconds between a reading and the image (0 when either has no stamp, NaN when one is not a number)."""
    if anchor_stamp is None or image_stamp is None:
        return 0.0
    try:
        return float(anchor_stamp) - float(image_stamp)
    except (TypeError, ValueError):
        return math.nan


class _Prediction:
    """The network's metric points of one frame with lazily computed full-image maps (the sample sources read only
    their pixels; the range, floor and completion need the valid map)."""

    def __init__(self, points: np.ndarray, mask: np.ndarray | None) -> None:
        self.points, self.mask = points, mask
        self._valid: np.ndarray | None = None

    @property
    def valid(self) -> np.ndarray:
        if self._valid is None:
            valid = np.isfinite(self.points).all(axis=-1) & (self.points[..., 2] > 0)
            self._valid = valid if self.mask is None else valid & self.mask
        return self._valid

    @property
    def depth(self) -> np.ndarray:
        return np.where(self.valid, self.points[..., 2], np.nan)


class ScaleAnchoring:
    """Per-camera metric scale anchoring and temporal filtering (see the module docstring).

    Attributes:
        config: the settings.
        totals: cumulative counters: ``frames``, ``anchored`` frames, ``fallback`` frames, ``gated`` frames and the
            drop reasons of :class:`~moge2_ros.anchors.sources.DropCounts`.
    """

    def __init__(self, config: AnchorConfig | None = None) -> None:
        self.config = config or AnchorConfig()
        self._filters: dict[str, LogScaleKalman] = {}
        self._sizes: dict[str, tuple[tuple[int, int], np.ndarray | None]] = {}
        self._frame_var: dict[str, float] = {}  # learned per-frame noise variance of the network's scale
        self._seen_anchor: set[str] = set()  # cameras whose filter holds an anchored measurement
        self.totals: dict[str, int] = {"frames": 0, "anchored": 0, "fallback": 0, "gated": 0,
                                       **DropCounts().as_dict()}

    def reset(self, camera_id: str | None = None) -> None:
        """Forget the filter state of one camera (or of all with None)."""
        for key in [camera_id] if camera_id is not None else list(self._filters):
            if key in self._filters:
                self._filters[key].reset()
            self._sizes.pop(key, None)
            self._frame_var.pop(key, None)
            self._seen_anchor.discard(key)

    def filter(self, camera_id: str = "") -> LogScaleKalman:
        """The Kalman filter of a camera (created on first use)."""
        if camera_id not in self._filters:
            self._filters[camera_id] = LogScaleKalman(self.config.kalman)
        return self._filters[camera_id]

    # ------------------------------------------------------------------------------------------- per frame

    def update(
        self,
        points: torch.Tensor | np.ndarray,
        mask: torch.Tensor | np.ndarray | None,
        intrinsics: torch.Tensor | np.ndarray,
        network_scale: float,
        anchors: Sequence[Anchor] = (),
        stamp: float | None = None,
        camera_id: str = "",
        normals: torch.Tensor | np.ndarray | None = None,
    ) -> ScaleDecision:
        """Decide this frame's metric scale.

        Args:
            points: ``(H, W, 3)`` the network's METRIC points (``Geometry.points[0]``: affine points times
                ``network_scale``), optical frame, metres; NaN where invalid.  Any device (copied to the CPU).
            mask: ``(H, W)`` bool valid prediction, or None (finite points).
            intrinsics: ``(3, 3)`` pinhole K of this image in pixels (ROS convention).
            network_scale: the network's metric scale of this frame (``Geometry.metric_scale[0]``).
            anchors: this frame's sensor readings (see :mod:`moge2_ros.anchors.sources`).
            stamp: image time in seconds (anchor staleness, filter time step), or None.
            camera_id: filter key (the camera's frame_id); a new image size or intrinsics reset its filter.
            normals: optional ``(H, W, 3)`` unit normals (``Geometry.normal[0]``) for the camera-height source.

        Returns:
            :class:`ScaleDecision`; ``decision.factor`` multiplies the frame's metric outputs.
        """
        t0 = time.perf_counter()
        cfg = self.config
        net = float(network_scale)
        drops = DropCounts()
        reasons: list[str] = []
        self.totals["frames"] += 1
        if not (math.isfinite(net) and net > 0):
            return self._finish(ScaleDecision("network", net, net, math.inf,
                                              reason=f"network scale {net} is not usable"), drops, t0)
        try:
            pts = _numpy(points, np.float32)
        except (TypeError, ValueError) as exc:
            return self._finish(ScaleDecision("network", net, net, math.inf, reason=f"points: {exc}"), drops, t0)
        if pts.ndim != 3 or pts.shape[-1] != 3 or pts.shape[0] < 2 or pts.shape[1] < 2:
            return self._finish(ScaleDecision("network", net, net, math.inf,
                                              reason=f"points must be (H, W, 3), found {pts.shape}"), drops, t0)
        height, width = pts.shape[:2]
        m = None
        if mask is not None:
            m = _numpy(mask, bool)
            if m.shape != (height, width):
                return self._finish(ScaleDecision("network", net, net, math.inf,
                                                  reason=f"mask {m.shape} does not match points {pts.shape}"),
                                    drops, t0)
        pred = _Prediction(pts, m)
        try:
            k = check_intrinsics(intrinsics)
        except AnchorError as exc:
            k = None
            reasons.append(str(exc))
        self._follow_camera(camera_id, width, height, k)

        fits: list[SourceFit] = []
        dense: DepthImageAnchor | None = None
        for anchor in anchors if k is not None else ():
            kind = getattr(anchor, "kind", type(anchor).__name__)
            age = _age(getattr(anchor, "stamp", None), stamp)
            if not abs(age) <= cfg.max_age_s:  # NaN (a non-numeric stamp) is stale too
                drops.stale += 1
                reasons.append(f"{kind}: stale ({age:+.3f} s)")
                continue
            try:
                fit = self._fit_one(anchor, pred, k, normals, drops)
            except (AnchorError, np.linalg.LinAlgError) as exc:  # a bad reading; numerically degenerate data
                drops.invalid += 1
                reasons.append(f"{kind}: {exc}")
                continue
            if fit is None:
                continue
            if fit.ok and not (1 / cfg.max_correction <= fit.correction <= cfg.max_correction):
                fit = replace(fit, ok=False, reason=f"implausible correction {fit.correction:.3g} of the network "
                                                    f"scale (beyond x{cfg.max_correction:g})")
            if isinstance(anchor, DepthImageAnchor):
                dense = anchor
            fits.append(fit)
            if not fit.ok:
                reasons.append(f"{fit.source}: {fit.reason}")
        if not anchors:
            reasons.append("no anchors")
        return self._decide(net, fits, reasons, drops, stamp, camera_id, dense, pred, t0)

    def _follow_camera(self, camera_id: str, width: int, height: int, k: np.ndarray | None) -> None:
        """Reset the camera's filter when its image size or its intrinsics (fx, fy, cx, cy by more than 1 %)
        change: another camera, another zoom, another scale behaviour."""
        size, old_k = self._sizes.get(camera_id, (None, None))
        changed = size != (width, height)
        if not changed and k is not None and old_k is not None:
            params, old = k[[0, 1, 0, 1], [0, 1, 2, 2]], old_k[[0, 1, 0, 1], [0, 1, 2, 2]]
            changed = bool(np.any(np.abs(params - old) > 0.01 * np.abs(old).clip(min=1.0)))
        if changed and camera_id in self._filters:
            self._filters[camera_id].reset()
            self._frame_var.pop(camera_id, None)
            self._seen_anchor.discard(camera_id)
        self._sizes[camera_id] = ((width, height), k if k is not None else old_k)

    def _fit_one(self, anchor: Anchor, pred: "_Prediction", k: np.ndarray, normals,
                 drops: DropCounts) -> SourceFit | None:
        pts = pred.points
        height, width = pts.shape[:2]
        opts = self.config.fit
        if isinstance(anchor, (PointCloudAnchor, DepthImageAnchor)):
            samples = anchor.samples(k, width, height, drops)
            if len(samples) == 0:
                drops.empty += 1
            return fit_depth_samples(anchor.kind, samples, pts, pred.mask, opts)
        if isinstance(anchor, RangeAnchor):
            cone = anchor.checked(drops)
            if cone is None:
                return None
            apex, axis, cos_half, distance = cone
            return fit_range(pts, pred.valid, apex, axis, cos_half, distance, float(anchor.log_std), opts)
        if isinstance(anchor, CameraHeightAnchor):
            h, up = anchor.checked()
            nrm = None if normals is None else _numpy(normals, np.float32)
            if nrm is not None and nrm.shape != pts.shape:
                nrm = None
            return fit_ground(pts, pred.valid, nrm, h, up, opts)
        raise AnchorError(f"anchors: unknown anchor type {type(anchor).__name__}")

    def _decide(self, net: float, fits: list[SourceFit], reasons: list[str], drops: DropCounts,
                stamp: float | None, camera_id: str, dense: DepthImageAnchor | None, pred: "_Prediction",
                t0: float) -> ScaleDecision:
        cfg = self.config
        good = [f for f in fits if f.ok and f.correction > 0 and math.isfinite(f.log_std)]
        used = good or fits
        count = sum(f.count for f in used)
        inliers = sum(f.inliers for f in used)
        res = [f.residual_m for f in good if math.isfinite(f.residual_m)]
        residual = float(np.median(res)) if res else math.nan
        anchor_scale, anchor_std, shift, source = math.nan, math.inf, 0.0, "network"
        if good:
            w = np.array([1.0 / f.log_std**2 for f in good])
            log_c = float(np.sum(w * np.log([f.correction for f in good])) / w.sum())
            anchor_std = float(1.0 / math.sqrt(w.sum()))
            anchor_scale = net * math.exp(log_c)
            shift = next((f.shift_m for f in good if f.shift_m != 0.0), 0.0)
            source = "+".join(f.source for f in good)
            reasons = []
        gated = False
        if cfg.temporal:
            # the filter's state is the slowly varying log correction b of the network's metric output; this
            # frame's correction is b + e (e: the network's per-frame scale noise, variance frame_var)
            kf = self.filter(camera_id)
            kf.predict(stamp)
            if not kf.initialised:
                kf.update(0.0, cfg.network_log_std, kind="prior")  # before any anchor: the network, +- its bias
            frame_var = self._frame_var.get(camera_id, cfg.network_frame_log_std**2)
            prior_x, prior_var = kf.x, kf.p + frame_var
            log_c, var = prior_x, prior_var
            if good and camera_id not in self._seen_anchor:
                # the first anchored frame of this camera: the anchors replace the network's prior (a network off
                # by 2x is not a jump to reject, it is what anchoring is for; max_correction bounds it)
                z = math.log(anchor_scale / net)
                kf.reset()
                kf.predict(stamp)
                kf.update(z, math.sqrt(anchor_std**2 + frame_var), kind="anchor")
                self._seen_anchor.add(camera_id)
                log_c, var = z, anchor_std**2
            elif good:
                z = math.log(anchor_scale / net)
                if cfg.adapt_frame_noise:
                    self._learn_frame_noise(camera_id, z - prior_x, kf.p, frame_var, anchor_std**2)
                restarts = kf.restarts
                if not kf.update(z, math.sqrt(anchor_std**2 + frame_var), kind="anchor"):
                    gated = True
                    reasons = [f"anchored scale {anchor_scale:.4g} rejected by the temporal gate (a jump of "
                               f"{z - prior_x:+.3f} in log scale against +-{math.sqrt(prior_var):.3f})"]
                    source = "network"
                elif kf.restarts != restarts:  # the world changed: start from this frame's anchors
                    log_c, var = z, anchor_std**2
                else:  # this frame's correction: the prior (b, with e unknown) fused with the anchors
                    r = anchor_std**2
                    var = 1.0 / (1.0 / prior_var + 1.0 / r)
                    log_c = var * (prior_x / prior_var + z / r)
            applied, log_std = net * math.exp(log_c), math.sqrt(var)
        elif good:
            applied, log_std = anchor_scale, anchor_std
        else:
            applied, log_std = net, cfg.network_log_std
        completed = None
        if cfg.mode == "complete" and dense is not None and good:
            completed = self._complete(dense, pred.depth * (applied / net))
        decision = ScaleDecision(
            source=source, network_scale=net, applied_scale=applied, log_std=log_std, anchor_scale=anchor_scale,
            anchor_log_std=anchor_std, anchor_count=count, inliers=inliers, residual_m=residual,
            shift_m=shift if not gated else 0.0, reason="; ".join(reasons), gated=gated, fits=tuple(fits),
            completed_depth=completed)
        return self._finish(decision, drops, t0)

    def _learn_frame_noise(self, camera_id: str, innovation: float, p: float, frame_var: float,
                           anchor_var: float) -> None:
        """One step of the per-frame noise estimate: ``E[nu^2] = P + e^2 + r^2``, so the excess ``nu^2 - P - r^2``
        (``nu`` clipped at 3 sigma of its predicted spread) is averaged with weight 0.1 (signed, so anchors whose
        noise matches their stated uncertainty add nothing on average), floored at the configured
        ``network_frame_log_std``."""
        floor = self.config.network_frame_log_std**2
        nu2 = min(innovation**2, 9.0 * (p + frame_var + anchor_var))
        learned = 0.9 * frame_var + 0.1 * (nu2 - p - anchor_var)  # signed: an unbiased average of the excess
        self._frame_var[camera_id] = max(learned, floor)

    def frame_noise(self, camera_id: str = "") -> float:
        """The network's per-frame scale noise (std of log) currently assumed for a camera."""
        return math.sqrt(self._frame_var.get(camera_id, self.config.network_frame_log_std**2))

    def _complete(self, anchor: DepthImageAnchor, guide: np.ndarray) -> np.ndarray:
        from moge2_ros.anchors.complete import complete_depth

        height, width = guide.shape
        return complete_depth(anchor.resampled(width, height), guide, solver=self.config.complete_solver)

    def _finish(self, decision: ScaleDecision, drops: DropCounts, t0: float) -> ScaleDecision:
        for name, value in drops.as_dict().items():
            self.totals[name] += value
        self.totals["anchored" if decision.anchored else "fallback"] += 1
        self.totals["gated"] += int(decision.gated)
        return replace(decision, dropped=drops.as_dict(), time_s=time.perf_counter() - t0)


def apply_decision(geometry: "Geometry", decision: ScaleDecision) -> "Geometry":
    """The frame's geometry with the decision applied: metric outputs times ``decision.factor``; in mode
    ``scale_shift`` the depth shift added (points moved along their rays); in mode ``complete`` the completed depth
    (sensor depth, holes filled) replacing depth, points and mask where it is finite.

    Args:
        geometry: one frame's :class:`~moge2_ros.inference.result.Geometry` (batch of 1) with the network's scale.
        decision: :meth:`ScaleAnchoring.update`'s decision for it.

    Returns:
        A new Geometry (``metric_scale`` = the applied scale); normals and intrinsics unchanged.
    """
    factor = decision.factor
    geo = geometry.scaled(factor) if factor != 1.0 else geometry
    if decision.shift_m != 0.0 and math.isfinite(decision.shift_m):
        depth = geo.depth + decision.shift_m
        keep = geo.mask & (depth > 0)
        ratio = torch.where(keep, depth / geo.depth, torch.nan)
        geo = replace(geo, depth=torch.where(keep, depth, torch.nan), points=geo.points * ratio[..., None],
                      mask=keep)
    if decision.completed_depth is not None:
        completed = torch.as_tensor(decision.completed_depth, dtype=torch.float32, device=geo.depth.device)[None]
        if completed.shape == geo.depth.shape:
            k = geo.intrinsics[0].to(torch.float32)
            height, width = completed.shape[-2:]
            u = torch.arange(width, dtype=torch.float32, device=completed.device)
            v = torch.arange(height, dtype=torch.float32, device=completed.device)
            y = ((v - k[1, 2]) / k[1, 1])[:, None].expand(height, width)
            x = ((u[None, :] - k[0, 2] - k[0, 1] * y) / k[0, 0])
            rays = torch.stack([x, y, torch.ones_like(x)], dim=-1)
            keep = torch.isfinite(completed) & (completed > 0)
            depth = torch.where(keep, completed, torch.nan)
            geo = replace(geo, depth=depth, points=depth[..., None] * rays, mask=keep)
    return geo
