"""Official evaluation metrics: reference vectors of the official code and hand-checkable compute_metrics cases."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from moge2_ros.data.sample import Sample
from moge2_ros.errors import GeometryError
from moge2_ros.eval import metrics as M
from moge2_ros.geometry.intrinsics import pixel_to_normalized_intrinsics
from moge2_ros.geometry.projection import depth_to_points
from moge2_ros.inference.result import Geometry

# NOTES.md §0: geometry / metric functions are expected to match the official ones bit for bit; allow 1e-7.
ATOL = 1e-7
# The affine-invariant solvers are O(N^2 log N) in the 64x64 = 4096 subsampled pixels (seconds on a CPU): the
# hand-checked cases below do not depend on the subsample size, so most use a smaller one.
FAST = {"align_resolution": (24, 24)}


def _reference_cases(reference_dir):
    index = json.loads((reference_dir / "public_small.json").read_text())["cases"]
    arrays = np.load(reference_dir / "public_small.npz")
    return index, arrays


def test_metric_functions_equal_official_vectors(reference_dir):
    index, arrays = _reference_cases(reference_dir)
    checked = 0
    for name, case in index.items():
        module, _, function = case["function"].rpartition(".")
        if module != "moge.test.metrics" or function == "compute_metrics":
            continue
        fn = getattr(M, function)
        inputs = [torch.from_numpy(arrays[spec["array"]]) for spec in case["inputs"].values()]
        kwargs = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", case["call"])}
        expected = case["outputs"]["value"]["value"]
        got = fn(*inputs, **kwargs)
        assert isinstance(got, float)
        assert got == pytest.approx(expected, abs=ATOL), name
        checked += 1
    # rel_point, delta1_point, boundary_f1 radius 1/2/3 at least
    assert checked >= 5


# ---------------------------------------------------------------------------------------------- a scene


def _scene(h: int = 48, w: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Depth of a tilted wall with a box in front (sharp edges), its normalised K and a validity mask."""
    k_px = torch.tensor([[60.0, 0.0, 31.5], [0.0, 60.0, 23.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
    k = pixel_to_normalized_intrinsics(k_px, w, h).float()
    jj = torch.arange(w, dtype=torch.float32)[None, :].expand(h, w)
    ii = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
    depth = 3.0 + 0.02 * jj + 0.01 * ii
    depth[12:30, 20:44] = 1.5
    mask = torch.ones(h, w, dtype=torch.bool)
    mask[:3, :] = False
    mask[40:, 50:] = False
    return depth, k, mask


def _gt(depth, k, mask, is_metric=True, sharp=True):
    points = depth_to_points(depth, k)
    return {"depth": torch.where(mask, depth, torch.inf), "depth_mask": mask,
            "points": torch.where(mask[..., None], points, torch.inf), "intrinsics": k,
            "is_metric": is_metric, "has_sharp_boundary": sharp}


def _pred(depth, k):
    return {"depth_metric": depth, "points_metric": depth_to_points(depth, k), "intrinsics": k}


@pytest.mark.parametrize("official_resolution", [False, True])
def test_perfect_prediction(official_resolution):
    depth, k, mask = _scene()
    groups = ["depth_metric", "depth_scale_invariant", "depth_affine_invariant", "disparity_affine_invariant",
              "points_metric", "points_scale_invariant", "points_affine_invariant"]
    if official_resolution:  # the official 64x64 subsample, without the slowest (xyz-shift) solver
        m = M.compute_metrics(_pred(depth, k), _gt(depth, k, mask), skip={"points_affine_invariant"})
        groups.remove("points_affine_invariant")
        assert not any(key.startswith("points_affine") for key in m)
    else:
        m = M.compute_metrics(_pred(depth, k), _gt(depth, k, mask), **FAST)
    for group in groups:
        assert m[f"{group}/rel"] == pytest.approx(0.0, abs=1e-5), group
        assert m[f"{group}/delta1"] == 1.0, group
    assert m["fov_x/mae"] == pytest.approx(0.0, abs=1e-4)
    for r in (1, 2, 3):
        assert m[f"boundary/radius{r}_f1"] == pytest.approx(1.0)


def test_scaled_prediction_metric_vs_scale_invariant():
    depth, k, mask = _scene()
    m = M.compute_metrics(_pred(depth * 1.1, k), _gt(depth, k, mask), **FAST)
    assert m["depth_metric/rel"] == pytest.approx(0.1, abs=1e-5)
    assert m["depth_metric/delta1"] == 1.0
    assert m["depth_scale_invariant/rel"] == pytest.approx(0.0, abs=1e-5)
    assert m["points_scale_invariant/rel"] == pytest.approx(0.0, abs=1e-5)
    assert m["points_affine_invariant/rel"] == pytest.approx(0.0, abs=1e-5)
    # Metric points only align an xyz translation: the 10 % scale error mostly remains.
    assert 0.03 < m["points_metric/rel"] <= 0.1 + 1e-5
    # Scale does not change the image-plane geometry: same intrinsics, and boundaries are scale-free.
    assert m["fov_x/mae"] == pytest.approx(0.0, abs=1e-4)
    assert m["boundary/radius1_f1"] == pytest.approx(1.0)


def test_shifted_depth_is_affine_invariant_only():
    depth, k, mask = _scene()
    m = M.compute_metrics({"depth_metric": depth + 0.5}, _gt(depth, k, mask), **FAST)
    expected_metric = (0.5 / (depth[mask] + 1e-6)).mean().item()
    assert m["depth_metric/rel"] == pytest.approx(expected_metric, rel=1e-5)
    assert m["depth_affine_invariant/rel"] == pytest.approx(0.0, abs=1e-5)
    assert m["depth_scale_invariant/rel"] > 0.02
    assert not any(key.startswith("points") for key in m)  # depth-only prediction


def test_disparity_affine_alignment():
    depth, k, mask = _scene()
    disparity = 2.0 / depth + 0.3
    m = M.compute_metrics({"disparity_affine_invariant": disparity}, _gt(depth, k, mask), **FAST)
    assert m["disparity_affine_invariant/rel"] == pytest.approx(0.0, abs=1e-4)
    assert set(m) == {"disparity_affine_invariant/rel", "disparity_affine_invariant/delta1", "boundary/radius1_f1",
                      "boundary/radius2_f1", "boundary/radius3_f1"}


def test_not_metric_gt_has_no_metric_groups_and_no_boundary_without_flag():
    depth, k, mask = _scene()
    m = M.compute_metrics(_pred(depth * 2, k), _gt(depth, k, mask, is_metric=False, sharp=False), **FAST)
    assert not any(key.startswith(("depth_metric", "points_metric", "boundary")) for key in m)
    assert m["points_scale_invariant/rel"] == pytest.approx(0.0, abs=1e-5)


def test_fov_error_in_degrees():
    depth, k, mask = _scene()
    k_wide = k.clone()
    k_wide[0, 0] *= 0.8
    m = M.compute_metrics({"depth_metric": depth, "intrinsics": k_wide}, _gt(depth, k, mask), **FAST)
    expected = math.degrees(2 * math.atan(0.5 / k_wide[0, 0].item()) - 2 * math.atan(0.5 / k[0, 0].item()))
    assert m["fov_x/deviation"] == pytest.approx(expected, abs=1e-4)
    assert m["fov_x/mae"] == pytest.approx(abs(expected), abs=1e-4)
    assert expected > 0


def test_empty_mask_gives_nan_not_a_crash():
    depth, k, mask = _scene()
    m = M.compute_metrics(_pred(depth, k), _gt(depth, k, torch.zeros_like(mask), sharp=False), **FAST)
    assert math.isnan(m["points_scale_invariant/rel"]) and math.isnan(m["depth_metric/rel"])


def test_bad_shapes_raise_clear_errors():
    depth, k, mask = _scene()
    with pytest.raises(GeometryError, match="depth_metric"):
        M.compute_metrics({"depth_metric": depth[:-1]}, _gt(depth, k, mask), **FAST)
    with pytest.raises(GeometryError, match="depth_mask"):
        M.compute_metrics({"depth_metric": depth}, {"depth": depth, "points": depth_to_points(depth, k)})
    with pytest.raises(GeometryError, match="unknown metric groups"):
        M.compute_metrics({"depth_metric": depth}, _gt(depth, k, mask), skip={"points"})
    with pytest.raises(GeometryError, match="radius"):
        M.boundary_f1(depth, depth, mask, radius=0)


def test_boundary_f1_no_predicted_edges_is_zero():
    depth, _, mask = _scene()
    assert M.boundary_f1(torch.full_like(depth, 2.0), depth, mask, radius=1) == 0.0


def test_boundary_f1_detects_a_blurred_edge():
    depth, _, mask = _scene()
    blurred = torch.nn.functional.avg_pool2d(depth[None, None], 5, stride=1, padding=2, count_include_pad=False)[0, 0]
    sharp = M.boundary_f1(depth, depth, mask, radius=1)
    soft = M.boundary_f1(blurred, depth, mask, radius=1)
    assert sharp == pytest.approx(1.0) and soft < 0.9


def test_key_average_skips_nan_and_missing():
    avg = M.key_average([{"a": 1.0, "b": float("nan")}, {"a": 3.0}, {"b": 2.0, "c": None}])
    assert avg["a"] == 2.0 and avg["b"] == 2.0 and math.isnan(avg["c"])
    assert M.nest_metrics({"x/rel": 1.0, "coverage": 0.5}) == {"x": {"rel": 1.0}, "coverage": 0.5}


# ---------------------------------------------------------------------------------------------- Geometry + Sample


def _geometry_from_depth(depth: np.ndarray, k_px: np.ndarray) -> Geometry:
    h, w = depth.shape
    d = torch.from_numpy(depth)[None]
    k = torch.from_numpy(k_px).float()[None]
    mask = torch.isfinite(d)
    points = depth_to_points(torch.nan_to_num(d, nan=1.0), pixel_to_normalized_intrinsics(k, w, h))
    points = torch.where(mask[..., None], points, torch.nan)
    fov = torch.tensor([60.0])
    return Geometry(points=points, depth=d, mask=mask, normal=None, intrinsics=k, metric_scale=torch.ones(1),
                    fov_x=fov, fov_y=fov, intrinsics_estimated=True, num_tokens=1200)


def test_evaluate_geometry_masks_invalid_predictions_and_reports_coverage():
    depth, k, mask = _scene()
    k_px = np.array([[60.0, 0.0, 31.5], [0.0, 60.0, 23.5], [0.0, 0.0, 1.0]])
    gt_depth = np.where(mask.numpy(), depth.numpy(), np.nan).astype(np.float32)
    sample = Sample(image=np.zeros((*gt_depth.shape, 3), np.uint8), depth=gt_depth, intrinsics=k_px,
                    meta={"has_sharp_boundary": True})
    pred_depth = depth.numpy() * 1.25
    pred_depth[:, :8] = np.nan  # the "model" rejects a strip
    m = M.evaluate_geometry(_geometry_from_depth(pred_depth.astype(np.float32), k_px), sample, **FAST)
    covered = np.isfinite(pred_depth) & mask.numpy()
    assert m["coverage"] == pytest.approx(covered.sum() / mask.numpy().sum())
    assert m["depth_metric/rel"] == pytest.approx(0.25, abs=1e-5)
    assert m["depth_scale_invariant/rel"] == pytest.approx(0.0, abs=1e-5)
    assert m["fov_x/mae"] == pytest.approx(0.0, abs=1e-4)
    assert "boundary/radius1_f1" in m
    with pytest.raises(GeometryError, match="sample"):
        M.evaluate_geometry(_geometry_from_depth(pred_depth[:, :40].astype(np.float32).copy(), k_px), sample)
