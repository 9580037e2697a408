"""Focal length and z-shift recovery from an affine-invariant point map.

MoGe predicts a point map that is correct up to an unknown shift along the optical axis (and, for MoGe-2,
a metric scale applied afterwards).  The camera follows from the map: a point (X, Y, Z + s) must project
onto its own pixel, i.e. ``focal * (X, Y) / (Z + s) == uv`` on the normalised view plane
(:func:`moge2_ros.geometry.uv.normalized_view_plane_uv`, focal in units of the half image diagonal).

:func:`recover_focal_shift` reproduces the official ``moge.utils.geometry_torch.recover_focal_shift``
*including its loose convergence*: the official code calls ``scipy.optimize.least_squares(method='lm',
ftol=1e-3)``, which stops after a few Gauss-Newton steps, up to ~6e-4 away from the true minimum.  The
iteration is replicated here in float64 torch (finite-difference Jacobian with scipy's step rule,
Gauss-Newton step from MINPACK's QR, its acceptance and ftol/gtol stopping tests), batched and without
host syncs on accelerators, so the answers equal the official ones (bit-for-bit on the reference vectors,
trajectory included, on CPU).

:func:`recover_shift_with_intrinsics` is the general known-camera solve (separate fx, fy, any principal
point, optional skew), solved to convergence; the official code has no equivalent.

Frames and units: camera frame = OpenCV (x right, y down, z forward).  Points are in arbitrary (affine)
units; the returned shift is in the same units and is *added* to z.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from moge2_ros.errors import GeometryError
from moge2_ros.geometry._checks import check_intrinsics_shape, check_map_mask, check_point_map, check_size_pair
from moge2_ros.geometry.intrinsics import intrinsics_from_focal_center
from moge2_ros.geometry.uv import grid_from_axes, pixel_center_axes, view_plane_axes

__all__ = [
    "recover_focal_shift",
    "recover_shift_with_intrinsics",
    "focal_to_normalized_intrinsics",
    "fov_x_to_focal",
]

_SQRT_EPS64 = float(torch.finfo(torch.float64).eps) ** 0.5  # scipy's 2-point relative step, 1.4901161193847656e-08
_PW_BLOCK = 128  # numpy's PW_BLOCKSIZE (pairwise summation leaf size)
_EPS64 = float(torch.finfo(torch.float64).eps)  # MINPACK dpmpar(1)
_DWARF = float(torch.finfo(torch.float64).tiny)  # MINPACK dpmpar(2), the smallest normal magnitude


# --------------------------------------------------------------------------------------------------------------------
# Low-resolution sampling shared by both solvers
# --------------------------------------------------------------------------------------------------------------------


def _nearest_indices(height: int, width: int, size: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``(h,)`` and columns ``(w,)`` that ``F.interpolate(mode='nearest')`` from ``H x W`` to ``size`` picks.

    Asked of ``interpolate`` itself (on exact float32 index ramps), so the selection is the official one; the
    maps are then sampled by indexing instead of resizing full-resolution grids.
    """
    rows = torch.arange(height, dtype=torch.float32, device=device).reshape(1, 1, height, 1)
    cols = torch.arange(width, dtype=torch.float32, device=device).reshape(1, 1, 1, width)
    rows = F.interpolate(rows, (size[0], 1), mode="nearest").reshape(-1).long()
    cols = F.interpolate(cols, (1, size[1]), mode="nearest").reshape(-1).long()
    return rows, cols


def _nearest_lr(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B, h, w, C)``: the nearest-resize samples at the rows and columns of
    :func:`_nearest_indices`."""
    return x.index_select(1, rows).index_select(2, cols)


def _lr_valid(mask: torch.Tensor | None, batch: int, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Low-resolution validity ``(B, h*w)`` bool: the sampled mask through float32 and ``> 0``."""
    if mask is None:
        return torch.ones(batch, rows.numel() * cols.numel(), dtype=torch.bool, device=rows.device)
    m = mask.reshape(batch, *mask.shape[-2:]).index_select(1, rows).index_select(2, cols)
    return (m.to(torch.float32) > 0).reshape(batch, -1)


# --------------------------------------------------------------------------------------------------------------------
# numpy's pairwise summation, batched (used for the float32 focal so that it matches numpy bit-for-bit)
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PairwisePlan:
    """Index structure of numpy's pairwise summation for fixed per-row counts (see :func:`_numpy_pairwise_sum`).

    It depends only on the counts and the row length, so a solver builds it once and sums many value arrays.
    """

    batch: int
    length: int
    idx: torch.Tensor  # (B, nodes * 128) gather positions of every node's leaf block
    num_nodes: int
    in_block: torch.Tensor  # (B, nodes, 128) bool: element handled by the 8 accumulators
    short: torch.Tensor  # (B, nodes) bool: fewer than 8 elements (plain left-to-right sum)
    tail_pos: torch.Tensor  # (B, nodes, 7) positions of the remainder elements inside a block
    in_tail: torch.Tensor  # (B, nodes, 7) bool
    sizes: list[int]
    split: list[torch.Tensor]  # per level (B, nodes_level) bool: node longer than 128 (inner node)


