"""Parity and behaviour tests of moge2_ros.geometry.focal_shift."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from moge2_ros.errors import GeometryError
from moge2_ros.geometry import (
    depth_to_points,
    focal_to_normalized_intrinsics,
    fov_x_to_focal,
    intrinsics_from_focal_center,
    recover_focal_shift,
    recover_shift_with_intrinsics,
)
from moge2_ros.geometry.focal_shift import _numpy_pairwise_sum, _recover_focal_shift_impl

FOCAL_SHIFT_CASES = [
    "recover_focal_shift_nomask_batched",
    "recover_focal_shift_mask_batched",
    "recover_focal_shift_mask_focal_given",
    "recover_focal_shift_unbatched_large",
    "recover_focal_shift_unbatched_mask_large",
    "recover_focal_shift_tiny_mask_upsampled",
    "recover_focal_shift_degenerate_mask_lt2_lr_points",
]
INFER_CASES = [("i_fovnone", "i", None), ("i_fov60", "i", 60.0), ("ii_fovnone", "ii", None)]
SQRT_EPS = float(np.finfo(np.float64).eps) ** 0.5


@pytest.fixture(scope="module")
def small(reference_dir):
    ref = reference_dir
    index = json.loads((ref / "public_small.json").read_text())
    arrays = np.load(ref / "public_small.npz")
    return index["cases"], arrays


@pytest.fixture(scope="module")
def manifest(reference_dir):
    ref = reference_dir
    return json.loads((ref / "manifest.json").read_text())


def _inputs(case: dict, arrays) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(arrays[spec["array"]]) for name, spec in case["inputs"].items()}


def _max_ulp(got: np.ndarray, want: np.ndarray) -> int:
    got = np.asarray(got, np.float32).reshape(-1)
    want = np.asarray(want, np.float32).reshape(-1)
    gi = got.view(np.int32).astype(np.int64)
    wi = want.view(np.int32).astype(np.int64)
    return int(np.abs(gi - wi).max()) if got.size else 0


def _expected_evaluations(trials: list[float], final: float) -> list[float]:
    """The point sequence scipy evaluates for our trajectory: f(0), FD(0), then per trial f(t) and, if accepted,
    FD(t); after a rejected last trial scipy re-evaluates f and FD at the result."""

    def fd(s: float) -> float:
        h = SQRT_EPS * (1.0 if s >= 0 else -1.0) * max(1.0, abs(s))
        return s + ((s + h) - s)

    seq = [0.0, fd(0.0)]
    for i, t in enumerate(trials):
        seq.append(t)
        accepted = i < len(trials) - 1 or t == final
        if accepted:
            seq.append(fd(t))
        else:
            seq += [final, fd(final)]
    return seq


@pytest.mark.parity
def test_all_reference_cases_are_covered(small):
    cases, _ = small
    present = sorted(name for name in cases if name.startswith("recover_focal_shift"))
    assert present == sorted(FOCAL_SHIFT_CASES)


@pytest.mark.parity
@pytest.mark.parametrize("name", FOCAL_SHIFT_CASES)
def test_recover_focal_shift_matches_official(small, name):
    cases, arrays = small
    case = cases[name]
    args = _inputs(case, arrays)
    focal, shift = recover_focal_shift(args["points"], args.get("mask"), args.get("focal"))
    want_focal = arrays[case["outputs"]["focal"]["array"]]
    want_shift = arrays[case["outputs"]["shift"]["array"]]
    assert focal.dtype == torch.float32 and shift.dtype == torch.float32
    assert tuple(focal.shape) == want_focal.shape and tuple(shift.shape) == want_shift.shape
    assert _max_ulp(focal.numpy(), want_focal) <= 1, (focal, want_focal)
    assert _max_ulp(shift.numpy(), want_shift) <= 1, (shift, want_shift)


@pytest.mark.parity
@pytest.mark.parametrize("name", [n for n in FOCAL_SHIFT_CASES if "degenerate" not in n])
def test_recover_focal_shift_reproduces_scipy_trajectory(small, name):
    cases, arrays = small
    case = cases[name]
    args = _inputs(case, arrays)
    _, _, trials, shift64 = _recover_focal_shift_impl(args["points"], args.get("mask"), args.get("focal"), (64, 64), 20)
    trials = trials.reshape(trials.shape[0], -1)
    calls = case["least_squares_calls"]
    assert trials.shape[1] == len(calls)
    for b, call in enumerate(calls):
        final = float(shift64.reshape(-1)[b])
        assert abs(final - call["x"]) <= 1e-12, (final, call["x"])
        column = trials[:, b].numpy()
        seq = _expected_evaluations([float(v) for v in column[~np.isnan(column)]], final)
        assert len(seq) == len(call["evaluated_x"]), (seq, call["evaluated_x"])
        np.testing.assert_allclose(seq, call["evaluated_x"], rtol=0, atol=1e-12)


@pytest.mark.parity
@pytest.mark.parametrize("key,image,fov", INFER_CASES)
def test_infer_solves_match_manifest(reference_dir, manifest, key, image, fov):
    ref = reference_dir
    points = torch.from_numpy(np.load(ref / f"fwd_{image}_points.npy"))
    mask = torch.from_numpy(np.load(ref / f"fwd_{image}_mask.npy")) > 0.5
    height, width = points.shape[1:3]
    focal_in = None if fov is None else fov_x_to_focal(fov, width / height, points.shape[:1])
    focal, shift, trials, shift64 = _recover_focal_shift_impl(points, mask, focal_in, (64, 64), 20)
    info = manifest["infer"][key]
    assert focal.item() == np.float32(info["focal"])
    assert shift.item() == np.float32(info["shift"])
    call = info["least_squares_calls"][0]
    assert abs(float(shift64[0]) - call["x"]) <= 1e-12
    column = trials[:, 0].numpy()
    ours = [float(v) for v in column[~np.isnan(column)]]
    np.testing.assert_allclose(
        _expected_evaluations(ours, float(shift64[0])), call["evaluated_x"], rtol=0, atol=1e-12
    )
    intrinsics = focal_to_normalized_intrinsics(focal, width / height)[0]
    np.testing.assert_array_equal(intrinsics.numpy(), np.load(ref / f"infer_{key}_intrinsics.npy"))


def test_fov_x_to_focal_official_value_and_broadcast():
    focal = fov_x_to_focal(60.0, 320 / 240, (3,))
    assert focal.shape == (3,) and focal.dtype == torch.float32
    # official infer(fov_x=60) value on the reference machine (manifest infer.i_fov60.focal)
    assert focal[0].item() == 1.3856407403945923
    per_elem = fov_x_to_focal(torch.tensor([45.0, 90.0]), 1.0, (2,))
    expected = (1 / math.sqrt(2)) / np.tan(np.deg2rad([22.5, 45.0]))
    np.testing.assert_allclose(per_elem.numpy(), expected, rtol=1e-6)
    with pytest.raises(GeometryError):
        fov_x_to_focal(torch.tensor([45.0, 90.0]), 1.0, (3,))


def test_focal_to_normalized_intrinsics_formula():
    focal = torch.tensor([1.2, 0.8])
    ar = 4 / 3
    k = focal_to_normalized_intrinsics(focal, ar)
    assert k.shape == (2, 3, 3)
    diag = math.sqrt(1 + ar**2)
    np.testing.assert_allclose(k[:, 0, 0].numpy(), focal.numpy() / 2 * diag / ar, rtol=1e-7)
    np.testing.assert_allclose(k[:, 1, 1].numpy(), focal.numpy() / 2 * diag, rtol=1e-7)
    np.testing.assert_array_equal(k[:, :2, 2].numpy(), 0.5)
    np.testing.assert_array_equal(k[:, 2].numpy(), [[0, 0, 1], [0, 0, 1]])


def test_numpy_pairwise_sum_matches_numpy():
    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        values = (rng.standard_normal((6, 3000)) * 5 + 1).astype(dtype)
        counts = np.array([3000, 0, 5, 8, 129, 2047])
        got = _numpy_pairwise_sum(torch.from_numpy(values), torch.from_numpy(counts)).numpy()
        want = np.array([values[i, : counts[i]].sum() for i in range(6)], dtype=dtype)
        np.testing.assert_array_equal(got, want)


def _synthetic_scene(batch: int, height: int = 48, width: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth positive depth maps and off-centre, non-square normalised intrinsics."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    depth = torch.stack(
        [2.0 + 0.8 * torch.sin(3 * xx + b) + 0.4 * yy * (b + 1) + 0.3 * torch.cos(5 * yy) for b in range(batch)]
    )
    fx = torch.tensor([0.9, 1.1, 0.7, 1.4, 1.0][:batch])
    fy = torch.tensor([1.2, 0.95, 1.0, 1.6, 1.0][:batch])
    cx = torch.tensor([0.45, 0.6, 0.52, 0.3, 0.5][:batch])
    cy = torch.tensor([0.55, 0.4, 0.5, 0.62, 0.5][:batch])
    return depth, intrinsics_from_focal_center(fx, fy, cx, cy)


def test_known_intrinsics_recovers_exact_shift():
    depth, k = _synthetic_scene(4)
    points = depth_to_points(depth, k)
    true_shift = torch.tensor([0.5, -0.7, 1.3, -1.5])
    affine = points.clone()
    affine[..., 2] -= true_shift[:, None, None]
    mask = torch.rand(depth.shape, generator=torch.Generator().manual_seed(0)) > 0.3
    shift = recover_shift_with_intrinsics(affine, k, mask)
    assert shift.dtype == torch.float32 and shift.shape == (4,)
    np.testing.assert_allclose(shift.numpy(), true_shift.numpy(), rtol=0, atol=1e-5)
    # batch of 4 == 4 single calls
    singles = torch.stack([recover_shift_with_intrinsics(affine[i], k[i], mask[i]) for i in range(4)])
    np.testing.assert_array_equal(singles.numpy(), shift.numpy())
    # a shared (3, 3) matrix broadcasts
    shared = recover_shift_with_intrinsics(affine[:1].expand(3, -1, -1, -1), k[0], None)
    np.testing.assert_allclose(shared.numpy(), [0.5] * 3, atol=1e-5)


def test_known_intrinsics_bad_start_and_noise_reach_the_minimum():
    depth, k = _synthetic_scene(2)
    points = depth_to_points(depth, k)
    gen = torch.Generator().manual_seed(1)
    affine = points * (1 + 0.02 * torch.randn(points.shape, generator=gen))
    affine[0, ..., 2] -= 1.9  # close to the feasibility limit: min z + s > 0
    affine[1, ..., 2] += 3.0
    shift = recover_shift_with_intrinsics(affine, k).double()
    # Independent check: the objective on the same low-res samples at a dense grid never beats the answer.
    lr = torch.nn.functional.interpolate(affine.permute(0, 3, 1, 2), (64, 64), mode="nearest").permute(0, 2, 3, 1)
    from moge2_ros.geometry import pixel_center_grid

    grid = pixel_center_grid(64, 48, dtype=torch.float64)
    grid = torch.nn.functional.interpolate(grid[None].permute(0, 3, 1, 2), (64, 64), mode="nearest")[0].permute(1, 2, 0)
    for b in range(2):
        p = lr[b].double().reshape(-1, 3)
        kb = k[b].double()
        ray_b = (grid[..., 1].reshape(-1) - kb[1, 2]) / kb[1, 1]
        ray_a = (grid[..., 0].reshape(-1) - kb[0, 2]) / kb[0, 0]

        def objective(s: torch.Tensor) -> torch.Tensor:
            d = p[:, 2] + s[:, None]
            return ((p[:, 0] / d - ray_a) ** 2 + (p[:, 1] / d - ray_b) ** 2).sum(-1)

        s_hat = shift[b]
        lo = -p[:, 2].min() + 1e-6
        cand = torch.cat([torch.linspace(float(lo), float(s_hat) + 2.0, 4001, dtype=torch.float64), s_hat[None]])
        values = objective(cand)
        assert values[-1] <= values[:-1].min() * (1 + 1e-9)
        assert objective(s_hat[None] - 1e-4) > values[-1] and objective(s_hat[None] + 1e-4) > values[-1]


@pytest.mark.parity
def test_known_intrinsics_equals_tight_optimum_of_official_problem(small):
    """With a centred principal point and square pixels the known-intrinsics objective is the official
    fixed-focal objective divided by focal^2, so its converged answer is scipy's tight optimum."""
    cases, arrays = small
    case = cases["recover_focal_shift_mask_focal_given"]
    args = _inputs(case, arrays)
    height, width = args["points"].shape[-3:-1]
    k = focal_to_normalized_intrinsics(args["focal"], width / height)
    shift = recover_shift_with_intrinsics(args["points"], k, args["mask"])
    tight = [call["tight_optimum_x"] for call in case["least_squares_calls"]]
    np.testing.assert_allclose(shift.numpy(), tight, rtol=0, atol=2e-7)


