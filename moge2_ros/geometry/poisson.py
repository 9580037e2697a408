"""Geometry completion (pure solver; re-exported by :mod:`moge2_ros.refine.poisson`): a Poisson equation in log-depth, guided by a model's prediction.

Given a real depth map with holes (missing or filtered pixels) and a model's dense depth prediction of the same
camera, the unknown pixels ``U`` get the log-depth ``f`` that minimises

    ``sum over 4-neighbour pairs (p, q) with p or q in U of ((f_p - f_q) - (g_p - g_q))^2``,   ``g = log d_hat``

with the kept real log-depth as fixed boundary values (Dirichlet).  A pair is used only when both pixels have a
valid prediction and each is either unknown or known.  Working in log-depth makes the completion invariant to a
global scale error of the model (``log(s d_hat)`` has the gradients of ``log d_hat``): only its *relative* shape
is used, the metric level comes from the real boundary.

The normal equations are a sparse, symmetric positive-definite graph Laplacian ``L_UU f_U = b`` on every
connected component of ``U`` that touches a known pixel (an *anchored* component); components without any real
anchor have no defined level and stay unfilled (reported in :attr:`PoissonResult.unanchored`).

Two solvers build the same system (:func:`poisson_system`):

* ``"scipy"``: the sparse matrix in CSR form and a direct sparse factorisation (SuperLU), on the CPU;
* ``"torch"``: a matrix-free 5-point operator and Jacobi-preconditioned conjugate gradient on the input's device
  (the GPU when there is one), started from a cascadic multigrid guess (the same problem solved on 2x coarser
  grids first, prolongated with the guide's fine detail).

Units: depth in metres (any positive unit works: the problem is scale-equivariant).  Maps are ``(H, W)``;
``NaN`` marks invalid depth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from moge2_ros.errors import GeometryError

__all__ = [
    "PoissonSystem",
    "PoissonResult",
    "Solver",
    "poisson_system",
    "solve_log_depth_poisson",
    "scipy_available",
]

Solver = Literal["auto", "scipy", "torch"]


@dataclass
class PoissonSystem:
    """The discrete system of one completion problem, on the ``(H, W)`` grid.

    Attributes:
        unknown: ``(H, W)`` bool, anchored unknown pixels (the rows of the system).
        unanchored: ``(H, W)`` bool, unknown pixels in components without a known neighbour (left unsolved).
        edge_h: ``(H, W-1)`` bool, pair ``((i, j), (i, j+1))`` is an unknown-unknown coupling (off-diagonal -1).
        edge_v: ``(H-1, W)`` bool, pair ``((i, j), (i+1, j))`` likewise.
        diag: ``(H, W)`` float, number of used pairs at each unknown pixel (the Laplacian diagonal), 0 elsewhere.
        rhs: ``(H, W)`` float, guide divergence plus known boundary values, 0 outside ``unknown``.
        known_log: ``(H, W)`` float, log of the boundary depth (0 where not known).
        guide_log: ``(H, W)`` float, log of the guide depth (0 where invalid).
    """

    unknown: torch.Tensor
    unanchored: torch.Tensor
    edge_h: torch.Tensor
    edge_v: torch.Tensor
    diag: torch.Tensor
    rhs: torch.Tensor
    known_log: torch.Tensor
    guide_log: torch.Tensor

    def __post_init__(self) -> None:
        dtype = self.rhs.dtype
        self._mask_f = self.unknown.to(dtype)
        self._eh = self.edge_h.to(dtype)
        self._ev = self.edge_v.to(dtype)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``L_UU x`` for ``x (H, W)`` (values outside ``unknown`` are ignored); zero outside ``unknown``."""
        x = x * self._mask_f
        out = self.diag * x
        out[:, :-1].addcmul_(self._eh, x[:, 1:], value=-1)
        out[:, 1:].addcmul_(self._eh, x[:, :-1], value=-1)
        out[:-1, :].addcmul_(self._ev, x[1:, :], value=-1)
        out[1:, :].addcmul_(self._ev, x[:-1, :], value=-1)
        return out.mul_(self._mask_f)


