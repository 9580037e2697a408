"""Tests of the training pipeline (moge2_ros.data.pipeline / augment): exact intrinsics after crop + resize and
flip, geometry consistency, determinism, invalid pixels staying invalid, the output contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moge2_ros.data.augment import (
    AugmentParams,
    centre_crop,
    color_jitter,
    crop_resize_intrinsics,
    flip_intrinsics,
    random_crop,
)
from moge2_ros.data.pipeline import AugmentConfig, TrainingView, augment_sample
from moge2_ros.data.sample import Sample
from moge2_ros.data.synthetic import SyntheticDataset
from moge2_ros.errors import DatasetError
from moge2_ros.geometry.intrinsics import pixel_to_normalized_intrinsics
from moge2_ros.geometry.projection import depth_to_points

SIZE = (48, 64)


@pytest.fixture(scope="module")
def source() -> list[Sample]:
    return list(SyntheticDataset(3, 90, 120, seed=2))  # rendered once


def _holey(sample: Sample) -> Sample:
    """The sample with an extra block of unknown depth (not sky)."""
    depth = sample.depth.copy()
    depth[30:50, 40:70] = np.nan
    return sample.replace(depth=depth)


def test_output_contract_and_collate(source) -> None:
    view = TrainingView(source, AugmentConfig(image_size=SIZE), seed=0)
    item = view[0]
    expected = {
        "image": (torch.float32, (3, *SIZE)), "points": (torch.float32, (*SIZE, 3)), "depth": (torch.float32, SIZE),
        "mask_pos": (torch.bool, SIZE), "mask_neg": (torch.bool, SIZE), "normal": (torch.float32, (*SIZE, 3)),
        "has_normal": (torch.bool, ()), "intrinsics": (torch.float32, (3, 3)), "is_metric": (torch.bool, ()),
    }
    assert set(item) == set(expected) | {"label_type"}
    for key, (dtype, shape) in expected.items():
        assert item[key].dtype == dtype and tuple(item[key].shape) == shape, key
    assert item["label_type"] == "A" and bool(item["has_normal"]) and bool(item["is_metric"])
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    batch = next(iter(torch.utils.data.DataLoader(view, batch_size=3)))
    assert batch["points"].shape == (3, *SIZE, 3) and batch["label_type"] == ["A", "A", "A"]


def test_points_are_the_back_projection_of_depth_and_invalid_stays_invalid(source) -> None:
    view = TrainingView([_holey(s) for s in source], AugmentConfig(image_size=SIZE, aspect_jitter=0.2), seed=4)
    for epoch in range(2):
        view.set_epoch(epoch)
        for i in range(len(view)):
            item = view[i]
            valid = item["mask_pos"]
            assert torch.isnan(item["depth"][~valid]).all() and (item["depth"][valid] > 0).all()
            assert torch.isinf(item["points"][~valid]).all() and (item["points"][~valid] > 0).all()
            expected = depth_to_points(item["depth"], item["intrinsics"])
            torch.testing.assert_close(item["points"][valid], expected[valid], rtol=0, atol=0)
            assert not (item["mask_neg"] & valid).any()
            assert (item["normal"][~valid] == 0).all()
            torch.testing.assert_close(item["normal"][valid].norm(dim=-1), torch.ones(int(valid.sum())),
                                       atol=1e-5, rtol=0)


def test_resized_depth_values_are_never_blended(source) -> None:
    sample = _holey(source[0])
    params = AugmentParams(crop=(3, 5, 80, 107))  # 80x107 -> 48x64: non-integer downscale
    item = augment_sample(sample, params, SIZE)
    out = item["depth"][item["mask_pos"]].numpy()
    src = sample.depth[3:83, 5:112]
    assert np.isin(out, src[np.isfinite(src)]).all()


def test_crop_resize_intrinsics_maps_projections_exactly() -> None:
    rng = np.random.default_rng(0)
    k = np.array([[410.0, 0.0, 318.7], [0.0, 405.0, 242.2], [0.0, 0.0, 1.0]])
    points = np.column_stack([rng.uniform(-2, 2, 50), rng.uniform(-1.5, 1.5, 50), rng.uniform(1, 9, 50)])

    def project(kk: np.ndarray) -> np.ndarray:
        uvw = points @ kk.T
        return uvw[:, :2] / uvw[:, 2:]

    top, left, h, w = crop = (37, 51, 300, 410)
    size = (96, 128)
    px = project(k)
    expected = np.column_stack([(px[:, 0] - left + 0.5) * size[1] / w - 0.5, (px[:, 1] - top + 0.5) * size[0] / h - 0.5])
    np.testing.assert_allclose(project(crop_resize_intrinsics(k, crop, size)), expected, atol=1e-9)
    # Mirrored points (x -> -x) seen with the flipped K land on the mirrored pixel columns (x -> W - 1 - x).
    uvw = (points * np.array([-1.0, 1.0, 1.0])) @ flip_intrinsics(k, 640).T
    np.testing.assert_allclose(uvw[:, 0] / uvw[:, 2], 640 - 1 - px[:, 0], atol=1e-9)
    np.testing.assert_allclose(uvw[:, 1] / uvw[:, 2], px[:, 1], atol=1e-9)


def test_crop_without_resize_reproduces_source_geometry(source) -> None:
    sample = _holey(source[1])
    top, left = 11, 23
    item = augment_sample(sample, AugmentParams(crop=(top, left, *SIZE)), SIZE)
    rows, cols = slice(top, top + SIZE[0]), slice(left, left + SIZE[1])
    np.testing.assert_array_equal(item["depth"].numpy(), sample.depth[rows, cols])
    k_src = pixel_to_normalized_intrinsics(torch.from_numpy(sample.intrinsics), sample.width, sample.height).float()
    src_points = depth_to_points(torch.from_numpy(sample.depth), k_src)[rows, cols]
    valid = item["mask_pos"]
    np.testing.assert_array_equal(valid.numpy(), np.isfinite(sample.depth[rows, cols]))
    torch.testing.assert_close(item["points"][valid], src_points[valid], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(item["normal"][valid].numpy(), sample.normal[rows, cols][valid.numpy()])


def test_flip_is_consistent(source) -> None:
    sample = source[2]
    crop = random_crop(np.random.default_rng(1), sample.height, sample.width, SIZE, (0.4, 0.9), 0.0)
    plain = augment_sample(sample, AugmentParams(crop=crop, flip=False), SIZE)
    flipped = augment_sample(sample, AugmentParams(crop=crop, flip=True), SIZE)
    for key in ("image", "depth", "mask_pos", "mask_neg"):
        torch.testing.assert_close(flipped[key], plain[key].flip(-1), equal_nan=True)
    mirror = torch.tensor([-1.0, 1.0, 1.0])
    valid = flipped["mask_pos"]
    torch.testing.assert_close(flipped["points"][valid], (plain["points"].flip(1) * mirror)[valid], rtol=1e-5,
                               atol=1e-5)
    torch.testing.assert_close(flipped["normal"], plain["normal"].flip(1) * mirror)
    k_plain, k_flip = plain["intrinsics"], flipped["intrinsics"]
    torch.testing.assert_close(k_flip[0, 2], 1 - k_plain[0, 2])
    torch.testing.assert_close(k_flip[[0, 1], [0, 1]], k_plain[[0, 1], [0, 1]])


def test_determinism_per_seed_epoch_index(source) -> None:
    config = AugmentConfig(image_size=SIZE)
    a, b = TrainingView(source, config, seed=7), TrainingView(source, config, seed=7)
    first = a[1]
    b.set_epoch(0)
    for key, value in b[1].items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(value, first[key], equal_nan=True, rtol=0, atol=0)
    a.set_epoch(1)
    assert a.params(1, source[1]) != b.params(1, source[1])
    a.set_epoch(0)
    torch.testing.assert_close(a[1]["image"], first["image"], rtol=0, atol=0)
    assert TrainingView(source, config, seed=8).params(1, source[1]) != b.params(1, source[1])
    # Same crops whether or not flips / jitter are enabled (the draws do not depend on the probabilities).
    no_aug = TrainingView(source, AugmentConfig(image_size=SIZE, flip_prob=0.0, color_jitter=False), seed=7)
    assert no_aug.params(1, source[1]).crop == b.params(1, source[1]).crop


def test_eval_view_is_a_deterministic_centre_crop(source) -> None:
    view = TrainingView(source, AugmentConfig(image_size=SIZE), seed=3, train=False)
    params = view.params(0, source[0])
    assert params == AugmentParams(crop=centre_crop(90, 120, SIZE))
    assert params.crop == (0, 0, 90, 120)  # 90x120 has the aspect ratio of 48x64
    first = view[0]
    view.set_epoch(5)
    torch.testing.assert_close(view[0]["depth"], first["depth"], equal_nan=True, rtol=0, atol=0)


def test_all_invalid_sample_becomes_label_invalid() -> None:
    depth = np.full((20, 30), np.nan, dtype=np.float32)
    sample = Sample(image=np.zeros((20, 30, 3), np.uint8), depth=depth, intrinsics=np.array(
        [[25.0, 0, 14.5], [0, 25.0, 9.5], [0, 0, 1]]), label_type="B")
    item = augment_sample(sample, AugmentParams(crop=(0, 0, 20, 30)), (16, 24))
    assert item["label_type"] == "invalid" and not item["mask_pos"].any() and not bool(item["has_normal"])
    with pytest.raises(DatasetError, match="crop"):
        augment_sample(sample, AugmentParams(crop=(5, 0, 20, 30)), (16, 24))


def test_color_jitter_neutral_factors_and_gray_invariance() -> None:
    image = torch.rand(3, 8, 10)
    torch.testing.assert_close(color_jitter(image, 1.0, 1.0, 1.0, 0.0, 1.0), image)
    gray = torch.full((3, 4, 4), 0.4)
    torch.testing.assert_close(color_jitter(gray, 1.0, 1.0, 0.5, 0.08, 1.0), gray, atol=1e-6, rtol=0)
    brighter = color_jitter(image, 1.2, 1.0, 1.0, 0.0, 1.0)
    assert (brighter >= image - 1e-7).all() and brighter.max() <= 1.0
    hue = color_jitter(image, 1.0, 1.0, 1.0, 0.1, 1.0)
    assert not torch.allclose(hue, image)
    luma = torch.tensor([0.299, 0.587, 0.114])
    unclipped = (hue > 0) & (hue < 1)
    assert unclipped.all(dim=0).float().mean() > 0.5
    keep = unclipped.all(dim=0)
    torch.testing.assert_close((luma[:, None] * hue[:, keep]).sum(0), (luma[:, None] * image[:, keep]).sum(0),
                               atol=1e-5, rtol=0)  # a hue rotation keeps the luma


def test_config_validation() -> None:
    with pytest.raises(DatasetError, match="image_size"):
        AugmentConfig(image_size=(1, 64))
    with pytest.raises(DatasetError, match="area_range"):
        AugmentConfig(area_range=(0.0, 1.0))
    with pytest.raises(DatasetError, match="hue"):
        AugmentConfig(hue=(-0.7, 0.1))
    assert AugmentConfig(image_size=[32, 48], hue=[-0.05, 0.05]) == AugmentConfig(image_size=(32, 48), hue=(-0.05, 0.05))


def test_intrinsics_follow_the_image_resampling() -> None:
    """A ramp image whose value is the source column: after crop + resize, the value at output column j is the
    source column that the adjusted intrinsics map j to (pixel-centre convention)."""
    h, w = 40, 200
    ramp = np.broadcast_to(np.arange(w, dtype=np.uint8)[None, :, None], (h, w, 3)).copy()
    k = np.array([[150.0, 0.0, 99.5], [0.0, 150.0, 19.5], [0.0, 0.0, 1.0]])
    sample = Sample(image=ramp, depth=np.ones((h, w), np.float32), intrinsics=k)
    crop, size = (4, 17, 30, 150), (12, 60)  # 2.5x downscale
    item = augment_sample(sample, AugmentParams(crop=crop), size)
    k_out = crop_resize_intrinsics(k, crop, size)
    cols = np.arange(size[1], dtype=np.float64)
    # Same ray: output column j  <->  source column x with (x - cx) / fx = (j - cx') / fx'.
    source_col = (cols - k_out[0, 2]) / k_out[0, 0] * k[0, 0] + k[0, 2]
    value = item["image"][0, 6].double().numpy() * 255.0
    interior = slice(2, -2)  # the antialiasing filter is clipped at the image border
    np.testing.assert_allclose(value[interior], source_col[interior], atol=0.02)