@pytest.mark.parity
def test_known_intrinsics_finds_tight_optimum_on_model_output(reference_dir, manifest):
    """infer(fov_x=60): the official loose solve stops 1.5e-5 short of the optimum; the converged
    known-intrinsics solve lands on the optimum."""
    ref = reference_dir
    points = torch.from_numpy(np.load(ref / "fwd_i_points.npy"))
    mask = torch.from_numpy(np.load(ref / "fwd_i_mask.npy")) > 0.5
    height, width = points.shape[1:3]
    k = focal_to_normalized_intrinsics(fov_x_to_focal(60.0, width / height, (1,)), width / height)
    shift = recover_shift_with_intrinsics(points, k, mask)
    call = manifest["infer"]["i_fov60"]["least_squares_calls"][0]
    assert abs(call["x"] - call["tight_optimum_x"]) > 1e-5
    assert abs(shift.item() - call["tight_optimum_x"]) < 3e-7


def _ill_conditioned_map(seed: int, size: int = 16) -> torch.Tensor:
    """A nearly constant point map (as an untrained model predicts): ``(size, size, 3)`` float32, no mask."""
    from moge2_ros.geometry.uv import normalized_view_plane_uv

    g = torch.Generator().manual_seed(seed)
    centre = torch.randn(2, generator=g) * 0.5
    spread = 10 ** (-3 * torch.rand(1, generator=g).item())
    depth = 3 + torch.randn(1, generator=g).item()
    uv = normalized_view_plane_uv(size, size)
    points = torch.cat([centre + spread * uv * torch.randn(2, generator=g), torch.full((size, size, 1), depth)], -1)
    return points + 0.01 * torch.randn(points.shape, generator=g)


