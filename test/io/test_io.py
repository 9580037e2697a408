"""Unit tests of the file helpers in moge2_ros.io (no model needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from moge2_ros.errors import InputError
from moge2_ros.io import (
    colorize_depth,
    depth_to_mm_uint16,
    list_images,
    read_image_rgb,
    read_ply,
    write_depth_npy,
    write_depth_png_mm,
    write_json,
    write_ply,
)
from moge2_ros.io.writers import read_depth_png_mm, turbo

# ------------------------------------------------------------------------------------------------ images


def test_read_rgb_png_round_trip(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (7, 11, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    out = read_image_rgb(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (7, 11, 3)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "1", "LA", "CMYK"])
def test_read_converts_modes_to_rgb(tmp_path: Path, mode: str) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    image = Image.fromarray(rgb).convert(mode)
    suffix = ".tif" if mode == "CMYK" else ".png"
    image.save(tmp_path / f"a{suffix}")
    out = read_image_rgb(tmp_path / f"a{suffix}")
    assert out.shape == (5, 6, 3) and out.dtype == np.uint8
    if mode == "RGBA":  # alpha is dropped, colours unchanged
        np.testing.assert_array_equal(out, rgb)


def test_read_16bit_grey_scales_to_8bit(tmp_path: Path) -> None:
    grey16 = np.array([[0, 257, 65535], [32896, 1000, 65280]], dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    out = read_image_rgb(tmp_path / "g16.png")
    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out[..., 0], np.round(grey16 / 257.0).astype(np.uint8))
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_read_float_image_outside_unit_range_is_rejected(tmp_path: Path) -> None:
    Image.fromarray(np.full((3, 3), 5.0, dtype=np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(InputError, match="depth map"):
        read_image_rgb(tmp_path / "f.tif")


def test_read_jpeg(tmp_path: Path) -> None:
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(tmp_path / "a.jpg", quality=95)
    out = read_image_rgb(tmp_path / "a.jpg")
    assert out.shape == (8, 8, 3)
    assert np.abs(out.astype(int) - 128).max() <= 2


def test_read_applies_exif_orientation(tmp_path: Path) -> None:
    image = Image.fromarray(np.zeros((4, 10, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    image.save(tmp_path / "r.jpg", exif=exif)
    assert read_image_rgb(tmp_path / "r.jpg").shape == (10, 4, 3)


@pytest.mark.parametrize(
    "content",
    [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, None],
    ids=["empty", "text", "png-header-only", "truncated-png"],
)
def test_read_corrupt_file_raises_input_error(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "bad.png"
    if content is None:
        Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 7).save(path)
        path.write_bytes(path.read_bytes()[:60])
    else:
        path.write_bytes(content)
    with pytest.raises(InputError, match="bad.png"):
        read_image_rgb(path)


def test_read_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_image_rgb(tmp_path / "missing.png")
    with pytest.raises(InputError, match="not a file"):
        read_image_rgb(tmp_path)


def test_list_images_filters_and_sorts(tmp_path: Path) -> None:
    for name in ["b.PNG", "a.jpg", "c.jpeg", "d.bmp", "e.tif", "f.TIFF", "notes.txt", ".hidden.png"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    names = [p.name for p in list_images(tmp_path)]
    assert names == ["a.jpg", "b.PNG", "c.jpeg", "d.bmp", "e.tif", "f.TIFF"]
    with pytest.raises(InputError):
        list_images(tmp_path / "a.jpg")


# ------------------------------------------------------------------------------------------------ depth


def test_depth_mm_conversion_and_invalid_handling() -> None:
    depth = np.array([[1.2344, 1.2346, np.nan, np.inf], [-1.0, 0.0, 70.0, 0.0001]], dtype=np.float32)
    mm = depth_to_mm_uint16(depth)
    assert mm.dtype == np.uint16
    np.testing.assert_array_equal(mm, [[1234, 1235, 0, 0], [0, 0, 65535, 1]])


def test_depth_png_mm_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    depth = rng.uniform(0.1, 60.0, (9, 13)).astype(np.float32)
    depth[0, :4] = np.nan
    path = write_depth_png_mm(tmp_path / "d" / "depth.png", depth)
    with Image.open(path) as image:
        raw = np.asarray(image)
    assert raw.dtype in (np.uint16, np.int32) and raw.shape == (9, 13)  # Pillow reads 16-bit as I;16 or I
    valid = np.isfinite(depth)
    np.testing.assert_array_equal(raw[valid], np.rint(depth[valid].astype(np.float64) * 1000))
    assert (raw[~valid] == 0).all()
    back = read_depth_png_mm(path)
    assert np.isnan(back[~valid]).all()
    assert np.abs(back[valid] - depth[valid]).max() <= 0.0005 + 1e-6


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=8),
                  elements=st.one_of(st.floats(-10, 100, width=32), st.sampled_from([np.nan, np.inf, -np.inf]))))
def test_depth_mm_properties(depth: np.ndarray) -> None:
    mm = depth_to_mm_uint16(depth)
    valid = np.isfinite(depth) & (depth > 0)
    assert mm.shape == depth.shape
    assert (mm[~valid] == 0).all()
    assert (mm[valid] >= 1).all()
    in_range = valid & (depth <= 65.535) & (depth >= 0.0005)
    assert (np.abs(mm[in_range] - depth[in_range].astype(np.float64) * 1000) <= 0.5 + 1e-9).all()


def test_depth_npy_is_float32_with_nan_invalid(tmp_path: Path) -> None:
    depth = np.array([[1.5, np.nan], [np.inf, -2.0]], dtype=np.float64)
    path = write_depth_npy(tmp_path / "d.npy", depth)
    out = np.load(path)
    assert out.dtype == np.float32 and out.shape == (2, 2)
    assert out[0, 0] == np.float32(1.5) and np.isnan(out).sum() == 3


def test_depth_writers_reject_bad_shapes(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="shape"):
        write_depth_png_mm(tmp_path / "x.png", np.zeros((2, 2, 1), np.float32))
    with pytest.raises(InputError, match="floating"):
        depth_to_mm_uint16(np.zeros((2, 2), np.uint16))


# ------------------------------------------------------------------------------------------------ colormap


def test_colorize_shape_dtype_and_invalid_black() -> None:
    depth = np.linspace(0.5, 10.0, 48, dtype=np.float32).reshape(6, 8)
    depth[0, 0] = np.nan
    depth[0, 1] = 0.0
    mask = np.ones_like(depth, dtype=bool)
    mask[5, 7] = False
    rgb = colorize_depth(depth, mask)
    assert rgb.shape == (6, 8, 3) and rgb.dtype == np.uint8
    assert (rgb[0, 0] == 0).all() and (rgb[0, 1] == 0).all() and (rgb[5, 7] == 0).all()
    assert (rgb.reshape(-1, 3)[2:-1].max(axis=1) > 0).all()  # valid pixels are never black
    # near is red-dominated, far is blue-dominated
    near, far = rgb[0, 2].astype(int), rgb[5, 6].astype(int)
    assert near[0] > near[2] and far[2] > far[0]


def test_colorize_all_invalid_and_constant() -> None:
    assert (colorize_depth(np.full((3, 4), np.nan, np.float32)) == 0).all()
    const = colorize_depth(np.full((3, 4), 2.0, np.float32))
    assert (const == const[0, 0]).all() and const[0, 0].max() > 0


def test_turbo_endpoints_and_monotone_hue() -> None:
    lut = turbo(np.linspace(0, 1, 256))
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert lut[26, 2] > 2 * lut[26, 0]  # blue at 0.1
    assert lut[-1, 0] > 2 * lut[-1, 2]  # red at 1
    assert lut[128, 1] > 200  # green-ish in the middle


# ------------------------------------------------------------------------------------------------ PLY


@pytest.mark.parametrize("with_normals", [False, True])
def test_ply_write_read_back(tmp_path: Path, with_normals: bool) -> None:
    rng = np.random.default_rng(3)
    points = rng.normal(size=(17, 3)).astype(np.float32)
    colors = rng.integers(0, 256, (17, 3), dtype=np.uint8)
    normals = rng.normal(size=(17, 3)).astype(np.float32) if with_normals else None
    path = write_ply(tmp_path / "c.ply", points, colors, normals)

    raw = path.read_bytes()
    header = raw[: raw.index(b"end_header\n")].decode("ascii")
    assert "format binary_little_endian 1.0" in header and "element vertex 17" in header
    assert ("property float nx" in header) == with_normals

    vertices = read_ply(path)
    assert len(vertices) == 17
    np.testing.assert_array_equal(np.stack([vertices[k] for k in "xyz"], 1), points)
    np.testing.assert_array_equal(np.stack([vertices[k] for k in ("red", "green", "blue")], 1), colors)
    if with_normals:
        np.testing.assert_array_equal(np.stack([vertices[k] for k in ("nx", "ny", "nz")], 1), normals)
    expected_size = len(raw[: raw.index(b"end_header\n")]) + len(b"end_header\n") + 17 * (12 + 3 + 12 * with_normals)
    assert len(raw) == expected_size


def test_ply_empty_and_errors(tmp_path: Path) -> None:
    path = write_ply(tmp_path / "empty.ply", np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8))
    assert len(read_ply(path)) == 0
    with pytest.raises(InputError, match=r"\(N, 3\)"):
        write_ply(tmp_path / "x.ply", np.zeros((4, 2), np.float32))
    with pytest.raises(InputError, match="colors"):
        write_ply(tmp_path / "x.ply", np.zeros((4, 3), np.float32), np.zeros((4, 3), np.float32))
    truncated = tmp_path / "t.ply"
    truncated.write_bytes(write_ply(tmp_path / "y.ply", np.ones((5, 3), np.float32)).read_bytes()[:-4])
    with pytest.raises(InputError, match="truncated"):
        read_ply(truncated)


# ------------------------------------------------------------------------------------------------ JSON


def test_write_json_converts_numpy_and_nan(tmp_path: Path) -> None:
    import json

    path = write_json(tmp_path / "m.json", {"K": np.eye(3, dtype=np.float32), "s": np.float32(2.5),
                                            "n": np.int64(3), "bad": float("nan"), "p": tmp_path})
    data = json.loads(path.read_text())
    assert data["K"] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]] and data["s"] == 2.5 and data["n"] == 3
    assert data["bad"] is None and data["p"] == str(tmp_path)
