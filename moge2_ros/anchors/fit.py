"""Robust per-frame scale estimates from metric anchors (pure numpy / torch, no ROS).

Each solver compares the network's metric prediction with one anchor source and returns a :class:`SourceFit`:
a correction factor ``c`` (the network's metric outputs times ``c`` are the anchored metric outputs), its
uncertainty as a std of ``log c``, the sample / inlier counts and, when it is not to be trusted, the reason.

* :func:`fit_depth_samples` - sparse depth samples (points, depth image): global truncated-L1 fit of the relative
  residual ``|c z_pred / z - 1|`` (exact solver of :mod:`moge2_ros.geometry.alignment`), inlier gating, then
  a least-squares refinement in log space on the inliers (scale only), or the same with a depth shift
  (``z ~ c z_pred + b``).
* :func:`fit_range` - a range cone: the closest predicted surface in the cone (a low quantile of the distances
  from the sensor, along the rays, not z) must equal the range.
* :func:`fit_ground` - a known camera height: RANSAC + least-squares plane fit on the predicted points whose
  normals are near the up direction and which lie below the camera; ``c = h / distance``.

Units: metres; frames: the camera optical frame of REP 103 (x right, y down, z forward).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from moge2_ros.anchors.sources import DepthSamples
from moge2_ros.geometry.alignment import align, align_depth_affine
from moge2_ros.geometry.normals import normals_from_points

__all__ = ["FitOptions", "SourceFit", "fit_depth_samples", "fit_range", "fit_ground"]


@dataclass(frozen=True)
class FitOptions:
    """Thresholds of the per-frame fits (see :class:`moge2_ros.anchors.AnchorConfig` for the meaning)."""

    fit_shift: bool = False
    trunc: float = 0.15
    inlier_threshold: float = 0.15
    min_anchors: int = 10
    min_inlier_ratio: float = 0.5
    min_log_std: float = 0.005
    global_fit_samples: int = 256
    shift_fit_samples: int = 256
    range_quantile: float = 0.01
    range_min_pixels: int = 4
    range_model_log_std: float = 0.02
    ground_min_fraction: float = 0.05
    ground_normal_angle_deg: float = 20.0
    ground_max_tilt_deg: float = 10.0
    ground_inlier_rel: float = 0.02
    ground_max_residual_rel: float = 0.02
    ground_min_inlier_ratio: float = 0.5
    ground_log_std: float = 0.01
    ground_grid_points: int = 20_000
    ground_ransac_iterations: int = 64


@dataclass(frozen=True)
class SourceFit:
    """One source's per-frame estimate.

    Attributes:
        source: ``points`` / ``depth`` / ``range`` / ``ground``.
        ok: whether the estimate is trustworthy (enough anchors, enough inliers, a visible flat floor, ...).
        correction: factor ``c`` on the network's metric outputs (1 when not ok).
        log_std: uncertainty of ``log c`` (inf when not ok).
        shift_m: depth shift ``b`` in metres of a scale + shift fit (0 otherwise).
        count: usable samples (pixels with a valid prediction and an anchor; cone / floor pixels).
        inliers: samples within the inlier threshold after the fit.
        residual_m: median absolute depth (or distance) residual of the inliers, metres (NaN when none).
        reason: why it is not ok ("" when ok).
    """

    source: str
    ok: bool
    correction: float = 1.0
    log_std: float = math.inf
    shift_m: float = 0.0
    count: int = 0
    inliers: int = 0
    residual_m: float = math.nan
    reason: str = ""


def _median(x: np.ndarray, at_most: int = 4096) -> float:
    """Median of ``x`` (of a fixed-stride subsample of at most ``at_most`` values: bounded time)."""
    return float(np.median(x[:: max(1, math.ceil(x.size / at_most))]))


def _refuse(source: str, reason: str, count: int = 0, inliers: int = 0) -> SourceFit:
    return SourceFit(source=source, ok=False, count=count, inliers=inliers, reason=reason)


def fit_depth_samples(source: str, samples: DepthSamples, points: np.ndarray, mask: np.ndarray | None,
                      opts: FitOptions) -> SourceFit:
    """Fit the correction of the network's depth to sparse metric depth samples.

    Only the sampled pixels of the prediction are read (no full-image pass).

    Args:
        source: name reported in the result.
        samples: anchor samples (pixels inside the image, metric z > 0).
        points: ``(H, W, 3)`` the network's metric points (optical frame, metres), NaN where invalid.
        mask: ``(H, W)`` bool valid prediction, or None.
        opts: thresholds.
    """
    if len(samples) == 0:
        return _refuse(source, "no anchor samples in the image")
    flat = samples.v * points.shape[1] + samples.u
    # the predicted z of the sampled pixels only (np.take on the flat buffer: 10x faster than points[v, u, 2])
    zp = np.take(np.ascontiguousarray(points).reshape(-1), flat * 3 + 2).astype(np.float64)
    ok = np.isfinite(zp) & (zp > 0) & np.isfinite(samples.z) & (samples.z > 0) & (samples.weight > 0)
    if mask is not None:
        ok &= np.take(mask.reshape(-1), flat)
    za, w = samples.z, samples.weight
    if not ok.all():  # boolean indexing only when needed (bounded time for large clouds)
        zp, za, w = zp[ok], za[ok], w[ok]
    n = int(zp.size)
    if n < opts.min_anchors:
        return _refuse(source, f"{n} anchors on valid predicted pixels < {opts.min_anchors}", count=n)
    stride = max(1, math.ceil(n / (opts.shift_fit_samples if opts.fit_shift else opts.global_fit_samples)))
    sub = slice(None, None, stride)
    q = zp / za
    if opts.fit_shift:
        # relative truncation: min(trunc * z, |c zp + b - z|) per sample
        c, b = align_depth_affine(torch.from_numpy(zp[sub]), torch.from_numpy(za[sub]), torch.from_numpy(w[sub]),
                                  trunc=torch.from_numpy(opts.trunc * za[sub] * w[sub]))
        c, b = float(c), float(b)
    else:
        # global step: exact truncated-L1 minimiser of sum w min(trunc, |c q - 1|) on a subsample
        c = float(align(torch.from_numpy(q[sub]), torch.ones(1, dtype=torch.float64), torch.from_numpy(w[sub]),
                        trunc=torch.from_numpy(opts.trunc * w[sub]))[0])
        b = 0.0
    if not (math.isfinite(c) and c > 0 and math.isfinite(b)):
        return _refuse(source, f"robust fit gave a non-positive scale {c:.4g}", count=n)
    log_ratio = None if opts.fit_shift else -np.log(q)
    thr = opts.inlier_threshold
    for _ in range(3):  # inlier gating + least-squares refinement (log space for the scale)
        rel = np.abs(c * q + b / za - 1.0) if b else np.abs(c * q - 1.0)
        inl = rel < thr
        if np.count_nonzero(inl) < 2:
            break
        # adaptive gate: 3 robust sigmas of the current inliers, never wider than inlier_threshold
        thr = min(opts.inlier_threshold, max(3.0 * 1.4826 * _median(rel[inl]), 1e-3))
        inl = rel < thr
        if np.count_nonzero(inl) < 2:
            break
        if opts.fit_shift:
            sw = np.sqrt(w[inl]) / za[inl]  # relative residuals
            a_mat = np.stack([zp[inl] * sw, sw], axis=1)
            c_new, b_new = np.linalg.lstsq(a_mat, za[inl] * sw, rcond=None)[0]
            if not (c_new > 0):
                break
            c, b = float(c_new), float(b_new)
        else:
            wi = w[inl]
            c = math.exp(float((wi * log_ratio[inl]).sum()) / float(wi.sum()))  # no BLAS: it spins under load
    inl = (np.abs(c * q + b / za - 1.0) if b else np.abs(c * q - 1.0)) < thr
    k = int(np.count_nonzero(inl))
    if k < opts.min_anchors or k < opts.min_inlier_ratio * n:
        return _refuse(source, f"{k} of {n} anchors are inliers (need >= {opts.min_anchors} and "
                               f"{opts.min_inlier_ratio:.0%})", count=n, inliers=k)
    log_res = np.log(za[inl] / (c * zp[inl] + b))
    spread = 1.4826 * _median(np.abs(log_res - _median(log_res)))
    return SourceFit(source=source, ok=True, correction=c, shift_m=b, count=n, inliers=k,
                     log_std=max(opts.min_log_std, spread / math.sqrt(k)),
                     residual_m=_median(np.abs(c * zp[inl] + b - za[inl])))


def fit_range(points: np.ndarray, mask: np.ndarray, apex: np.ndarray, axis: np.ndarray, cos_half: float,
              distance: float, reading_log_std: float, opts: FitOptions) -> SourceFit:
    """Correction from a range cone: the closest predicted surface in the cone must be at ``distance``.

    The cone membership depends on the scale when the sensor is not at the camera centre, so the fit is iterated
    (cone pixels of the scaled prediction, then the scale that puts their ``range_quantile`` distance at the
    measured range), converging in a few steps for offsets small against the range.

    Args:
        points: ``(H, W, 3)`` the network's metric points, optical frame, metres.
        mask: ``(H, W)`` bool, valid prediction.
        apex, axis: ``(3,)`` sensor origin and unit cone axis in the camera frame.
        cos_half: cosine of the cone's half-angle.
        distance: measured range, metres.
        reading_log_std: the reading's own std of log distance.
    """
    p = points[mask].astype(np.float64)
    p = p[np.isfinite(p).all(axis=1)]
    c = 1.0
    for _ in range(6):
        q = c * p - apex
        d = np.linalg.norm(q, axis=1)
        inside = q @ axis >= cos_half * d
        if int(inside.sum()) < opts.range_min_pixels:
            return _refuse("range", f"{int(inside.sum())} predicted pixels in the range cone < "
                                    f"{opts.range_min_pixels} (cone outside the image?)", count=int(inside.sum()))
        dmin = float(np.quantile(d[inside], opts.range_quantile))
        if not dmin > 0:
            return _refuse("range", "predicted surface at the sensor", count=int(inside.sum()))
        step = distance / dmin
        c *= step
        if abs(step - 1.0) < 1e-6:
            break
    q = c * p - apex
    d = np.linalg.norm(q, axis=1)
    inside = q @ axis >= cos_half * d
    count = int(inside.sum())
    if count < opts.range_min_pixels:
        return _refuse("range", "range fit did not converge (cone pixels vanish)", count=count)
    residual = abs(float(np.quantile(d[inside], opts.range_quantile)) - distance)
    return SourceFit(source="range", ok=True, correction=c, count=count, inliers=count,
                     log_std=math.hypot(reading_log_std, opts.range_model_log_std), residual_m=residual)


def _plane_lstsq(p: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares plane ``n . x + d = 0`` (unit ``n``) through ``p (M, 3)``."""
    centre = p.mean(axis=0)
    _, _, vt = np.linalg.svd(p - centre, full_matrices=False)
    n = vt[2]
    return n, -float(n @ centre)