def _pairwise_plan(count: torch.Tensor, length: int) -> _PairwisePlan:
    """Build the :class:`_PairwisePlan` for rows of ``length`` values of which the first ``count[b]`` are summed."""
    batch = count.shape[0]
    device = count.device
    # Top-down: (start, length) of every node of the recursion, level by level.  A node longer than 128 splits;
    # a leaf's children get length 0 (dead nodes, summed as 0 and never used).
    starts = [torch.zeros(batch, 1, dtype=torch.long, device=device)]
    lens = [count.to(torch.long).reshape(batch, 1)]
    bound = length
    while bound > _PW_BLOCK:
        st, ln = starts[-1], lens[-1]
        half = ln // 2
        n2 = half - half % 8
        split = ln > _PW_BLOCK
        left_len = torch.where(split, n2, 0)
        right_len = torch.where(split, ln - n2, 0)
        starts.append(torch.stack([st, st + n2], dim=-1).reshape(batch, -1))
        lens.append(torch.stack([left_len, right_len], dim=-1).reshape(batch, -1))
        bound = bound // 2 + 8  # upper bound of the right child's length (n - 8*floor(n/16) <= n/2 + 7.5)
    all_starts = torch.cat(starts, dim=1)
    m = torch.cat(lens, dim=1)
    offs = torch.arange(_PW_BLOCK, device=device)
    idx = (all_starts[..., None] + offs).clamp_(max=max(length - 1, 0))
    full = m - m % 8  # elements handled by the 8 accumulators (0 when m < 8)
    return _PairwisePlan(
        batch=batch,
        length=length,
        idx=idx.reshape(batch, -1),
        num_nodes=all_starts.shape[1],
        in_block=offs < full[..., None],
        short=m < 8,
        tail_pos=(full[..., None] + offs[:7]).clamp_(max=_PW_BLOCK - 1),
        in_tail=offs[:7] < (m % 8)[..., None],
        sizes=[x.shape[1] for x in starts],
        split=[ln > _PW_BLOCK for ln in lens],
    )