def _scipy_focal_shift(points: torch.Tensor) -> tuple[np.float32, np.float32, list[float]]:
    """The official problem solved with scipy as the official code does (the map is already at the solve
    resolution, no mask): ``least_squares(method='lm', x0=0, ftol=1e-3)`` on the residual of the closed-form
    focal, in numpy with float32 inputs; returns (focal, shift, every point scipy evaluated)."""
    least_squares = pytest.importorskip("scipy.optimize").least_squares
    from moge2_ros.geometry.uv import normalized_view_plane_uv

    height, width = points.shape[:2]
    uv = normalized_view_plane_uv(width, height).numpy().reshape(-1, 2)
    xyz = points.numpy().reshape(-1, 3)
    xy, z = xyz[:, :2], xyz[:, 2]
    evaluated: list[float] = []

    def residual(shift: np.ndarray) -> np.ndarray:
        evaluated.append(float(shift[0]))
        proj = xy / (z + shift)[:, None]
        focal = (proj * uv).sum() / np.square(proj).sum()
        return (focal * proj - uv).ravel()

    shift = least_squares(residual, x0=0, ftol=1e-3, method="lm").x.squeeze().astype(np.float32)
    proj = xy / (z + shift)[:, None]
    return np.float32((proj * uv).sum() / np.square(proj).sum()), shift, evaluated