@dataclass
class PoissonResult:
    """Output of :func:`solve_log_depth_poisson`.

    Attributes:
        depth: ``(H, W)`` float32 metres: the known depth where known, the solution where filled, NaN elsewhere.
        filled: ``(H, W)`` bool, pixels that received a value from the solve.
        unanchored: ``(H, W)`` bool, requested pixels left unfilled because their region touches no known pixel
            (or their guide is invalid).
        solver: the solver used (``"scipy"`` or ``"torch"``).
        iterations: CG iterations at the finest level (0 for the direct solver).
        residual: final relative residual ``|b - A x| / |b|`` of the system.
    """

    depth: torch.Tensor
    filled: torch.Tensor
    unanchored: torch.Tensor
    solver: str
    iterations: int
    residual: float


def scipy_available() -> bool:
    """Whether ``scipy`` (the ``refine`` extra) can be imported."""
    try:
        import scipy.sparse  # noqa: F401
    except ImportError:
        return False
    return True


def _as_map(name: str, value: torch.Tensor | np.ndarray, shape: tuple[int, int] | None) -> torch.Tensor:
    t = torch.as_tensor(value)
    if t.ndim != 2 or (shape is not None and tuple(t.shape) != shape):
        expected = "(H, W)" if shape is None else str(shape)
        raise GeometryError(f"poisson: expected {name} of shape {expected}, found {tuple(t.shape)}")
    return t


