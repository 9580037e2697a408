"""Controlled test of the whole refinement (filter + completion) with exact truth, and the Sample-level API."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moge2_ros.data.sample import PROVENANCE, Sample, validate_sample
from moge2_ros.data.synthetic import SyntheticDataset
from moge2_ros.errors import GeometryError
from moge2_ros.geometry.intrinsics import pixel_to_normalized_intrinsics
from moge2_ros.geometry.projection import depth_to_points
from moge2_ros.refine.corrupt import CAUSES, CorruptionConfig, corrupt_depth, score_refinement, simulate_prediction
from moge2_ros.refine.filter import FilterConfig
from moge2_ros.refine.pipeline import RefineConfig, refine_depth, refine_sample

W, H = 192, 144
#: One-level filter for the tests that check plumbing, not quality (keeps the file fast).
LIGHT = FilterConfig(levels=(16.0,), align_points=(16,), threshold=(0.5,))


@pytest.fixture(scope="module")
def frames() -> list[Sample]:
    data = SyntheticDataset(2, H, W, seed=3)
    return [data[i] for i in range(len(data))]


def _pred_points(sample: Sample, rng: np.random.Generator, scale_error: float = 1.1) -> np.ndarray:
    depth = simulate_prediction(sample.depth, rng, scale_error=scale_error)
    k_norm = pixel_to_normalized_intrinsics(torch.tensor(sample.intrinsics, dtype=torch.float32), W, H)
    return depth_to_points(torch.from_numpy(depth), k_norm).numpy()


def test_corruption_is_deterministic_and_consistent(frames: list[Sample]) -> None:
    truth = frames[0].depth
    a = corrupt_depth(truth, np.random.default_rng(7))
    b = corrupt_depth(truth, np.random.default_rng(7))
    np.testing.assert_array_equal(a.depth, b.depth)
    assert 1 <= max(abs(a.shift[0]), abs(a.shift[1])) <= 3
    valid = np.isfinite(a.depth)
    assert not (a.corrupted & ~valid).any()
    assert ((a.cause > 0) == a.corrupted).all()
    assert set(np.unique(a.cause)) <= set(CAUSES.values())
    with np.errstate(invalid="ignore"):
        rel = np.abs(a.depth - truth) / truth
    assert (rel[a.corrupted & np.isfinite(truth)] > CorruptionConfig().corrupt_rtol).all()
    assert 0.02 < a.holes.mean() < 0.5


def test_refined_labels_are_closer_to_the_truth(frames: list[Sample]) -> None:
    """Corrupted sensor-like labels + a model with a 10 % scale error: the refined depth is closer to the truth
    than the raw one, overall and near depth edges, with sharper boundaries and full coverage."""
    scores = []
    for i, sample in enumerate(frames):
        rng = np.random.default_rng(i)
        corrupted = corrupt_depth(sample.depth, rng)
        out = refine_depth(corrupted.depth, _pred_points(sample, rng), sample.intrinsics)
        scores.append(score_refinement(sample.depth, corrupted, out.depth, out.provenance))
    mean = {k: float(np.nanmean([s[k] for s in scores])) for k in scores[0]}
    assert mean["absrel_refined_on_raw_pixels"] < 0.85 * mean["absrel_raw"], mean
    assert mean["absrel_refined_edges_on_raw_pixels"] < 0.85 * mean["absrel_raw_edges"], mean
    assert mean["absrel_refined_edges"] < mean["absrel_raw_edges"], mean
    assert mean["boundary_f1_refined"] > mean["boundary_f1_raw"] + 0.1, mean
    assert mean["precision"] > 0.5, mean
    assert mean["recall_gross"] > 0.4, mean
    assert mean["coverage_refined"] > mean["coverage_raw"], mean


def test_provenance_codes_match_the_depth(frames: list[Sample]) -> None:
    sample = frames[1]
    rng = np.random.default_rng(5)
    corrupted = corrupt_depth(sample.depth, rng)
    out = refine_depth(corrupted.depth, _pred_points(sample, rng), sample.intrinsics)
    prov = out.provenance
    kept, filtered = prov == PROVENANCE["kept"], prov == PROVENANCE["filtered"]
    filled, missing = prov == PROVENANCE["filled"], prov == PROVENANCE["missing"]
    assert (kept | filtered | filled | missing).all()
    np.testing.assert_array_equal(out.depth[kept], corrupted.depth[kept])  # kept = raw value, untouched
    assert np.isfinite(corrupted.depth[kept | filtered]).all()
    assert np.isfinite(out.depth[kept | filled]).all()
    assert np.isnan(out.depth[filtered | missing]).all()
    assert filled.any() and (filled & ~np.isfinite(corrupted.depth)).any()
    assert np.isnan(out.depth[~np.isfinite(sample.depth)]).all()  # sky: no prediction, nothing filled
    valid = np.isfinite(corrupted.depth)
    removed = valid & ~kept
    assert out.stats["filtered_percent"] == pytest.approx(100 * removed.sum() / valid.sum())
    assert out.stats["filled_percent"] == pytest.approx(100 * filled.mean())


def test_switches(frames: list[Sample]) -> None:
    sample = frames[0]
    rng = np.random.default_rng(2)
    corrupted = corrupt_depth(sample.depth, rng)
    pred = _pred_points(sample, rng)
    only_filter = refine_depth(corrupted.depth, pred, sample.intrinsics, RefineConfig(filter=LIGHT, fill=False))
    assert not (only_filter.provenance == PROVENANCE["filled"]).any()
    assert (only_filter.provenance == PROVENANCE["filtered"]).any()
    only_fill = refine_depth(corrupted.depth, pred, sample.intrinsics, RefineConfig(filter_enabled=False))
    assert not (only_fill.provenance == PROVENANCE["filtered"]).any()
    valid = np.isfinite(corrupted.depth)
    np.testing.assert_array_equal(only_fill.depth[valid], corrupted.depth[valid])
    removed_only = refine_depth(corrupted.depth, pred, sample.intrinsics,
                                RefineConfig(filter=LIGHT, fill_missing=False))
    filled = removed_only.provenance == PROVENANCE["filled"]
    assert valid[filled].all()


def test_refine_sample(frames: list[Sample]) -> None:
    base = frames[0]
    rng = np.random.default_rng(9)
    real = base.replace(depth=corrupt_depth(base.depth, rng).depth, label_type="B", source="unit-test")
    refined = refine_sample(real, _pred_points(base, rng), RefineConfig(filter=LIGHT))
    validate_sample(refined)
    assert refined.provenance is not None and refined.provenance.dtype == np.uint8
    assert refined.normal is None and refined.label_type == "B" and refined.image is real.image
    assert set(refined.meta["refine"]) >= {"filtered_percent", "filled_percent", "kept_percent", "solver"}
    with pytest.raises(GeometryError, match="unit-test.*pred_points"):
        refine_sample(real, np.zeros((H, W + 1, 3), np.float32))