def fit_ground(points: np.ndarray, mask: np.ndarray, normals: np.ndarray | None, height: float, up: np.ndarray,
               opts: FitOptions) -> SourceFit:
    """Correction from the known camera height above a flat floor.

    Floor candidates: valid predicted points (on a regular grid of at most ``ground_grid_points``) whose normal is
    within ``ground_normal_angle_deg`` of ``up`` and that lie below the camera.  They must be at least
    ``ground_min_fraction`` of the valid points; a RANSAC plane (normal within ``ground_max_tilt_deg`` of ``up``,
    inliers within ``ground_inlier_rel`` of the distance) is refined by least squares and accepted when its
    inliers are ``ground_min_inlier_ratio`` of the candidates and its RMS residual is within
    ``ground_max_residual_rel`` of the distance.  Otherwise the source is skipped with the reason.

    Args:
        points: ``(H, W, 3)`` network metric points, optical frame, metres.
        mask: ``(H, W)`` bool.
        normals: ``(H, W, 3)`` unit normals or None (then computed from the points).
        height: camera height above the floor, metres.
        up: ``(3,)`` unit up direction in the camera frame.
    """
    h_img, w_img = mask.shape
    stride = max(1, math.ceil(math.sqrt(h_img * w_img / opts.ground_grid_points)))
    p = np.ascontiguousarray(points[::stride, ::stride], dtype=np.float32)
    m = mask[::stride, ::stride] & np.isfinite(p).all(axis=-1)
    if normals is None:
        nt, nv = normals_from_points(torch.from_numpy(p), torch.from_numpy(m))
        nrm, m = nt.numpy(), m & nv.numpy()
    else:
        nrm = np.asarray(normals[::stride, ::stride], dtype=np.float32)
        m = m & np.isfinite(nrm).all(axis=-1)
    n_valid = int(m.sum())
    if n_valid == 0:
        return _refuse("ground", "no valid predicted pixels")
    cand = m & (nrm @ up >= math.cos(math.radians(opts.ground_normal_angle_deg))) & (p @ up < 0)
    q = p[cand].astype(np.float64)
    n_cand = int(q.shape[0])
    if n_cand < max(3, opts.ground_min_fraction * n_valid):
        return _refuse("ground", f"floor not visible: {n_cand / n_valid:.1%} of the valid pixels face up below "
                                 f"the camera (< {opts.ground_min_fraction:.0%})", count=n_cand)
    rng = np.random.default_rng(0)
    cos_tilt = math.cos(math.radians(opts.ground_max_tilt_deg))
    best, best_count = None, -1
    for _ in range(opts.ground_ransac_iterations):
        a, b, c = q[rng.choice(n_cand, 3, replace=False)]
        n = np.cross(b - a, c - a)
        norm = np.linalg.norm(n)
        if norm < 1e-12:
            continue
        n = n / norm
        if n @ up < 0:
            n = -n
        if n @ up < cos_tilt:
            continue
        d = -float(n @ a)
        if d <= 0:  # the camera must be above the plane: n . 0 + d > 0
            continue
        count = int((np.abs(q @ n + d) < opts.ground_inlier_rel * d).sum())
        if count > best_count:
            best, best_count = (n, d), count
    if best is None:
        return _refuse("ground", f"no floor plane within {opts.ground_max_tilt_deg} deg of up", count=n_cand)
    n, d = best
    inl = np.abs(q @ n + d) < opts.ground_inlier_rel * d
    for _ in range(2):
        if inl.sum() < 3:
            break
        n, d = _plane_lstsq(q[inl])
        if n @ up < 0:
            n, d = -n, -d
        inl = np.abs(q @ n + d) < opts.ground_inlier_rel * abs(d)
    k = int(inl.sum())
    if not d > 0 or n @ up < cos_tilt:
        return _refuse("ground", "fitted floor plane is not below the camera / not level", count=n_cand, inliers=k)
    if k < opts.ground_min_inlier_ratio * n_cand:
        return _refuse("ground", f"floor not flat: {k} of {n_cand} candidates on the plane "
                                 f"(< {opts.ground_min_inlier_ratio:.0%})", count=n_cand, inliers=k)
    res = q[inl] @ n + d
    rms = float(np.sqrt(np.mean(res**2)))
    if rms > opts.ground_max_residual_rel * d:
        return _refuse("ground", f"floor not flat: RMS residual {rms / d:.2%} of the distance", count=n_cand,
                       inliers=k)
    c = height / d
    return SourceFit(source="ground", ok=True, correction=c, count=n_cand, inliers=k,
                     log_std=math.hypot(opts.ground_log_std, rms / d / math.sqrt(k)),
                     residual_m=float(np.median(np.abs(res))) * c)
