"""Tests of the folder dataset format (moge2_ros.data.folder): round trips and validation errors naming the file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from moge2_ros.data.folder import FolderDataset, list_stems, write_sample
from moge2_ros.data.sample import PROVENANCE, Sample
from moge2_ros.errors import DatasetError
from moge2_ros.io.writers import exr_available

H, W = 24, 32


def _sample(seed: int = 0, label_type: str = "A", with_extras: bool = True) -> Sample:
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.5, 40.0, size=(H, W)).astype(np.float32)
    sky = np.zeros((H, W), dtype=bool)
    sky[:4] = True
    depth[sky] = np.nan
    depth[10, 5:9] = np.nan  # a hole that is not sky
    normal = rng.normal(size=(H, W, 3)).astype(np.float32)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    normal[sky] = np.nan
    k = np.array([[30.5, 0.0, 15.25], [0.0, 30.75, 11.5], [0.0, 0.0, 1.0]])
    return Sample(
        image=rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8),
        depth=depth,
        intrinsics=k,
        sky=sky if with_extras else None,
        normal=normal if with_extras else None,
        provenance=rng.integers(0, 4, size=(H, W), dtype=np.uint8) if with_extras else None,
        label_type=label_type,
        is_metric=True,
        source=f"test:{seed}",
    )


def _assert_same(got: Sample, want: Sample, depth_atol: float = 0.0) -> None:
    np.testing.assert_array_equal(got.image, want.image)
    np.testing.assert_array_equal(np.isnan(got.depth), np.isnan(want.depth))
    np.testing.assert_allclose(got.depth, want.depth, atol=depth_atol, rtol=0)
    np.testing.assert_array_equal(got.intrinsics, want.intrinsics)
    for name in ("sky", "normal", "provenance"):
        a, b = getattr(got, name), getattr(want, name)
        assert (a is None) == (b is None), name
        if a is not None:
            np.testing.assert_array_equal(a, b)
    assert (got.label_type, got.is_metric) == (want.label_type, want.is_metric)


@pytest.mark.parametrize("depth_format", ["npy", "png", pytest.param("exr", marks=pytest.mark.skipif(
    not exr_available(), reason="OpenEXR not installed"))])
def test_write_then_read_round_trip(tmp_path, depth_format: str) -> None:
    samples = [_sample(0), _sample(1, with_extras=False)]
    for i, s in enumerate(samples):
        write_sample(tmp_path, f"f{i:03d}", s, depth_format=depth_format)
    dataset = FolderDataset(tmp_path)
    assert len(dataset) == 2 and list_stems(tmp_path) == ["f000", "f001"]
    for got, want in zip(dataset, samples):
        _assert_same(got, want, depth_atol=0.0005 + 1e-6 if depth_format == "png" else 0.0)
        assert got.depth.dtype == np.float32 and got.source.endswith(".rgb.png")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_jpeg_images_dataset_wide_intrinsics_and_mask(tmp_path) -> None:
    s = _sample(2, label_type="B", with_extras=False)
    jj, ii = np.meshgrid(np.arange(W), np.arange(H))
    s.image = np.stack([jj * 8, ii * 10, 128 + 0 * jj], axis=-1).astype(np.uint8)  # smooth: JPEG keeps it close
    write_sample(tmp_path, "a", s, image_format="jpg")
    (tmp_path / "a.intrinsics.json").unlink()
    (tmp_path / "intrinsics.yaml").write_text("K: [30.5, 0, 15.25, 0, 30.75, 11.5, 0, 0, 1]\nwidth: 32\nheight: 24\n")
    mask = np.full((H, W), 255, dtype=np.uint8)
    mask[:, :3] = 0
    Image.fromarray(mask).save(tmp_path / "a.mask.png")
    got = FolderDataset(tmp_path)[0]
    assert got.image.shape == (H, W, 3) and np.abs(got.image.astype(int) - s.image).mean() < 4
    np.testing.assert_array_equal(got.intrinsics, s.intrinsics)
    assert np.isnan(got.depth[:, :3]).all()
    np.testing.assert_array_equal(got.depth[:, 3:], s.depth[:, 3:])
    assert got.label_type == "B"


def test_rewriting_a_frame_in_another_format_replaces_the_old_files(tmp_path) -> None:
    write_sample(tmp_path, "x", _sample(3))
    write_sample(tmp_path, "x", _sample(4, with_extras=False), depth_format="png", image_format="jpg")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["dataset.yaml", "x.depth.png", "x.intrinsics.json", "x.rgb.jpg"]
    FolderDataset(tmp_path)[0]


def _write_good(root, stem: str = "f") -> None:
    write_sample(root, stem, _sample(5))


def _expect(root, match: str, index: int | None = None) -> None:
    with pytest.raises(DatasetError, match=match):
        dataset = FolderDataset(root)
        if index is not None:
            dataset[index]


def test_layout_errors_name_the_file(tmp_path) -> None:
    _expect(tmp_path / "missing", "not a directory")
    _expect(tmp_path, "no frames")
    _write_good(tmp_path)
    (tmp_path / "f.depth.npy").rename(tmp_path / "f.depth.keep")
    _expect(tmp_path, r"f\.rgb\.png: frame 'f' has no depth file")
    (tmp_path / "f.depth.keep").rename(tmp_path / "f.depth.npy")
    Image.fromarray(np.ones((H, W), np.uint16)).save(tmp_path / "f.depth.png")
    _expect(tmp_path, r"f\.depth\.(npy|png): frame 'f' has two depth files")
    (tmp_path / "f.depth.png").unlink()
    np.save(tmp_path / "g.depth.npy", np.ones((H, W), np.float32))
    _expect(tmp_path, r"g\.depth\.npy: belongs to frame 'g', which has no g\.rgb")
    (tmp_path / "g.depth.npy").unlink()
    (tmp_path / "f.intrinsics.json").unlink()
    _expect(tmp_path, r"f\.rgb\.png: frame 'f' has no intrinsics")
    (tmp_path / "intrinsics.json").write_text("{}")
    (tmp_path / "intrinsics.yaml").write_text("{}")
    _expect(tmp_path, "two dataset-wide intrinsics files")
    (tmp_path / "intrinsics.yaml").unlink()
    _expect(tmp_path, r"intrinsics\.json: found none of", index=0)
    (tmp_path / "dataset.yaml").write_text("label_type: Z\n")
    _expect(tmp_path, r"dataset\.yaml: label_type must be one of")
    (tmp_path / "dataset.yaml").write_text("labeltype: A\n")
    _expect(tmp_path, r"dataset\.yaml: unknown key")


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (lambda r: np.save(r / "f.depth.npy", np.ones((H + 1, W), np.float32)), r"f\.depth\.npy: size 32x25 does not "
                                                                                 r"match the RGB image 32x24"),
        (lambda r: (r / "f.depth.npy").write_bytes(b"garbage"), r"f\.depth\.npy: cannot read depth"),
        (lambda r: np.save(r / "f.depth.npy", -np.ones((H, W), np.float32)), r"f\.depth\.npy: 768 negative depth"),
        (lambda r: (r / "f.rgb.png").write_bytes(b"\x89PNG broken"), r"f\.rgb\.png"),
        (lambda r: (r / "f.intrinsics.json").write_text(json.dumps({"K": [[-5, 0, 1], [0, 5, 1], [0, 0, 1]]})),
         r"f\.intrinsics\.json.*focal lengths must be > 0"),
        (lambda r: (r / "f.intrinsics.json").write_text(json.dumps({"fx": 500, "fy": 500, "cx": 320, "cy": 240,
                                                                     "width": 640, "height": 480})),
         r"f\.intrinsics\.json: intrinsics are for a 640x480 image"),
        (lambda r: (r / "f.intrinsics.json").write_text("{not json"), r"f\.intrinsics\.json.*not valid JSON"),
        (lambda r: Image.fromarray(np.full((H, W), 255, np.uint8)).save(r / "f.sky.png"), r"f\.sky\.png: .* sky pixels "
                                                                                       r"have a valid depth"),
        (lambda r: Image.fromarray(np.full((H, W), 9, np.uint8)).save(r / "f.provenance.png"),
         r"f\.provenance\.png: 768 pixels hold codes outside"),
        (lambda r: Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(r / "f.mask.png"),
         r"f\.mask\.png: expected an 8-bit single-channel PNG"),
        (lambda r: np.save(r / "f.normal.npy", np.zeros((H, W), np.float32)), r"f\.normal\.npy: expected float normals"),
    ],
)
def test_content_errors_name_the_file(tmp_path, corrupt, match: str) -> None:
    _write_good(tmp_path)
    FolderDataset(tmp_path)[0]  # fine before
    corrupt(tmp_path)
    _expect(tmp_path, match, index=0)


def test_eight_bit_depth_png_is_rejected(tmp_path) -> None:
    write_sample(tmp_path, "f", _sample(6, with_extras=False), depth_format="png")
    Image.fromarray(np.full((H, W), 200, np.uint8)).save(tmp_path / "f.depth.png")
    _expect(tmp_path, r"f\.depth\.png: expected a 16-bit single-channel PNG in millimetres, found mode L", index=0)


def test_write_sample_rejects_bad_input(tmp_path) -> None:
    with pytest.raises(DatasetError, match="bad stem"):
        write_sample(tmp_path, "../escape", _sample(0))
    with pytest.raises(DatasetError, match="depth_format"):
        write_sample(tmp_path, "f", _sample(0), depth_format="tiff")
    far = _sample(0, with_extras=False)
    far.depth[5, 5] = 100.0
    with pytest.raises(DatasetError, match="does not fit a 16-bit millimetre PNG"):
        write_sample(tmp_path, "f", far, depth_format="png")
    write_sample(tmp_path, "f", _sample(0, label_type="A"))
    with pytest.raises(DatasetError, match=r"dataset\.yaml: label_type=A.*label_type=C"):
        write_sample(tmp_path, "g", _sample(1, label_type="C"))
    bad = _sample(0)
    bad.depth[0, 0] = -1.0
    with pytest.raises(DatasetError, match="unknown depth must be NaN"):
        write_sample(tmp_path, "h", bad)


def test_hidden_and_unrelated_files_are_ignored(tmp_path) -> None:
    _write_good(tmp_path)
    (tmp_path / ".f2.rgb.png").write_bytes(b"partial")
    (tmp_path / "README.md").write_text("notes")
    (tmp_path / "f.preview.jpg").write_bytes(b"")
    assert list_stems(tmp_path) == ["f"]
    assert len(FolderDataset(tmp_path)) == 1
    assert set(PROVENANCE.values()) == {0, 1, 2, 3}


def test_intrinsics_implausible_for_the_frame_are_refused(tmp_path):
    """A calibration file without an image size is checked against each frame: fx = 1 px on a 64 px wide image
    is a 176 deg view, beyond the plausible 175."""
    import json

    from moge2_ros.data.folder import _read_intrinsics
    from moge2_ros.errors import DatasetError

    path = tmp_path / "intrinsics.json"
    path.write_text(json.dumps({"fx": 1.0, "fy": 1.0, "cx": 31.5, "cy": 23.5}))
    with pytest.raises(DatasetError, match="field of view"):
        _read_intrinsics(path, 64, 48)
    path.write_text(json.dumps({"fx": 60.0, "fy": 60.0, "cx": 31.5, "cy": 23.5}))
    np.testing.assert_array_equal(_read_intrinsics(path, 64, 48), [[60, 0, 31.5], [0, 60, 23.5], [0, 0, 1]])