def _valid_positive(depth: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(depth) & (depth > 0)


def _anchored_components(unknown: torch.Tensor, edge_h: torch.Tensor, edge_v: torch.Tensor,
                         seed: torch.Tensor) -> torch.Tensor:
    """Pixels of ``unknown`` connected (through the unknown-unknown pairs ``edge_h``/``edge_v``) to a pixel of
    ``seed`` (unknown pixels with a used pair to a known pixel): flood fill by repeated 4-neighbour dilation,
    restricted to the pairs, until nothing changes."""
    reached = seed & unknown
    while True:
        grown = reached.clone()
        grown[:, :-1] |= edge_h & reached[:, 1:]
        grown[:, 1:] |= edge_h & reached[:, :-1]
        grown[:-1, :] |= edge_v & reached[1:, :]
        grown[1:, :] |= edge_v & reached[:-1, :]
        # Several cheap steps per convergence check (the check is a host sync).
        for _ in range(7):
            grown[:, :-1] |= edge_h & grown[:, 1:]
            grown[:, 1:] |= edge_h & grown[:, :-1]
            grown[:-1, :] |= edge_v & grown[1:, :]
            grown[1:, :] |= edge_v & grown[:-1, :]
        if bool(torch.equal(grown, reached)):
            return reached
        reached = grown


def _anchored_components_scipy(unknown: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """Same as :func:`_anchored_components` with ``scipy.ndimage.label`` (4-connectivity on ``unknown``; unknown
    neighbours are always coupled because both have a valid guide)."""
    from scipy import ndimage

    labels, _ = ndimage.label(unknown.cpu().numpy(), structure=[[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    anchored_labels = np.unique(labels[seed.cpu().numpy() & (labels > 0)])
    reached = np.isin(labels, anchored_labels) & (labels > 0)
    return torch.from_numpy(reached).to(unknown.device)


def poisson_system(
    known_depth: torch.Tensor | np.ndarray,
    guide_depth: torch.Tensor | np.ndarray,
    unknown: torch.Tensor | np.ndarray | None = None,
    dtype: torch.dtype = torch.float64,
    use_scipy_labels: bool = False,
) -> PoissonSystem:
    """Build the log-depth Poisson system (see the module docstring).

    Args:
        known_depth: ``(H, W)`` boundary depth in metres, NaN (or <= 0) where not known.
        guide_depth: ``(H, W)`` model depth of the same camera, NaN where the model has no valid value.
        unknown: ``(H, W)`` bool, pixels to solve for (default: every pixel without known depth).  Pixels that
            are known or have no valid guide are never solved.
        dtype: float dtype of the system (float64 on CPU; float32 is enough on a GPU).
        use_scipy_labels: find anchored regions with ``scipy.ndimage`` instead of the torch flood fill.

    Returns:
        :class:`PoissonSystem` on the device of ``guide_depth``.
    """
    guide = _as_map("guide_depth", guide_depth, None)
    shape = (int(guide.shape[0]), int(guide.shape[1]))
    if shape[0] < 2 or shape[1] < 2:
        raise GeometryError(f"poisson: expected maps of at least 2x2 pixels, found {shape}")
    device = guide.device
    known = _as_map("known_depth", known_depth, shape).to(device=device, dtype=dtype)
    guide = guide.to(dtype=dtype)
    known_valid = _valid_positive(known)
    guide_valid = _valid_positive(guide)
    if unknown is None:
        unknown_req = ~known_valid
    else:
        unknown_req = _as_map("unknown", unknown, shape).to(device=device, dtype=torch.bool) & ~known_valid
    unknown_req = unknown_req & guide_valid
    node = guide_valid & (unknown_req | known_valid)  # pixels that take part in some pair
    g = torch.where(guide_valid, guide, 1).log()
    k = torch.where(known_valid, known, 1).log()

    # A pair is used when both ends take part and at least one is unknown.
    pair_h = node[:, :-1] & node[:, 1:] & (unknown_req[:, :-1] | unknown_req[:, 1:])
    pair_v = node[:-1, :] & node[1:, :] & (unknown_req[:-1, :] | unknown_req[1:, :])
    uu_h = pair_h & unknown_req[:, :-1] & unknown_req[:, 1:]
    uu_v = pair_v & unknown_req[:-1, :] & unknown_req[1:, :]
    # Unknown pixels with a used pair to a known pixel.
    seed = torch.zeros_like(unknown_req)
    kh = pair_h & known_valid[:, 1:]
    seed[:, :-1] |= kh
    kh = pair_h & known_valid[:, :-1]
    seed[:, 1:] |= kh
    kv = pair_v & known_valid[1:, :]
    seed[:-1, :] |= kv
    kv = pair_v & known_valid[:-1, :]
    seed[1:, :] |= kv
    seed &= unknown_req
    if use_scipy_labels:
        anchored = _anchored_components_scipy(unknown_req, seed)
    else:
        anchored = _anchored_components(unknown_req, uu_h, uu_v, seed)
    unanchored = unknown_req & ~anchored
    # Restrict pairs to the anchored unknowns (unanchored components are disconnected from them).
    pair_h &= anchored[:, :-1] | anchored[:, 1:]
    pair_v &= anchored[:-1, :] | anchored[1:, :]
    uu_h &= anchored[:, :-1]
    uu_v &= anchored[:-1, :]

    ph, pv = pair_h.to(dtype), pair_v.to(dtype)
    diag = torch.zeros(shape, dtype=dtype, device=device)
    diag[:, :-1] += ph
    diag[:, 1:] += ph
    diag[:-1, :] += pv
    diag[1:, :] += pv
    # Guide divergence: sum over used pairs of (g_p - g_q), accumulated at both ends.
    dh = ph * (g[:, :-1] - g[:, 1:])
    dv = pv * (g[:-1, :] - g[1:, :])
    rhs = torch.zeros(shape, dtype=dtype, device=device)
    rhs[:, :-1] += dh
    rhs[:, 1:] -= dh
    rhs[:-1, :] += dv
    rhs[1:, :] -= dv
    # Known neighbours move to the right-hand side.
    kf = torch.where(known_valid, k, 0)
    rhs[:, :-1] += ph * kf[:, 1:]
    rhs[:, 1:] += ph * kf[:, :-1]
    rhs[:-1, :] += pv * kf[1:, :]
    rhs[1:, :] += pv * kf[:-1, :]
    diag = torch.where(anchored, diag, 0)
    rhs = torch.where(anchored, rhs, 0)
    return PoissonSystem(anchored, unanchored, uu_h, uu_v, diag, rhs, torch.where(known_valid, k, 0),
                         torch.where(guide_valid, g, 0))


def _solve_scipy(system: PoissonSystem) -> tuple[torch.Tensor, int]:
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    unknown = system.unknown.cpu().numpy()
    height, width = unknown.shape
    n = int(unknown.sum())
    index = np.full(unknown.shape, -1, dtype=np.int64)
    index[unknown] = np.arange(n)
    rows = [index[unknown]]
    cols = [index[unknown]]
    vals = [system.diag.cpu().numpy()[unknown]]
    for edge, (a, b) in (
        (system.edge_h.cpu().numpy(), (index[:, :-1], index[:, 1:])),
        (system.edge_v.cpu().numpy(), (index[:-1, :], index[1:, :])),
    ):
        ia, ib = a[edge], b[edge]
        rows += [ia, ib]
        cols += [ib, ia]
        vals += [np.full(ia.shape, -1.0), np.full(ib.shape, -1.0)]
    matrix = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    rhs = system.rhs.cpu().numpy()[unknown]
    solution = spsolve(matrix, rhs, permc_spec="COLAMD")
    x = np.zeros((height, width), dtype=np.float64)
    x[unknown] = solution
    return torch.from_numpy(x).to(device=system.rhs.device, dtype=system.rhs.dtype), 0


def _conjugate_gradient(system: PoissonSystem, x0: torch.Tensor, tol: float, max_iter: int) -> tuple[torch.Tensor, int]:
    """Jacobi-preconditioned CG on ``L_UU x = b`` from ``x0`` (relative residual ``tol``)."""
    mask = system.unknown
    b = system.rhs
    inv_diag = torch.where(mask, 1.0 / system.diag.clamp_min(1), 0)
    x = torch.where(mask, x0, 0)
    r = b - system.apply(x)
    b_norm = float(torch.linalg.vector_norm(b))
    if b_norm == 0:
        b_norm = 1.0
    z = inv_diag * r
    p = z.clone()
    rz = torch.dot(r.flatten(), z.flatten())
    iterations = 0
    check_every = 10  # host syncs are expensive on a GPU
    tiny = torch.finfo(b.dtype).tiny
    for iterations in range(1, max_iter + 1):
        ap = system.apply(p)
        alpha = rz / torch.dot(p.flatten(), ap.flatten()).clamp_min(tiny)
        x.add_(alpha * p)
        r.sub_(alpha * ap)
        if iterations % check_every == 0 and float(torch.linalg.vector_norm(r)) <= tol * b_norm:
            break
        z = inv_diag * r
        rz_new = torch.dot(r.flatten(), z.flatten())
        p.mul_(rz_new / rz.clamp_min(tiny)).add_(z)
        rz = rz_new
    return x, iterations


def _downsample_log(values: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """2x2 mean of ``values`` over valid pixels (odd sizes padded as invalid) -> coarse ``(values, valid)``."""
    height, width = values.shape
    pad = (0, width % 2, 0, height % 2)
    v = F.pad(torch.where(valid, values, 0)[None, None], pad)
    c = F.pad(valid.to(values.dtype)[None, None], pad)
    total = F.avg_pool2d(v, 2)[0, 0] * 4
    count = F.avg_pool2d(c, 2)[0, 0] * 4
    return total / count.clamp_min(1), count > 0


def _upsample(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    return x.repeat_interleave(2, dim=0).repeat_interleave(2, dim=1)[: shape[0], : shape[1]]


def _initial_guess(system: PoissonSystem, known_depth: torch.Tensor, guide_depth: torch.Tensor,
                   min_size: int, tol: float, max_iter: int) -> torch.Tensor:
    """Cascadic multigrid start: solve the 2x-coarser problem (recursively) and prolongate it with the guide's
    fine detail, ``x0_p = f_coarse(block) + g_p - g_coarse(block)``.  At the coarsest level, the guide shifted
    by the median log offset between known depth and guide."""
    height, width = system.unknown.shape
    known_valid = _valid_positive(known_depth)
    guide_valid = _valid_positive(guide_depth)
    both = known_valid & guide_valid
    if bool(both.any()):
        offset = (system.known_log - system.guide_log)[both].median()
    else:
        offset = torch.zeros((), dtype=system.rhs.dtype, device=system.rhs.device)
    fallback = system.guide_log + offset
    if min(height, width) < 2 * min_size:
        return fallback
    k_log, k_valid = _downsample_log(system.known_log, known_valid)
    g_log, g_valid = _downsample_log(system.guide_log, guide_valid)
    nan = torch.full_like(k_log, torch.nan)
    coarse_known = torch.where(k_valid, k_log.exp(), nan)
    coarse_guide = torch.where(g_valid, g_log.exp(), nan)
    coarse = poisson_system(coarse_known, coarse_guide, dtype=system.rhs.dtype)
    if not bool(coarse.unknown.any()):
        return fallback
    x0 = _initial_guess(coarse, coarse_known, coarse_guide, min_size, tol, max_iter)
    xc, _ = _conjugate_gradient(coarse, x0, tol, max_iter)
    field = torch.where(coarse.unknown, xc, torch.where(k_valid, k_log, torch.nan))
    defined = torch.isfinite(field) & g_valid
    up_field = _upsample(torch.where(defined, field - g_log, 0), (height, width))
    up_defined = _upsample(defined, (height, width))
    guess = system.guide_log + up_field
    return torch.where(up_defined, guess, fallback)


def solve_log_depth_poisson(
    known_depth: torch.Tensor | np.ndarray,
    guide_depth: torch.Tensor | np.ndarray,
    unknown: torch.Tensor | np.ndarray | None = None,
    solver: Solver = "auto",
    tol: float = 1e-6,
    max_iter: int = 2000,
    multigrid_min_size: int = 16,
) -> PoissonResult:
    """Fill ``unknown`` pixels of ``known_depth`` from the log-depth gradients of ``guide_depth``.

    Args:
        known_depth: ``(H, W)`` real depth in metres, NaN where unknown (these values are kept exactly).
        guide_depth: ``(H, W)`` model depth of the same camera and pixel grid, NaN where invalid; its global scale
            does not matter.
        unknown: ``(H, W)`` bool, pixels to fill (default: all pixels without known depth).
        solver: ``"scipy"`` (sparse direct, CPU), ``"torch"`` (multigrid-started Jacobi-PCG on the guide's device)
            or ``"auto"`` (torch on CUDA tensors, scipy on the CPU when installed, else torch).
        tol: relative residual of the CG solver.
        max_iter: CG iteration limit per level.
        multigrid_min_size: coarsest grid side of the cascadic start.

    Returns:
        :class:`PoissonResult` (tensors on the guide's device).

    Raises:
        GeometryError: shapes differ or are not ``(H, W)``; ``solver="scipy"`` without scipy installed.
    """
    guide = _as_map("guide_depth", guide_depth, None)
    if solver not in ("auto", "scipy", "torch"):
        raise GeometryError(f"poisson: solver must be 'auto', 'scipy' or 'torch', found {solver!r}")
    if solver == "auto":
        solver = "torch" if guide.device.type != "cpu" or not scipy_available() else "scipy"
    if solver == "scipy" and not scipy_available():
        raise GeometryError("poisson: solver 'scipy' needs scipy (pip install 'moge2_ros[refine]'); "
                            "or use solver='torch'")
    dtype = torch.float64 if guide.device.type == "cpu" else torch.float32
    guide = guide.to(dtype)
    known = _as_map("known_depth", known_depth, tuple(guide.shape)).to(device=guide.device, dtype=dtype)
    system = poisson_system(known, guide, unknown, dtype=dtype, use_scipy_labels=solver == "scipy")
    iterations = 0
    if bool(system.unknown.any()):
        if solver == "scipy":
            x, iterations = _solve_scipy(system)
        else:
            x0 = _initial_guess(system, known, guide, multigrid_min_size, tol, max_iter)
            x, iterations = _conjugate_gradient(system, x0, tol, max_iter)
        residual_norm = float(torch.linalg.vector_norm(system.rhs - system.apply(x)))
        b_norm = float(torch.linalg.vector_norm(system.rhs))
        residual = residual_norm / b_norm if b_norm > 0 else residual_norm
    else:
        x = torch.zeros_like(system.rhs)
        residual = 0.0
    known_valid = _valid_positive(known)
    out = torch.where(known_valid, known, torch.nan)
    out = torch.where(system.unknown, x.exp(), out)
    if not math.isfinite(residual):
        raise GeometryError(f"poisson: the {solver} solver diverged (residual {residual})")
    requested = ~known_valid if unknown is None else (
        _as_map("unknown", unknown, tuple(guide.shape)).to(device=guide.device, dtype=torch.bool) & ~known_valid)
    return PoissonResult(
        depth=out.to(torch.float32),
        filled=system.unknown.clone(),
        unanchored=requested & ~system.unknown,
        solver=solver,
        iterations=iterations,
        residual=residual,
    )
