"""Robust (L1 / truncated L1) scale and shift alignment, with the semantics of the official
``moge/utils/alignment.py`` (used by MoGe's training losses and evaluation metrics).

All solvers are exact: the objective ``sum_i w_i |a x_i - y_i|`` (or its truncated version
``sum_i min(trunc, w_i |a x_i - y_i|)``) is piecewise linear in ``a`` with kinks at ``a = y_i / x_i``, so an
optimum is attained at one of those candidates.

* ``trunc is None``: the weighted median of ``y_i / x_i`` with weights ``w_i |x_i|`` - found by sorting and
  locating the first candidate where the derivative ``2 * cumsum(w x) - sum(w x)`` becomes >= 0.
* truncated: every candidate where the left derivative is < 0 and the right derivative >= 0 is a local
  minimum; derivatives come from prefix sums over three sorted key lists (the kinks ``y/x`` and the two
  truncation breakpoints ``(w y -+ trunc) / (w x)``); the objective is evaluated at those local minima and the
  smallest wins (if there is none, the first element is taken).
* Scale + shift problems use the *anchor* scheme: every point with positive weight is tried as an anchor whose
  residual is forced to zero (the shift is eliminated), the scale is solved by :func:`align` on the anchored
  data and the anchor with the smallest loss wins; the result is recomputed from the two defining
  coordinates.  This costs O(N^2) time and memory (processed in chunks).

Signs are folded into ``x >= 0``, divisions clamp ``x`` at ``eps = 1e-7``.  Exact ties between equal-loss
candidates are broken by the last candidate (what the official scatter-min does on CPU).

Shapes: ``(..., N)`` for scalar data, ``(..., N, 3)`` for points; weights ``(..., N)`` (>= 0, ``None`` = 1).
These functions use data-dependent indexing (``torch.where`` / ``nonzero``), i.e. one host sync per call.
"""

from __future__ import annotations

import math

import torch

from moge2_ros.errors import GeometryError

__all__ = [
    "align",
    "align_depth_scale",
    "align_depth_affine",
    "align_points_scale",
    "align_points_scale_z_shift",
    "align_points_scale_xyz_shift",
    "align_points_z_shift",
    "align_points_xyz_shift",
    "align_affine_lstsq",
]

_Trunc = float | torch.Tensor | None
_MAX_ELEMENTS = 2**22  # elements per chunk when a problem is replicated over many rows