def _numpy_pairwise_sum(values: torch.Tensor, count: torch.Tensor | _PairwisePlan) -> torch.Tensor:
    """Sum the first ``count[b]`` entries of every row of ``values`` exactly like ``numpy.add.reduce``.

    numpy sums a contiguous 1-D float array with *pairwise summation*: blocks of at most 128 elements are
    summed with 8 interleaved accumulators (combined as ((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7)), the remainder
    added sequentially; fewer than 8 elements: plain left-to-right), longer ranges are split at
    ``n2 = n//2 - (n//2) % 8`` and the halves' sums added.  This replicates that association in the tensor's
    dtype, for a different ``count`` per row, with a fixed number of tensor ops (no host sync).

    Args:
        values: ``(B, L)`` floating tensor; entries at positions ``>= count[b]`` are ignored (may be inf/NaN).
        count: ``(B,)`` int64, ``0 <= count <= L``, or a plan built for them by :func:`_pairwise_plan`.

    Returns:
        ``(B,)`` the sums, same dtype as ``values``.
    """
    batch, length = values.shape
    if length == 0:
        return torch.zeros(batch, dtype=values.dtype, device=values.device)
    plan = count if isinstance(count, _PairwisePlan) else _pairwise_plan(count, length)
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    # Leaf sums of every node of every level (cheap: at most 2^(depth+1) nodes x 128 gathered values).
    v = values.gather(1, plan.idx).reshape(batch, plan.num_nodes, _PW_BLOCK)
    blocks = torch.where(plan.in_block, v, zero).reshape(batch, plan.num_nodes, _PW_BLOCK // 8, 8)
    acc = blocks[..., 0, :]
    for i in range(1, _PW_BLOCK // 8):
        acc = acc + blocks[..., i, :]  # adding exact zeros past the end changes nothing
    res = ((acc[..., 0] + acc[..., 1]) + (acc[..., 2] + acc[..., 3])) + ((acc[..., 4] + acc[..., 5]) + (acc[..., 6] + acc[..., 7]))
    res = torch.where(plan.short, zero, res)  # fewer than 8 elements: plain left-to-right sum from 0
    tail = torch.where(plan.in_tail, v.gather(2, plan.tail_pos), zero)
    for t in range(7):
        res = res + tail[..., t]

    # Bottom-up: an inner node's sum is left + right.
    leaf_levels = list(torch.split(res, plan.sizes, dim=1))
    value = leaf_levels[-1]
    for level in range(len(plan.sizes) - 2, -1, -1):
        pairs = value.reshape(batch, plan.sizes[level], 2)
        value = torch.where(plan.split[level], pairs[..., 0] + pairs[..., 1], leaf_levels[level])
    return value[:, 0]


class _RowSums:
    """Sums of the first ``count[b]`` entries of every row of ``(B, L)`` tensors, in numpy's pairwise order.

    The counts are fixed for one solve; every call sums ``parts`` tensors with those counts.  On the CPU numpy's
    own ``add.reduce`` sums the rows (the official code sums exactly these arrays with numpy; a few microseconds
    a row instead of ~80 tiny tensor ops).  On other devices the tensor replica :func:`_numpy_pairwise_sum` sums
    all parts at once with a plan built once, without host syncs.
    """

    def __init__(self, count: torch.Tensor, length: int, parts: int):
        on_cpu = count.device.type == "cpu"
        self.host_counts: list[int] | None = [int(n) for n in count.tolist()] if on_cpu else None
        self.plan = None if on_cpu else _pairwise_plan(count.repeat(parts), length)

    def __call__(self, *values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.plan is not None:
            return torch.chunk(_numpy_pairwise_sum(torch.cat(values, dim=0), self.plan), len(values))
        assert self.host_counts is not None
        out = []
        for tensor in values:
            rows = tensor.numpy()
            sums = [np.add.reduce(rows[b, :n]) for b, n in enumerate(self.host_counts)]
            out.append(torch.from_numpy(np.array(sums, dtype=rows.dtype).reshape(len(sums))))
        return tuple(out)


def _compact_valid(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Move the valid rows of ``x (B, N, C)`` to the front, keeping their order (like ``x[b][valid[b]]``)."""
    order = torch.sort((~valid).to(torch.int32), dim=1, stable=True).indices
    return x.gather(1, order[..., None].expand(-1, -1, x.shape[-1]))


# --------------------------------------------------------------------------------------------------------------------
# The official loosely converged Levenberg-Marquardt solve, replicated
# --------------------------------------------------------------------------------------------------------------------


class _Residual:
    """``r(s) = f(s) * xy / (z + s) - uv`` (interleaved u, v per point; zero at invalid points), float64.

    The inputs are *compacted*: the valid points of every row come first, in row-major order, ``count[b]`` of
    them (exactly the arrays the official code hands to scipy).  ``f(s)`` is the closed-form optimal focal
    ``sum(xy_p * uv) / sum(xy_p^2)`` (``xy_p = xy / (z + s)``), summed in numpy's pairwise order so that the
    residuals - and hence the finite-difference Jacobian, which amplifies rounding differences ~1e8 times -
    equal scipy's bit-for-bit; when a focal is given it is used instead.
    """

    def __init__(
        self, xy: torch.Tensor, z: torch.Tensor, uv: torch.Tensor, count: torch.Tensor, focal: torch.Tensor | None
    ):
        self.xy, self.z, self.uv, self.focal = xy, z, uv, focal
        valid = torch.arange(xy.shape[1], device=xy.device) < count[:, None]
        self.valid2 = valid[..., None].expand_as(xy)
        # the same counts at every evaluation: 2 * count values (u and v) in the numerator and denominator rows
        self.sums = _RowSums(2 * count, 2 * xy.shape[1], parts=2)

    def __call__(self, s: torch.Tensor) -> torch.Tensor:
        batch = self.xy.shape[0]
        xy_p = self.xy / (self.z + s[:, None])[..., None]
        if self.focal is None:
            num, den = self.sums((xy_p * self.uv).reshape(batch, -1), (xy_p * xy_p).reshape(batch, -1))
            f = num / den
        else:
            f = self.focal
        return torch.where(self.valid2, f[:, None, None] * xy_p - self.uv, 0.0)


def _seq_sum(x: torch.Tensor) -> torch.Tensor:
    """Left-to-right sum over dim 1 (MINPACK's plain loops).  ``cumsum`` is sequential on CPU (bit-exact there);
    on CUDA it is a parallel scan, so the last bits may differ."""
    return torch.cumsum(x, dim=1)[:, -1]


def _enorm(x: torch.Tensor) -> torch.Tensor:
    """MINPACK ``enorm`` for vectors without over/underflow-range components: ``sqrt`` of the sequential sum of
    squares, over dim 1."""
    return _seq_sum(x * x).sqrt()


def _lmpar(rdiag: torch.Tensor, diag: torch.Tensor, qtf: torch.Tensor, delta: torch.Tensor, par: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """MINPACK ``lmpar`` (with ``qrsolv``) for one unknown, batched: the Levenberg-Marquardt parameter ``par`` and
    the step ``x`` (MINPACK's direction, the step taken is ``-x``) for the 1x1 ``R = rdiag``, scaling ``diag``,
    ``qtf`` and trust radius ``delta``; ``par`` is the previous value (the starting guess).

    The Gauss-Newton step ``qtf / rdiag`` is taken (``par = 0``) when ``|diag * x| - delta <= 0.1 delta``;
    otherwise ``par`` is iterated (at most 10 times) on ``|diag * x(par)| = delta`` with MINPACK's bounds
    ``parl`` / ``paru`` and Newton corrections, ``x(par)`` coming from ``qrsolv``'s Givens rotation of
    ``[R; sqrt(par) diag]``.  Every operation is MINPACK's, in its order, so the values are bit-identical.
    """
    zero = torch.zeros((), dtype=rdiag.dtype, device=rdiag.device)
    nonsingular = rdiag != 0
    x = torch.where(nonsingular, qtf / rdiag.where(nonsingular, 1.0), zero)
    dxnorm = (diag * x).abs()
    fp = dxnorm - delta
    gauss_newton = fp <= 0.1 * delta
    loop = ~gauss_newton
    if rdiag.device.type == "cpu" and not bool(loop.any()):
        return x, torch.zeros_like(par)  # every step is Gauss-Newton (the usual case): nothing to iterate
    safe_dx = dxnorm.where(loop, 1.0)
    temp = (diag * ((diag * x) / safe_dx) / rdiag.where(nonsingular, 1.0)).abs()
    parl = torch.where(nonsingular & loop, ((fp / delta) / temp) / temp, zero)
    gnorm = ((rdiag * qtf) / diag).abs()
    paru = gnorm / delta
    paru = torch.where(paru == 0, _DWARF / torch.clamp(delta, max=0.1), paru)
    par = torch.minimum(torch.maximum(par, parl), paru)
    par = torch.where(par == 0, gnorm / safe_dx, par)
    for it in range(10):
        par = torch.where(loop & (par == 0), torch.clamp(0.001 * paru, min=_DWARF), par)
        sd = torch.sqrt(par) * diag
        # qrsolv: one Givens rotation eliminates sqrt(par) * diag below R
        big = rdiag.abs() >= sd.abs()
        tan = sd / rdiag.where(big, 1.0)
        cos_a = 0.5 / torch.sqrt(0.25 + 0.25 * (tan * tan))
        cotan = rdiag / sd.where(~big, 1.0)
        sin_b = 0.5 / torch.sqrt(0.25 + 0.25 * (cotan * cotan))
        cos = torch.where(big, cos_a, sin_b * cotan)
        sin = torch.where(big, cos_a * tan, sin_b)
        rotate = sd != 0
        sdiag = torch.where(rotate, cos * rdiag + sin * sd, rdiag)
        wa = torch.where(rotate, cos * qtf, qtf)
        x_new = torch.where(sdiag != 0, wa / sdiag.where(sdiag != 0, 1.0), zero)
        dx_new = (diag * x_new).abs()
        fp_prev, fp_new = fp, dx_new - delta
        done = ((fp_new.abs() <= 0.1 * delta) | ((parl == 0) & (fp_new <= fp_prev) & (fp_prev < 0))
                | torch.full_like(loop, it == 9))
        temp = (diag * ((diag * x_new) / dx_new.where(dx_new != 0, 1.0)) / sdiag.where(sdiag != 0, 1.0)).abs()
        parc = ((fp_new / delta) / temp) / temp
        parl_new = torch.where(fp_new > 0, torch.maximum(parl, par), parl)
        paru_new = torch.where(fp_new < 0, torch.minimum(paru, par), paru)
        step = loop & ~done
        x = torch.where(loop, x_new, x)
        fp = torch.where(loop, fp_new, fp)
        parl = torch.where(step, parl_new, parl)
        paru = torch.where(step, paru_new, paru)
        par = torch.where(step, torch.maximum(parl_new, par + parc), par)
        loop = step
        if rdiag.device.type == "cpu" and not bool(loop.any()):
            break
    return x, torch.where(gauss_newton, zero, par)


def _loose_lm_shift(
    residual: _Residual,
    active: torch.Tensor,
    max_iter: int,
    ftol: float = 1e-3,
    xtol: float = 1e-8,
    gtol: float = 1e-8,
    max_nfev: int = 100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replica of ``scipy.optimize.least_squares(fn, x0=0, ftol=1e-3, method='lm')`` (MINPACK ``lmder`` with
    ``mode = 1`` scaling, ``factor = 100``, scipy's default ``xtol = gtol = 1e-8`` and ``max_nfev = 100``) for one
    scalar unknown, batched.

    Per element, starting at ``s = 0`` with ``r = r(s)``, ``|r|`` = MINPACK ``enorm`` (sequential sums):

    * after ``s`` changed (and at the start): the Jacobian column by scipy's 2-point rule,
      ``h = sqrt(eps) * sign(s) * max(1, |s|)`` (sign(0) = +1), ``h = (s + h) - s``, ``J = (r(s + h) - r) / h``;
      MINPACK's Householder QR of the column: ``alpha = +-|J|`` (sign of ``J[0]``), ``a = J / alpha``,
      ``a[0] += 1``, ``qtf = r[0] - a[0] * (sum(a * r) / a[0])``, ``R = -alpha``; the column scaling ``diag`` is
      ``|J|`` at the first Jacobian (1 if zero), then ``max(diag, |J|)``; the first trust radius is
      ``100 * |diag * s|`` (100 at ``s = 0``); the gtol test ``|R * qtf / |r|| / |J| <= gtol`` stops;
    * the step ``p = -x`` from :func:`_lmpar` (Gauss-Newton inside the trust region, else damped), its scaled
      norm ``pnorm = |diag * p|`` (before the first success the radius becomes ``min(delta, pnorm)``);
    * ``actred = 1 - (|r(s+p)| / |r|)^2`` (``-1`` unless ``0.1 |r(s+p)| < |r|``),
      ``prered = (|R p| / |r|)^2 + 2 (sqrt(par) pnorm / |r|)^2``, ``ratio = actred / prered``; the radius and
      ``par`` are updated by MINPACK's rules; the step is accepted if ``ratio >= 1e-4``, otherwise the next
      inner iteration retries from the same point with the smaller radius;
    * stop when ``|actred| <= ftol and prered <= ftol and ratio <= 2`` (MINPACK info 1, scipy status 2), when
      ``delta <= xtol |diag * s|`` (info 2), or on MINPACK's machine-precision and evaluation-count tests.

    This reproduces the official evaluation sequence bit-for-bit on CPU, including the damped steps of
    ill-conditioned maps (e.g. an untrained model's).  ``max_iter`` trial points (inner iterations) at most, with
    per-element freezing (no host sync on accelerators; on CPU the loop exits once every element stopped).

    Returns:
        ``s`` ``(B,)`` float64 and the trial points ``(max_iter, B)`` (NaN where the element had already stopped).
    """
    batch = active.shape[0]
    device = active.device
    s = torch.zeros(batch, dtype=torch.float64, device=device)
    r = residual(s).reshape(batch, -1)
    fnorm = _enorm(r)
    nfev = 1
    par = torch.zeros_like(s)
    diag = torch.ones_like(s)
    delta = torch.zeros_like(s)
    xnorm = torch.zeros_like(s)
    rdiag, qtf, acnorm, gnorm = (torch.zeros_like(s) for _ in range(4))
    first = torch.ones(batch, dtype=torch.bool, device=device)  # no successful step yet (MINPACK iter == 1)
    need_jac = active.clone()
    trials = []
    for _ in range(max_iter):
        if s.device.type != "cpu" or bool(need_jac.any()):
            h = _SQRT_EPS64 * torch.where(s >= 0, 1.0, -1.0) * s.abs().clamp_min(1.0)
            h = (s + h) - s
            jac = (residual(s + h).reshape(batch, -1) - r) / h[:, None]
            col = _enorm(jac)
            alpha = torch.where(jac[:, 0] < 0, -col, col)
            has_jac = col != 0
            a = jac / alpha.where(has_jac, 1.0)[:, None]
            a[:, 0] += 1.0  # ``a`` is a fresh tensor
            a0 = a[:, 0]
            qtf_new = torch.where(has_jac, r[:, 0] + a0 * (-_seq_sum(a * r) / a0), r[:, 0])
            rdiag_new = -alpha
            nondegenerate = has_jac & (fnorm != 0)
            cosine = rdiag_new * (qtf_new / fnorm.where(nondegenerate, 1.0)) / col.where(nondegenerate, 1.0)
            gnorm_new = torch.where(nondegenerate, cosine.abs(), 0.0)
            init = need_jac & first  # first Jacobian: scaling and trust radius
            diag = torch.where(init, torch.where(has_jac, col, 1.0), diag)
            start_radius = 100.0 * (diag * s).abs()
            delta = torch.where(init, torch.where(start_radius == 0, 100.0, start_radius), delta)
            xnorm = torch.where(init, (diag * s).abs(), xnorm)
            rdiag, qtf, acnorm, gnorm = (torch.where(need_jac, new, old) for new, old in
                                         ((rdiag_new, rdiag), (qtf_new, qtf), (col, acnorm), (gnorm_new, gnorm)))
            active = active & ~(need_jac & ~(gnorm > gtol))  # info 4 (NaN stops as well)
            diag = torch.where(need_jac, torch.maximum(diag, acnorm), diag)
            need_jac = torch.zeros_like(need_jac)
        x, par_new = _lmpar(rdiag, diag, qtf, delta, par)
        par = torch.where(active, par_new, par)
        p = torch.where(active, -x, 0.0)
        pnorm = (diag * p).abs()
        delta = torch.where(active & first, torch.minimum(delta, pnorm), delta)
        s_trial = s + p
        r_trial = residual(s_trial).reshape(batch, -1)
        nfev += 1
        fnorm_trial = _enorm(r_trial)
        safe_fnorm = fnorm.where(fnorm > 0, 1.0)
        ratio_f = fnorm_trial / safe_fnorm
        actred = torch.where(0.1 * fnorm_trial < fnorm, 1.0 - ratio_f * ratio_f, -1.0)
        temp1 = (rdiag * p).abs() / safe_fnorm
        temp2 = (torch.sqrt(par) * pnorm) / safe_fnorm
        prered = temp1 * temp1 + temp2 * temp2 / 0.5
        dirder = -(temp1 * temp1 + temp2 * temp2)
        ratio = torch.where(prered != 0, actred / prered.where(prered != 0, 1.0), 0.0)
        # trust radius and LM parameter (MINPACK lmder, "update the step bound")
        shrink = ratio <= 0.25
        temp = torch.where(actred >= 0, 0.5, (0.5 * dirder) / (dirder + 0.5 * actred))
        temp = torch.where((0.1 * fnorm_trial >= fnorm) | (temp < 0.1), 0.1, temp)
        grow = ~shrink & ~((par != 0) & (ratio < 0.75))
        delta_new = torch.where(shrink, temp * torch.minimum(delta, pnorm / 0.1), torch.where(grow, pnorm / 0.5, delta))
        par_upd = torch.where(shrink, par / temp, torch.where(grow, 0.5 * par, par))
        delta = torch.where(active, delta_new, delta)
        par = torch.where(active, par_upd, par)
        accept = active & (ratio >= 1e-4)
        trials.append(torch.where(active, s_trial, torch.nan))
        s = torch.where(accept, s_trial, s)
        r = torch.where(accept[:, None], r_trial, r)
        fnorm = torch.where(accept, fnorm_trial, fnorm)
        xnorm = torch.where(accept, (diag * s).abs(), xnorm)
        first = first & ~accept
        need_jac = accept
        small_pred = (prered <= ftol) & (0.5 * ratio <= 1.0)
        done = ((actred.abs() <= ftol) & small_pred) | (delta <= xtol * xnorm)  # info 1, 2, 3
        done |= ((actred.abs() <= _EPS64) & (prered <= _EPS64) & (0.5 * ratio <= 1.0)) | (delta <= _EPS64 * xnorm)
        done |= (gnorm <= _EPS64) | torch.full_like(done, nfev >= max_nfev)  # info 8, 5
        active = active & ~done
        if s.device.type == "cpu" and not bool(active.any()):
            break  # free on CPU; on accelerators the fixed count avoids a host round trip per iteration
    trials += [torch.full_like(s, torch.nan)] * (max_iter - len(trials))
    trial_tensor = torch.stack(trials) if trials else s.new_empty(0, batch)
    return s, trial_tensor


def _batch_focal(focal: torch.Tensor | float, batch_shape: torch.Size, device: torch.device) -> torch.Tensor:
    """The given focal as float32 of the batch shape (broadcast, or reshaped if it has one value per element)."""
    focal_t = torch.as_tensor(focal, device=device).to(torch.float32)
    try:
        return torch.broadcast_to(focal_t, batch_shape)
    except RuntimeError:
        if focal_t.numel() == batch_shape.numel():  # e.g. (B,) for points (B, H, W, 3) given as (1, B)
            return focal_t.reshape(batch_shape)
        raise GeometryError(
            f"focal: expected a tensor broadcastable to the point map's batch shape {tuple(batch_shape)}, "
            f"found shape {tuple(focal_t.shape)}"
        ) from None


def _recover_focal_shift_impl(
    points: torch.Tensor,
    mask: torch.Tensor | None,
    focal: torch.Tensor | float | None,
    downsample_size: Sequence[int],
    max_iter: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns ``(focal, shift, trials (max_iter, B), shift64 (B,))`` - the last two for tests/diagnostics."""
    check_point_map(points)
    check_map_mask(mask, points.shape[:-1])
    size = check_size_pair(downsample_size)
    batch_shape = points.shape[:-3]
    height, width = points.shape[-3], points.shape[-2]
    device = points.device
    pts = points.detach().to(torch.float32).reshape(-1, height, width, 3)
    batch = pts.shape[0]
    focal_b = None if focal is None else _batch_focal(focal, batch_shape, device).reshape(-1)
    if batch == 0:
        empty = torch.zeros(batch_shape, dtype=torch.float32, device=device)
        trials = torch.zeros(max_iter, 0, dtype=torch.float64, device=device)
        return empty, empty.clone(), trials, empty.to(torch.float64)

    rows, cols = _nearest_indices(height, width, size, device)
    u, v = view_plane_axes(width, height, dtype=torch.float32, device=device)
    pts_lr = _nearest_lr(pts, rows, cols).reshape(batch, -1, 3)  # (B, N, 3) float32
    uv_lr = grid_from_axes(u[cols], v[rows]).reshape(1, -1, 2)  # (1, N, 2) float32
    valid = _lr_valid(mask, batch, rows, cols)  # (B, N)
    count = valid.sum(dim=1)
    solvable = count >= 2

    # Compact: valid points first (row-major order), invalid slots filled with harmless values.
    packed = _compact_valid(torch.cat([pts_lr, uv_lr.expand(batch, -1, -1)], dim=-1), valid)
    slot_valid = torch.arange(packed.shape[1], device=device) < count[:, None]
    filler = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0], device=device)
    packed = torch.where(slot_valid[..., None], packed, filler)
    xy, z, uv_c = packed[..., 0:2], packed[..., 2], packed[..., 3:5]

    residual = _Residual(
        xy.to(torch.float64),
        z.to(torch.float64),
        uv_c.to(torch.float64),
        count,
        None if focal_b is None else focal_b.to(torch.float64),
    )
    shift64, trials = _loose_lm_shift(residual, solvable, max_iter)
    shift = torch.where(solvable, shift64.to(torch.float32), 0.0)

    if focal_b is None:
        # float32 focal from the float32 shift, summed in numpy's pairwise order (as the official numpy code).
        xy_p = xy / (z + shift[:, None])[..., None]
        num, den = residual.sums((xy_p * uv_c).reshape(batch, -1), (xy_p * xy_p).reshape(batch, -1))
        focal_out = torch.where(solvable, num / den, 1.0)
    else:
        focal_out = focal_b
    return focal_out.reshape(batch_shape), shift.reshape(batch_shape), trials, shift64


def recover_focal_shift(
    points: torch.Tensor,
    mask: torch.Tensor | None = None,
    focal: torch.Tensor | float | None = None,
    downsample_size: Sequence[int] = (64, 64),
    *,
    max_iter: int = 20,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Focal and z-shift of an affine point map, exactly as the official MoGe ``recover_focal_shift``.

    Assumes a centred principal point, square pixels in focal units of the half diagonal, no distortion.
    The map, the normalised view-plane uv of the full ``W x H`` grid and the mask are resampled to
    ``downsample_size`` with ``F.interpolate(mode='nearest')`` (maps smaller than that are upsampled); the
    mask goes through float32 and ``> 0``.  With fewer than 2 valid low-resolution points the answer is
    ``focal = 1, shift = 0``.  Otherwise ``min_s sum |f(s) * xy / (z + s) - uv|^2`` is solved with the
    official loosely converged Levenberg-Marquardt trajectory (float64, at most ``max_iter`` iterations; the
    official solves stop after 1-5), ``shift = float32(s)`` and the focal is recomputed in float32 from that shift
    as ``sum(xy_p * uv) / sum(xy_p^2)``, ``xy_p = xy / (z + shift)`` (numpy's summation order).

    Args:
        points: ``(..., H, W, 3)`` affine-invariant point map (camera frame up to a z shift), any float dtype
            (computed in float32 / float64).
        mask: ``(..., H, W)`` bool (or numeric, ``> 0`` = valid), or None (all valid).
        focal: optional known focal ``(...)`` (or broadcastable / a Python float) in half-diagonal units; it is
            used as float32, only the shift is solved and it is returned (as float32, batch-shaped).
        downsample_size: ``(h, w)`` of the low-resolution grid the solve runs on.
        max_iter: iteration cap of the LM replica.

    Returns:
        ``(focal, shift)``, each ``(...)`` float32 on ``points.device``.  The camera-frame map is
        ``points + (0, 0, shift)``; its normalised intrinsics are :func:`focal_to_normalized_intrinsics`.

    Raises:
        GeometryError: on malformed shapes.
    """
    focal_out, shift, _, _ = _recover_focal_shift_impl(points, mask, focal, downsample_size, max_iter)
    return focal_out, shift


# --------------------------------------------------------------------------------------------------------------------
# Known intrinsics: solve the shift to convergence
# --------------------------------------------------------------------------------------------------------------------


def recover_shift_with_intrinsics(
    points: torch.Tensor,
    intrinsics: torch.Tensor,
    mask: torch.Tensor | None = None,
    downsample_size: Sequence[int] = (64, 64),
    max_iter: int = 50,
) -> torch.Tensor:
    """z-shift of an affine point map for a known camera (any fx, fy, principal point, skew), fully converged.

    The official code only supports a known *horizontal FoV* with a centred principal point.  Here the ray of
    every low-resolution sample is ``(a, b, 1) = K^-1 (u, v, 1)`` with ``(u, v)`` the normalised pixel centre
    ``((j + 0.5) / W, (i + 0.5) / H)`` of the source pixel that the nearest resize selects (the same selection
    as :func:`recover_focal_shift`), and

        ``F(s) = sum_valid (x / (z + s) - a)^2 + (y / (z + s) - b)^2``

    is minimised over the feasible interval ``s > -min(z)`` (all valid samples in front of the camera) in
    float64 by a bracketed Newton iteration: start at the linearised closed form
    ``s0 = sum(a (x - a z) + b (y - b z)) / sum(a^2 + b^2)`` (exact for noise-free data; moved inside the feasible
    interval if needed), keep a bracket ``lo < s* < hi`` from the sign of ``F'``, take the Newton step when the
    curvature is positive and the step stays inside the bracket, else bisect (or expand to the right while no
    upper bracket is known).  ``max_iter`` iterations with per-element freezing; on CPU the loop exits early
    once every element has converged.

    Args:
        points: ``(..., H, W, 3)`` affine point map (OpenCV camera frame up to a z shift).
        intrinsics: ``(..., 3, 3)`` NORMALISED intrinsics (uv units, image spans [0, 1]), broadcastable to the
            batch shape of ``points``.
        mask: ``(..., H, W)`` bool or None.
        downsample_size: ``(h, w)`` of the low-resolution grid.
        max_iter: iteration cap.

    Returns:
        ``(...)`` float32 shift (add it to z).  ``0`` where fewer than 2 low-resolution samples are valid.  If the
        rays and points are inconsistent so that ``F`` keeps decreasing (no finite minimiser), the shift grows
        with the iteration count - check the result if the inputs are not trusted.
    """
    check_point_map(points)
    check_map_mask(mask, points.shape[:-1])
    check_intrinsics_shape(intrinsics)
    size = check_size_pair(downsample_size)
    batch_shape = points.shape[:-3]
    height, width = points.shape[-3], points.shape[-2]
    device = points.device
    try:
        k = torch.broadcast_to(intrinsics.detach(), (*batch_shape, 3, 3))
    except RuntimeError:
        raise GeometryError(
            f"intrinsics: expected shape broadcastable to {(*batch_shape, 3, 3)}, found {tuple(intrinsics.shape)}"
        ) from None
    pts = points.detach().to(torch.float32).reshape(-1, height, width, 3)
    batch = pts.shape[0]
    if batch == 0:
        return torch.zeros(batch_shape, dtype=torch.float32, device=device)
    k = k.reshape(batch, 3, 3).to(device=device, dtype=torch.float64)

    rows, cols = _nearest_indices(height, width, size, device)
    u, v = pixel_center_axes(width, height, dtype=torch.float64, device=device)
    pts_lr = _nearest_lr(pts, rows, cols).reshape(batch, -1, 3).to(torch.float64)
    grid_lr = grid_from_axes(u[cols], v[rows]).reshape(1, -1, 2)
    valid = _lr_valid(mask, batch, rows, cols) & torch.isfinite(pts_lr).all(dim=-1)
    count = valid.sum(dim=1)
    solvable = count >= 2

    fx, fy = k[:, 0, 0, None], k[:, 1, 1, None]
    cx, cy, skew = k[:, 0, 2, None], k[:, 1, 2, None], k[:, 0, 1, None]
    b = (grid_lr[..., 1] - cy) / fy
    a = (grid_lr[..., 0] - cx - skew * b) / fx
    zero = torch.zeros((), dtype=torch.float64, device=device)
    x = torch.where(valid, pts_lr[..., 0], zero)
    y = torch.where(valid, pts_lr[..., 1], zero)
    z = torch.where(valid, pts_lr[..., 2], zero)
    a = torch.where(valid, a, zero)
    b = torch.where(valid, b, zero)

    z_min = torch.where(valid, z, torch.inf).amin(dim=1)
    z_min = torch.where(solvable, z_min, 0.0)
    scale = torch.where(valid, z.abs(), zero).sum(dim=1) / count.clamp_min(1) + 1e-6
    pole = -z_min  # F -> +inf as s -> pole from above (unless x = y = 0 there)

    den = (a.square() + b.square()).sum(dim=1)
    s = (a * (x - a * z) + b * (y - b * z)).sum(dim=1) / den.where(den > 0, 1.0)
    s = torch.where(den > 0, s, 0.0)
    s = torch.where(s > pole, s, pole + 0.05 * scale)
    lo = pole.clone()
    hi = torch.full_like(s, torch.inf)
    active = solvable.clone()
    for it in range(max_iter):
        inv = 1.0 / torch.where(valid, z + s[:, None], 1.0)
        inv2 = inv * inv
        rx, ry = x * inv - a, y * inv - b
        g = torch.where(valid, -(rx * x + ry * y) * inv2, zero).sum(dim=1)  # F'(s) / 2
        curv = torch.where(valid, (x * x + y * y) * inv2 * inv2 + 2.0 * (rx * x + ry * y) * inv2 * inv, zero).sum(dim=1)
        lo = torch.where(active & (g < 0), torch.maximum(lo, s), lo)
        hi = torch.where(active & (g > 0), torch.minimum(hi, s), hi)
        newton = s - g / curv.where(curv > 0, 1.0)
        use_newton = (curv > 0) & (newton > lo) & (newton < hi)
        fallback = torch.where(torch.isfinite(hi), 0.5 * (lo + hi), s + torch.maximum(2.0 * (s - lo), scale))
        s_new = torch.where(use_newton, newton, fallback)
        s_new = torch.where(active & (g != 0) & torch.isfinite(s_new), s_new, s)
        moved = (s_new - s).abs() > 1e-15 * s.abs().clamp_min(1.0)
        s = s_new
        active = active & moved
        if device.type == "cpu" and it % 4 == 3 and not bool(active.any()):
            break  # no device sync on CPU; on accelerators the fixed count avoids a host round trip
    shift = torch.where(solvable, s, 0.0).to(torch.float32)
    return shift.reshape(batch_shape)


# --------------------------------------------------------------------------------------------------------------------
# Focal conversions (official float32 evaluation order)
# --------------------------------------------------------------------------------------------------------------------


def focal_to_normalized_intrinsics(focal: torch.Tensor, aspect_ratio: float) -> torch.Tensor:
    """Normalised intrinsics from a half-diagonal focal, in the official float32 evaluation order.

    ``fx = focal / 2 * (1 + ar^2) ** 0.5 / ar``, ``fy = focal / 2 * (1 + ar^2) ** 0.5``, ``cx = cy = 0.5``.

    Args:
        focal: ``(...)`` focal relative to half the image diagonal.
        aspect_ratio: image width / height (Python float).

    Returns:
        ``(..., 3, 3)`` normalised intrinsics (uv units: the image spans [0, 1]), dtype of ``focal``.
    """
    if not isinstance(focal, torch.Tensor):
        focal = torch.as_tensor(focal, dtype=torch.float32)
    ar = float(aspect_ratio)
    if not ar > 0:
        raise GeometryError(f"aspect_ratio: expected a positive float, found {aspect_ratio!r}")
    fx = focal / 2 * (1 + ar**2) ** 0.5 / ar
    fy = focal / 2 * (1 + ar**2) ** 0.5
    return intrinsics_from_focal_center(fx, fy, 0.5, 0.5)


def fov_x_to_focal(
    fov_x_deg: float | torch.Tensor,
    aspect_ratio: float,
    batch_shape: Sequence[int] | torch.Size = (),
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Half-diagonal focal from a horizontal field of view in degrees (official float32 formula).

    ``focal = ar / (1 + ar^2) ** 0.5 / tan(deg2rad(float32(fov_x) / 2))`` in float32, broadcast to
    ``batch_shape``; the tangent is rounded correctly (float64 then float32) instead of torch's float32 ``tan``,
    which is 1 ulp off for some inputs on some CPUs (this reproduces the official fov 60 value exactly).

    Args:
        fov_x_deg: horizontal FoV in degrees, a float or a tensor broadcastable to ``batch_shape``.
        aspect_ratio: image width / height.
        batch_shape: shape of the result.
        device: of the result (default: the tensor's device, else CPU).

    Returns:
        ``batch_shape`` float32 tensor.
    """
    ar = float(aspect_ratio)
    if not ar > 0:
        raise GeometryError(f"aspect_ratio: expected a positive float, found {aspect_ratio!r}")
    if device is None and isinstance(fov_x_deg, torch.Tensor):
        device = fov_x_deg.device
    fov = torch.as_tensor(fov_x_deg, dtype=torch.float32, device=device)
    # torch's float32 tan is only accurate to ~1 ulp and differs between CPU kernels (60 deg on this machine gives
    # 1 ulp below the official value); evaluating it in float64 and rounding gives the correctly rounded float32.
    tan_half = torch.tan(torch.deg2rad(fov / 2).to(torch.float64)).to(torch.float32)
    focal = ar / (1 + ar**2) ** 0.5 / tan_half
    try:
        return torch.broadcast_to(focal, tuple(batch_shape))
    except RuntimeError:
        raise GeometryError(
            f"fov_x_deg: expected a value broadcastable to batch_shape {tuple(batch_shape)}, "
            f"found shape {tuple(fov.shape)}"
        ) from None