@pytest.mark.parametrize("seed", [18, 133, 141])
def test_damped_steps_of_ill_conditioned_maps_match_scipy(seed):
    """Maps on which the first Gauss-Newton step fails: MINPACK shrinks its trust region and retries with damped
    (Levenberg-Marquardt) steps; the replica follows it (seeds 133 and 141 used to stop at shift 0, 18 elsewhere)."""
    points = _ill_conditioned_map(seed)
    want_focal, want_shift, evaluated = _scipy_focal_shift(points)
    focal, shift, trials, _ = _recover_focal_shift_impl(points[None], None, None, (16, 16), 40)
    assert focal.item() == want_focal and shift.item() == want_shift
    ours = [float(t) for t in trials[:, 0] if not math.isnan(t)]
    assert len(ours) >= 2 and shift.item() != 0  # at least one rejected step, then progress
    trial_points = [x for x in evaluated[2:] if x not in _fd_points(evaluated)]
    np.testing.assert_allclose(ours, trial_points[: len(ours)], rtol=1e-12, atol=0)


def _fd_points(evaluated: list[float]) -> set[float]:
    """The finite-difference evaluations in scipy's sequence (``x + h`` right after ``x``)."""
    out = set()
    for a, b in zip(evaluated, evaluated[1:]):
        h = SQRT_EPS * (1.0 if a >= 0 else -1.0) * max(1.0, abs(a))
        if b == a + ((a + h) - a):
            out.add(b)
    return out