def _scatter_min(values: torch.Tensor, group: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group minimum of ``values (M,)`` (``group (M,)`` in ``[0, size)``) and the position of the minimiser
    (the last one on ties; ``-1`` and ``inf`` for empty groups)."""
    minimum = torch.full((size,), torch.inf, dtype=values.dtype, device=values.device)
    minimum = minimum.scatter_reduce(0, group, values, reduce="amin", include_self=False)
    hit = values == minimum.gather(0, group)
    pos = torch.where(hit, torch.arange(values.shape[0], device=values.device), -1)
    arg = torch.full((size,), -1, dtype=torch.long, device=values.device)
    arg = arg.scatter_reduce(0, group, pos, reduce="amax", include_self=True)
    return minimum, arg


def _pad_keys(keys: torch.Tensor) -> torch.Tensor:
    lo = torch.full_like(keys[..., :1], -torch.inf)
    return torch.cat([lo, keys, torch.full_like(lo, torch.inf)], dim=-1)


def _pad_prefix(prefix: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.zeros_like(prefix[..., :1]), prefix, prefix[..., -1:]], dim=-1)


def _sorted_prefix(keys: torch.Tensor, wx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys sorted per row (padded with -inf / +inf) and the prefix sums of ``wx`` in that order (padded)."""
    keys_sorted, order = keys.sort(dim=-1, stable=True)  # stable: ties resolve the same on every run
    prefix = torch.cumsum(torch.gather(wx, -1, order), dim=-1)
    return _pad_keys(keys_sorted), _pad_prefix(prefix)


def _derivative(
    at: torch.Tensor, tables: list[tuple[torch.Tensor, torch.Tensor]], side: str
) -> torch.Tensor:
    """``2 Q_A(<at) - Q_B(<at) - Q_C(<at)`` (``side='left'``: strictly below; ``'right'``: below or equal)."""
    out = None
    for coef, (keys, prefix) in zip((2, 1, 1), tables):
        j = torch.searchsorted(keys, at, side=side) - 1
        term = torch.gather(prefix, -1, j)
        out = coef * term if out is None else out - term
    return out


def _check_tensors(name: str, *tensors: torch.Tensor) -> None:
    for t in tensors:
        if not isinstance(t, torch.Tensor):
            raise GeometryError(f"{name}: expected torch.Tensor arguments, found {type(t).__name__}")


def align(
    x: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None, trunc: _Trunc = None, eps: float = 1e-7
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Solve ``min_a sum_i w_i |a x_i - y_i|`` (``trunc`` None) or ``min_a sum_i min(trunc, w_i |a x_i - y_i|)``.

    Args:
        x, y: ``(..., N)`` (broadcastable).
        w: ``(..., N)`` non-negative weights (broadcastable), or None for ones.
        trunc: None, a float, or a tensor broadcastable to ``(..., N)``.
        eps: clamp of ``x`` (after folding signs into ``x >= 0``) in divisions.

    Returns:
        ``(a, loss, index)``, each ``(...)``: the optimal factor (differentiable w.r.t. x, y), the objective at it
        (detached in the truncated case) and the index ``i`` with ``a = y_i / x_i``.
    """
    _check_tensors("align", x, y)
    if w is None:
        w = torch.ones_like(x)
    try:
        x, y, w = torch.broadcast_tensors(x, y, w)
    except RuntimeError:
        raise GeometryError(
            f"align: x {tuple(x.shape)}, y {tuple(y.shape)} and w {tuple(w.shape)} do not broadcast"
        ) from None
    if x.ndim == 0 or x.shape[-1] == 0:
        raise GeometryError(f"align: expected at least one element along the last dim, found shape {tuple(x.shape)}")
    n = x.shape[-1]
    sign = torch.sign(x)
    x, y = x * sign, y * sign

    if trunc is None:
        y_div_x = y / x.clamp_min(eps)
        y_div_x, order = y_div_x.sort(dim=-1, stable=True)
        wx = torch.gather(x * w, -1, order)
        derivatives = 2 * wx.cumsum(dim=-1) - wx.sum(dim=-1, keepdim=True)
        search = torch.searchsorted(derivatives, torch.zeros_like(derivatives[..., :1]), side="left")
        search = search.clamp_max(n - 1)
        a = y_div_x.gather(-1, search).squeeze(-1)
        index = order.gather(-1, search).squeeze(-1)
        loss = (w * (a[..., None] * x - y).abs()).sum(dim=-1)
        return a, loss, index

    batch_shape = x.shape[:-1]
    batch = math.prod(batch_shape)
    x, y, w = x.reshape(batch, n), y.reshape(batch, n), w.reshape(batch, n)
    if isinstance(trunc, torch.Tensor):
        try:
            trunc_rows = torch.broadcast_to(trunc.to(x), (*batch_shape, n)).reshape(batch, n)
        except RuntimeError:
            raise GeometryError(
                f"align: trunc of shape {tuple(trunc.shape)} does not broadcast to {(*batch_shape, n)}"
            ) from None
    else:
        trunc_rows = None
    t = trunc_rows if trunc_rows is not None else float(trunc)
    wx, wy = w * x, w * y
    y_div_x = y / x.clamp_min(eps)
    with torch.no_grad():
        key_b = (wy - t) / wx.clamp_min(eps)
        key_c = (wy + t) / wx.clamp_min(eps)
        tables = [_sorted_prefix(k, wx) for k in (y_div_x, key_b, key_c)]
        left = _derivative(y_div_x, tables, "left")
        right = _derivative(y_div_x, tables, "right")
        is_extremum = (left < 0) & (right >= 0)
        is_extremum[..., 0] |= ~is_extremum.any(dim=-1)
        ext_row, ext_col = torch.where(is_extremum)
        ext_a = y_div_x[ext_row, ext_col]
        chunk = max(1, _MAX_ELEMENTS // n)
        values = []
        for rows, cand in zip(ext_row.split(chunk), ext_a.split(chunk)):
            err = (cand[:, None] * x[rows] - y[rows]).abs() * w[rows]
            err = err.clamp_max(trunc_rows[rows] if trunc_rows is not None else t)
            values.append(err.sum(dim=-1))
        ext_value = torch.cat(values)
        minima, arg = _scatter_min(ext_value, ext_row, batch)
        index = ext_col[arg]
    a = torch.gather(y, -1, index[:, None]) / torch.gather(x, -1, index[:, None]).clamp_min(eps)
    return a.reshape(batch_shape), minima.reshape(batch_shape), index.reshape(batch_shape)


def align_depth_scale(
    depth_src: torch.Tensor, depth_tgt: torch.Tensor, weight: torch.Tensor | None, trunc: _Trunc = None
) -> torch.Tensor:
    """Scale ``a`` minimising the (truncated) weighted L1 distance ``|a src - tgt|``; ``(..., N)`` -> ``(...)``."""
    return align(depth_src, depth_tgt, weight, trunc)[0]


def _anchor_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.where(weight > 0)


def _trunc_rows(trunc: _Trunc, like: torch.Tensor, batch_shape: torch.Size, m: int) -> _Trunc:
    """``trunc`` as per-row values ``(B, m)`` when it is a tensor (broadcast to ``(*batch_shape, m)``), else as is."""
    if isinstance(trunc, torch.Tensor):
        return torch.broadcast_to(trunc.to(like), (*batch_shape, m)).reshape(math.prod(batch_shape), m)
    return trunc


def _best_anchors(
    src: torch.Tensor,
    tgt: torch.Tensor,
    w: torch.Tensor,
    anchor_b: torch.Tensor,
    src_anchor: torch.Tensor,
    tgt_anchor: torch.Tensor,
    trunc: _Trunc,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The anchor search of the scale + shift solvers (module docstring): for every anchor, :func:`align` on its
    row with the anchor subtracted, in chunks of about ``_MAX_ELEMENTS`` elements; per row the anchor of least loss.

    Args:
        src, tgt: ``(B, N, K)`` rows of ``N`` points with ``K`` coordinates (``K = 1`` for depth).
        w: ``(B, N)`` weights, shared by the ``K`` coordinates of a point.
        anchor_b: ``(A,)`` row of each anchor.
        src_anchor, tgt_anchor: ``(A, K)`` what is subtracted from the anchor's row.
        trunc: None, a float, or per-row values ``(B, N * K)`` (see :func:`_trunc_rows`).

    Returns:
        ``(best, has, index)``: ``best (B,)`` the winning anchor's position in ``anchor_b`` (0 where the row has
        none), ``has (B,)`` whether the row has an anchor, ``index (A,)`` each anchor's solution index in
        ``[0, N * K)`` (point-major, as ``src.flatten(-2)``).  No gradient.
    """
    b, n, k = src.shape
    with torch.no_grad():
        losses, indices = [], []
        chunk = max(1, _MAX_ELEMENTS // (k * n))
        for start in range(0, anchor_b.numel(), chunk):
            sl = slice(start, start + chunk)
            rows = anchor_b[sl]
            _, loss, index = align(
                (src[rows] - src_anchor[sl, None, :]).flatten(-2),
                (tgt[rows] - tgt_anchor[sl, None, :]).flatten(-2),
                w[rows, :, None].expand(-1, -1, k).flatten(-2),
                trunc[rows] if isinstance(trunc, torch.Tensor) else trunc,
            )
            losses.append(loss)
            indices.append(index)
        _, best = _scatter_min(torch.cat(losses), anchor_b, b)
    return best.clamp_min(0), best >= 0, torch.cat(indices)


def align_depth_affine(
    depth_src: torch.Tensor, depth_tgt: torch.Tensor, weight: torch.Tensor | None, trunc: _Trunc = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and shift minimising the (truncated) weighted L1 distance ``|scale src + shift - tgt|``.

    Anchor scheme (see the module docstring); the result is recomputed from the two defining pixels:
    ``scale = (tgt2 - tgt1) / (src2 - src1)`` (divisor 1e-7 if equal), ``shift = tgt1 - scale src1``.

    Args:
        depth_src, depth_tgt, weight: ``(..., N)``.
        trunc: None, float or tensor broadcastable to ``(..., N)``.

    Returns:
        ``(scale, shift)``, each ``(...)``; ``(0, 0)`` for rows without positive weight.
    """
    _check_tensors("align_depth_affine", depth_src, depth_tgt)
    if weight is None:
        weight = torch.ones_like(depth_src)
    if depth_src.shape != depth_tgt.shape or weight.shape != depth_src.shape:
        raise GeometryError(
            f"align_depth_affine: expected equal shapes (..., N), found src {tuple(depth_src.shape)}, "
            f"tgt {tuple(depth_tgt.shape)}, weight {tuple(weight.shape)}"
        )
    batch_shape, n = depth_src.shape[:-1], depth_src.shape[-1]
    batch = math.prod(batch_shape)
    src, tgt, w = depth_src.reshape(batch, n), depth_tgt.reshape(batch, n), weight.reshape(batch, n)
    anchor_b, anchor_n = _anchor_rows(w)
    if anchor_b.numel() == 0:
        zeros = torch.zeros(batch_shape, dtype=src.dtype, device=src.device)
        return zeros, zeros.clone()
    best, has, index = _best_anchors(
        src[..., None],
        tgt[..., None],
        w,
        anchor_b,
        src[anchor_b, anchor_n].detach()[:, None],
        tgt[anchor_b, anchor_n].detach()[:, None],
        _trunc_rows(trunc, src, batch_shape, n),
    )
    index_1 = anchor_n[best]
    index_2 = index[best]
    tgt_1, src_1 = tgt.gather(1, index_1[:, None])[:, 0], src.gather(1, index_1[:, None])[:, 0]
    tgt_2, src_2 = tgt.gather(1, index_2[:, None])[:, 0], src.gather(1, index_2[:, None])[:, 0]
    scale = (tgt_2 - tgt_1) / torch.where(src_2 != src_1, src_2 - src_1, 1e-7)
    shift = tgt_1 - scale * src_1
    scale = torch.where(has, scale, 0.0)
    shift = torch.where(has, shift, 0.0)
    return scale.reshape(batch_shape), shift.reshape(batch_shape)


def _check_points(name: str, src: torch.Tensor, tgt: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    _check_tensors(name, src, tgt)
    if src.ndim < 2 or src.shape[-1] != 3 or tgt.shape != src.shape:
        raise GeometryError(
            f"{name}: expected points_src and points_tgt of equal shape (..., N, 3), found "
            f"{tuple(src.shape)} and {tuple(tgt.shape)}"
        )
    if weight is None:
        return torch.ones(src.shape[:-1], dtype=src.dtype, device=src.device)
    if weight.shape != src.shape[:-1]:
        raise GeometryError(f"{name}: expected weight of shape {tuple(src.shape[:-1])}, found {tuple(weight.shape)}")
    return weight


def align_points_scale(
    points_src: torch.Tensor, points_tgt: torch.Tensor, weight: torch.Tensor | None, trunc: _Trunc = None
) -> torch.Tensor:
    """Scale minimising the (truncated) weighted L1 distance of all coordinates, ``(..., N, 3)`` -> ``(...)``
    (only positive solutions are meaningful; filter negative scales)."""
    weight = _check_points("align_points_scale", points_src, points_tgt, weight)
    w3 = weight[..., None].expand_as(points_src).flatten(-2)
    return align(points_src.flatten(-2), points_tgt.flatten(-2), w3, trunc)[0]


def _align_points_anchored(
    name: str,
    points_src: torch.Tensor,
    points_tgt: torch.Tensor,
    weight: torch.Tensor | None,
    trunc: _Trunc,
    z_only: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    weight = _check_points(name, points_src, points_tgt, weight)
    batch_shape, n = points_src.shape[:-2], points_src.shape[-2]
    batch = math.prod(batch_shape)
    dtype, device = points_src.dtype, points_src.device
    src, tgt, w = points_src.reshape(batch, n, 3), points_tgt.reshape(batch, n, 3), weight.reshape(batch, n)
    anchor_b, anchor_n = _anchor_rows(w)
    if anchor_b.numel() == 0:
        zeros = torch.zeros((*batch_shape, 3), dtype=dtype, device=device)
        return zeros[..., 0].clone(), zeros
    src_anchor, tgt_anchor = src[anchor_b, anchor_n].detach(), tgt[anchor_b, anchor_n].detach()  # (A, 3)
    if z_only:
        zeros = torch.zeros_like(src_anchor[:, 0])
        src_anchor = torch.stack([zeros, zeros, src_anchor[:, 2]], dim=-1)
        tgt_anchor = torch.stack([zeros, zeros, tgt_anchor[:, 2]], dim=-1)
    best, has, index = _best_anchors(
        src, tgt, w, anchor_b, src_anchor, tgt_anchor, _trunc_rows(trunc, src, batch_shape, 3 * n)
    )
    index_2 = index[best]  # in [0, 3n)
    index_1 = anchor_n[best] * 3 + index_2 % 3
    if z_only:
        zeros = torch.zeros_like(src[..., 2])
        src_ref = torch.stack([zeros, zeros, src[..., 2]], dim=-1)
        tgt_ref = torch.stack([zeros, zeros, tgt[..., 2]], dim=-1)
    else:
        src_ref, tgt_ref = src, tgt
    src_1 = src_ref.flatten(-2).gather(1, index_1[:, None])[:, 0]
    tgt_1 = tgt_ref.flatten(-2).gather(1, index_1[:, None])[:, 0]
    src_2 = src.flatten(-2).gather(1, index_2[:, None])[:, 0]
    tgt_2 = tgt.flatten(-2).gather(1, index_2[:, None])[:, 0]
    scale = (tgt_2 - tgt_1) / torch.where(src_2 != src_1, src_2 - src_1, 1.0)
    anchor_idx = (index_1 // 3)[:, None, None].expand(-1, -1, 3)
    shift = tgt_ref.gather(1, anchor_idx)[:, 0] - scale[:, None] * src_ref.gather(1, anchor_idx)[:, 0]
    scale = torch.where(has, scale, 0.0)
    shift = torch.where(has[:, None], shift, 0.0)
    return scale.reshape(batch_shape), shift.reshape(*batch_shape, 3)


def align_points_scale_z_shift(
    points_src: torch.Tensor, points_tgt: torch.Tensor, weight: torch.Tensor | None, trunc: _Trunc = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shared xyz scale and a z-only shift: ``min sum_i w_i |scale * src_i + (0, 0, dz) - tgt_i|_1`` (truncated
    per coordinate when ``trunc`` is given).

    Anchors subtract only the z of the anchor point; the weight is broadcast to the 3 coordinates.

    Args:
        points_src, points_tgt: ``(..., N, 3)``; weight: ``(..., N)``; trunc: None / float / tensor ``(..., 3N)``.

    Returns:
        ``(scale (...), shift (..., 3))`` with ``shift = (0, 0, dz)``; zeros for rows without positive weight.
    """
    return _align_points_anchored("align_points_scale_z_shift", points_src, points_tgt, weight, trunc, z_only=True)


def align_points_scale_xyz_shift(
    points_src: torch.Tensor, points_tgt: torch.Tensor, weight: torch.Tensor | None, trunc: _Trunc = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shared xyz scale and a full xyz shift: ``min sum_i w_i |scale * src_i + t - tgt_i|_1`` (truncated per
    coordinate when ``trunc`` is given).  Anchors subtract the whole anchor point.

    Returns:
        ``(scale (...), shift (..., 3))``; zeros for rows without positive weight.
    """
    return _align_points_anchored("align_points_scale_xyz_shift", points_src, points_tgt, weight, trunc, z_only=False)


def align_points_z_shift(
    points_src: torch.Tensor, points_tgt: torch.Tensor, weight: torch.Tensor | None, trunc: _Trunc = None
) -> torch.Tensor:
    """z shift only: ``dz`` minimising ``sum_i w_i |src_z + dz - tgt_z|`` (truncated if given).

    Returns:
        ``(..., 3)`` shift ``(0, 0, dz)``.
    """
    weight = _check_points("align_points_z_shift", points_src, points_tgt, weight)
    dz = align(torch.ones_like(points_src[..., 2]), points_tgt[..., 2] - points_src[..., 2], weight, trunc)[0]
    return torch.stack([torch.zeros_like(dz), torch.zeros_like(dz), dz], dim=-1)


def align_points_xyz_shift(
    points_src: torch.Tensor, points_tgt: torch.Tensor, weight: torch.Tensor | None, trunc: _Trunc = None
) -> torch.Tensor:
    """xyz shift only, per coordinate: ``t_c`` minimising ``sum_i w_i |src_ic + t_c - tgt_ic|`` (truncated if
    given).

    Returns:
        ``(..., 3)`` shift.
    """
    weight = _check_points("align_points_xyz_shift", points_src, points_tgt, weight)
    return align(
        torch.ones_like(points_src).swapaxes(-2, -1),
        (points_tgt - points_src).swapaxes(-2, -1),
        weight[..., None, :],
        trunc,
    )[0]


def align_affine_lstsq(
    x: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares affine fit ``y ~ a x + b`` via ``torch.linalg.lstsq`` on ``[sqrt(w) x, 1] [a, b]^T = sqrt(w) y``.

    Note: as in the official code the column of ones is NOT weighted (so this is the weighted problem only for
    ``w`` = const).

    Args:
        x, y: ``(..., N)``; w: ``(..., N)`` or None.

    Returns:
        ``(a, b)``, each ``(...)``.
    """
    _check_tensors("align_affine_lstsq", x, y)
    if x.shape != y.shape or (w is not None and w.shape != x.shape):
        raise GeometryError(
            f"align_affine_lstsq: expected equal shapes (..., N), found x {tuple(x.shape)}, y {tuple(y.shape)}"
            + ("" if w is None else f", w {tuple(w.shape)}")
        )
    w_sqrt = torch.ones_like(x) if w is None else w.sqrt()
    lhs = torch.stack([w_sqrt * x, torch.ones_like(x)], dim=-1).to(torch.float64)
    rhs = (w_sqrt * y)[..., None].to(torch.float64)
    # Solved in float64 with an SVD driver on the CPU: its default driver (gelsy) treats a column as zero when its
    # share of the norm is below eps * max(M, N) - with 1e5 float32 pixels, small x (the disparities of a
    # prediction 30x too far) were dropped and a fit of scale 30 came out as 0.003.  CUDA has one driver (QR, full
    # rank), where the official evaluation runs.
    driver = "gelsd" if x.device.type == "cpu" else None
    a, b = torch.linalg.lstsq(lhs, rhs, driver=driver)[0].squeeze(-1).unbind(-1)
    return a.to(x.dtype), b.to(x.dtype)