def test_recover_focal_shift_batch_equals_singles_and_degenerate():
    depth, k = _synthetic_scene(3)
    points = depth_to_points(depth, k)
    points[..., 2] -= 0.3
    mask = torch.ones(depth.shape, dtype=torch.bool)
    mask[1] = False
    mask[1, 10, 10] = True  # one source pixel -> still several low-res samples (upsampled map)
    mask[2] = False  # nothing valid -> focal 1, shift 0
    focal, shift = recover_focal_shift(points, mask)
    for i in range(3):
        f_i, s_i = recover_focal_shift(points[i], mask[i])
        assert f_i.shape == () and s_i.shape == ()
        assert f_i.item() == focal[i].item() and s_i.item() == shift[i].item()
    assert focal[2].item() == 1.0 and shift[2].item() == 0.0
    # given focal: returned unchanged, broadcast from a float
    f_given, _ = recover_focal_shift(points, None, focal=1.25)
    np.testing.assert_array_equal(f_given.numpy(), [1.25] * 3)


def test_focal_shift_shape_errors():
    points = torch.zeros(2, 8, 8, 3)
    with pytest.raises(GeometryError, match=r"\(\.\.\., H, W, 3\)"):
        recover_focal_shift(torch.zeros(8, 8, 2))
    with pytest.raises(GeometryError, match="mask"):
        recover_focal_shift(points, torch.ones(2, 8, 7, dtype=torch.bool))
    with pytest.raises(GeometryError, match="focal"):
        recover_focal_shift(points, None, focal=torch.ones(3))
    with pytest.raises(GeometryError, match="intrinsics"):
        recover_shift_with_intrinsics(points, torch.eye(3)[:2])
    with pytest.raises(GeometryError, match="intrinsics"):
        recover_shift_with_intrinsics(points, torch.eye(3).expand(3, 3, 3))
    with pytest.raises(GeometryError, match="downsample_size"):
        recover_focal_shift(points, downsample_size=(0, 64))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    depth, k = _synthetic_scene(3)
    points = depth_to_points(depth, k)
    points[..., 2] -= 0.4
    mask = torch.rand(depth.shape, generator=torch.Generator().manual_seed(2)) > 0.2
    focal_cpu, shift_cpu = recover_focal_shift(points, mask)
    focal_gpu, shift_gpu = recover_focal_shift(points.cuda(), mask.cuda())
    assert focal_gpu.device.type == "cuda"
    # CUDA cumsum is a parallel scan: identical up to the last bits of the float64 iteration
    assert _max_ulp(focal_gpu.cpu().numpy(), focal_cpu.numpy()) <= 2
    assert _max_ulp(shift_gpu.cpu().numpy(), shift_cpu.numpy()) <= 2
    s_cpu = recover_shift_with_intrinsics(points, k, mask)
    s_gpu = recover_shift_with_intrinsics(points.cuda(), k.cuda(), mask.cuda())
    np.testing.assert_allclose(s_gpu.cpu().numpy(), s_cpu.numpy(), atol=1e-6)
