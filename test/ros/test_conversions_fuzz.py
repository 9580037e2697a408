"""Fuzz tests of moge2_ros.ros.conversions (hypothesis, deterministic).

Thousands of malformed ``Image``, ``CompressedImage`` and ``CameraInfo`` messages (absurd sizes such as 65537
wide, wrong steps, short or empty data, unknown encodings, wrong field types, random / truncated / bit-flipped
JPEG and PNG, decompression-bomb headers, NaN / zero / negative intrinsics) must each give either a valid result
or a :class:`ConversionError`: never any other exception, never a crash, never a huge allocation. Results are
checked against independent reference decoders, and a good frame still converts after each fuzzing run.
Output conversions (depth, point clouds) are checked as properties over random arrays with NaN / Inf / huge values.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image as PILImage
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, RegionOfInterest
from std_msgs.msg import Header

from moge2_ros.ros.conversions import (
    DEFAULT_MAX_PIXELS,
    DEPTH_ENCODINGS,
    IMAGE_ENCODINGS,
    ConversionError,
    camera_info_to_k,
    compressed_to_rgb,
    depth_to_image,
    image_to_float,
    image_to_rgb,
    points_to_cloud,
)

pytestmark = pytest.mark.ros


def _fuzz_settings(max_examples: int) -> settings:
    """Deterministic (derandomized, no example database) and bounded: the file runs in well under 60 s."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


HEADER = Header(frame_id="camera_optical_frame", stamp=Time(sec=42, nanosec=7))

# ------------------------------------------------------------------------------------------------ references

_LAYOUT = {  # canonical encoding -> (channels, bytes per channel, RGB channel order)
    "rgb8": (3, 1, [0, 1, 2]), "bgr8": (3, 1, [2, 1, 0]), "rgba8": (4, 1, [0, 1, 2]), "bgra8": (4, 1, [2, 1, 0]),
    "mono8": (1, 1, [0, 0, 0]), "mono16": (1, 2, [0, 0, 0]),
}
_CANONICAL = {"8uc3": "bgr8", "8uc1": "mono8", "16uc1": "mono16", **{name: name for name in _LAYOUT}}


def _reference_decode(msg: Image) -> np.ndarray:
    """Row-by-row decoding with plain Python slicing (independent of the vectorised implementation)."""
    channels, itemsize, order = _LAYOUT[_CANONICAL[msg.encoding.strip().lower()]]
    data = bytes(msg.data)
    rows = [data[r * msg.step : r * msg.step + msg.width * channels * itemsize] for r in range(msg.height)]
    if itemsize == 1:
        pixels = np.frombuffer(b"".join(rows), np.uint8).reshape(msg.height, msg.width, channels)
        return pixels[..., order]
    dtype = ">u2" if msg.is_bigendian else "<u2"
    grey = np.frombuffer(b"".join(rows), dtype).reshape(msg.height, msg.width).astype(np.float32) / 65535.0
    return np.repeat(grey[..., None], 3, axis=2)


def _good_image() -> Image:
    rgb = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    return Image(height=4, width=6, encoding="rgb8", step=18, data=rgb.tobytes())


def _encoded(array: np.ndarray, fmt: str, mode: str | None = None, **kwargs: Any) -> bytes:
    image = PILImage.fromarray(array)
    if mode is not None:
        image = image.convert(mode)
    stream = io.BytesIO()
    image.save(stream, format=fmt, **kwargs)
    return stream.getvalue()


_RGB = np.random.default_rng(1).integers(0, 256, (9, 12, 3), dtype=np.uint8)
VALID_COMPRESSED: dict[str, bytes] = {
    "png_rgb": _encoded(_RGB, "PNG"),
    "png_grey": _encoded(_RGB[..., 0], "PNG"),
    "png_grey16": _encoded((_RGB[..., 0].astype(np.uint16) * 257), "PNG"),
    "png_rgba": _encoded(np.concatenate([_RGB, _RGB[..., :1]], axis=2), "PNG"),
    "png_palette": _encoded(_RGB, "PNG", mode="P"),
    "jpeg_rgb": _encoded(_RGB, "JPEG", quality=90),
    "jpeg_grey": _encoded(_RGB[..., 1], "JPEG"),
    "jpeg_progressive": _encoded(_RGB, "JPEG", progressive=True),
}


def _rgb_shapes(max_side: int) -> st.SearchStrategy[tuple[int, int, int]]:
    """Shapes ``(H, W, 3)`` with ``1 <= H, W <= max_side``."""
    return st.tuples(st.integers(1, max_side), st.integers(1, max_side), st.just(3))


def _good_frames_still_convert() -> None:
    """After a fuzzing run: nothing global was disturbed (Pillow settings, module state)."""
    assert PILImage.MAX_IMAGE_PIXELS == 89_478_485
    good = _good_image()
    np.testing.assert_array_equal(image_to_rgb(good), np.frombuffer(bytes(good.data), np.uint8).reshape(4, 6, 3))
    out = compressed_to_rgb(CompressedImage(format="rgb8; png compressed bgr8", data=VALID_COMPRESSED["png_rgb"]))
    np.testing.assert_array_equal(out, _RGB)
    info = CameraInfo(width=640, height=480)
    info.k = np.array([500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0])
    assert camera_info_to_k(info, 640, 480)[0, 0] == 500.0


# ------------------------------------------------------------------------------------------------ Image

_ENCODINGS = [*IMAGE_ENCODINGS, "RGB8", " mono8 ", "bgr16", "rgb16", "32FC1", "8UC4", "yuv422", "bayer_rggb8", ""]
_BPP = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 2, "8uc3": 3, "8uc1": 1, "16uc1": 2,
        "32fc1": 4}
@st.composite
def _mostly(draw: st.DrawFn, good: st.SearchStrategy[Any], *bad: st.SearchStrategy[Any]) -> Any:
    """A value of ``good`` about three times out of four, otherwise of one of ``bad``."""
    return draw(st.one_of(*bad)) if draw(st.integers(0, 3)) == 3 else draw(good)


_DIMS = _mostly(
    st.integers(1, 24),
    st.just(0),
    st.sampled_from([1, 2, 3, 255, 256, 65535, 65536, 65537, 2**31 - 1, 2**32 - 1]),
    st.sampled_from([-1, -65537, 2.0, None, "640", 1 << 40]),  # field checks are off by default in rclpy
)


@st.composite
def image_messages(draw: st.DrawFn, encodings: tuple[str, ...] = IMAGE_ENCODINGS) -> tuple[Image, int]:
    width = draw(_DIMS)
    height = draw(_DIMS)
    encoding = draw(_mostly(st.sampled_from(encodings), st.sampled_from(_ENCODINGS), st.text(max_size=8)))
    bpp = _BPP.get(encoding.strip().lower()) or draw(st.integers(1, 4))
    w = width if isinstance(width, int) else 1
    h = height if isinstance(height, int) else 1
    row = max(w, 0) * bpp
    step = draw(
        _mostly(
            st.one_of(st.just(row), st.integers(row, row + 9)),  # padding, also odd
            st.just(row - 1),
            st.integers(0, 2**32 - 1),
            st.sampled_from([-3, 1.5, None]),
        )
    )
    need = step * max(h, 0) if isinstance(step, int) else 0
    length = draw(_mostly(st.sampled_from([need, need + 5]), st.just(need - 1), st.just(0), st.integers(0, 4096)))
    length = min(max(length, 0), 1 << 20)  # bounded memory: a big declared image gets a short buffer
    data = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(0, 256, length, np.uint8).tobytes()
    is_bigendian = draw(st.sampled_from([0, 1, 255, True]))
    max_pixels = draw(_mostly(st.just(DEFAULT_MAX_PIXELS), st.sampled_from([1, 30, 10**12])))
    msg = Image(height=height, width=width, encoding=encoding, step=step, is_bigendian=is_bigendian, data=data)
    return msg, max_pixels


def test_fuzz_image_to_rgb() -> None:
    @_fuzz_settings(2500)
    @given(image_messages())
    def run(case: tuple[Image, int]) -> None:
        msg, max_pixels = case
        try:
            out = image_to_rgb(msg, max_pixels=max_pixels)
        except ConversionError as exc:
            assert str(exc)
            return
        # accepted: every precondition held ...
        bpp = _BPP[msg.encoding.strip().lower()]
        assert 0 < msg.width and 0 < msg.height and msg.width * msg.height <= max_pixels
        assert msg.step >= msg.width * bpp and len(msg.data) >= msg.step * msg.height
        # ... and the pixels are right
        assert out.shape == (msg.height, msg.width, 3)
        assert out.dtype == (np.float32 if bpp == 2 else np.uint8)
        np.testing.assert_array_equal(out, _reference_decode(msg))
        if out.dtype == np.float32:
            assert 0.0 <= out.min() and out.max() <= 1.0

    run()
    _good_frames_still_convert()


def test_fuzz_image_to_float() -> None:
    @_fuzz_settings(800)
    @given(image_messages(DEPTH_ENCODINGS))
    def run(case: tuple[Image, int]) -> None:
        msg, max_pixels = case
        try:
            out = image_to_float(msg, max_pixels=max_pixels)
        except ConversionError as exc:
            assert str(exc)
            return
        itemsize = 4 if msg.encoding == "32FC1" else 2
        assert msg.encoding in DEPTH_ENCODINGS and 0 < msg.width * msg.height <= max_pixels
        assert msg.step >= msg.width * itemsize and len(msg.data) >= msg.step * msg.height
        assert out.shape == (msg.height, msg.width) and out.dtype == np.float32
        data = bytes(msg.data)
        rows = b"".join(data[r * msg.step : r * msg.step + msg.width * itemsize] for r in range(msg.height))
        order = ">" if msg.is_bigendian else "<"
        if itemsize == 4:
            expected = np.frombuffer(rows, order + "f4").reshape(out.shape).astype(np.float32)
        else:
            mm = np.frombuffer(rows, order + "u2").reshape(out.shape)
            expected = np.where(mm == 0, np.nan, mm.astype(np.float32) / np.float32(1000)).astype(np.float32)
        np.testing.assert_array_equal(out, expected)

    run()
    _good_frames_still_convert()


@pytest.mark.parametrize("data", [None, "abc", 3.0, [1, 2, 3], object()])
def test_image_data_that_is_not_a_buffer(data: Any) -> None:
    msg = _good_image()
    msg._data = data  # noqa: SLF001 - the setter would convert it; simulate a broken message object
    with pytest.raises(ConversionError, match=r"image.data: expected a contiguous bytes-like buffer"):
        image_to_rgb(msg)


def test_padded_rgb_round_trip_property() -> None:
    @_fuzz_settings(300)
    @given(
        hnp.arrays(np.uint8, _rgb_shapes(12)),
        st.integers(0, 7),
        st.sampled_from(["rgb8", "bgr8"]),
    )
    def run(rgb: np.ndarray, pad: int, encoding: str) -> None:
        layout = rgb if encoding == "rgb8" else np.ascontiguousarray(rgb[..., ::-1])
        rows = np.concatenate([layout.reshape(rgb.shape[0], -1), np.full((rgb.shape[0], pad), 7, np.uint8)], 1)
        msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding=encoding, step=rows.shape[1], data=rows.tobytes())
        np.testing.assert_array_equal(image_to_rgb(msg), rgb)

    run()


# ------------------------------------------------------------------------------------------------ CompressedImage


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_bomb(width: int, height: int, colour_type: int, bit_depth: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 256)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _jpeg_with_size(width: int, height: int) -> bytes:
    """A valid JPEG whose SOF header is patched to claim ``width x height``."""
    data = bytearray(VALID_COMPRESSED["jpeg_rgb"])
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


_GOOD_FORMATS = ["jpeg", "png", "", "rgb8; jpeg compressed bgr8", "bgr8; png compressed bgr8"]
_FORMATS = [
    "jpeg", "jpg", "png", "JPEG", "", "rgb8; jpeg compressed bgr8", "bgr8; png compressed",
    "mono8; png compressed mono8",
    "16UC1; png compressed mono16", "16UC1; compressedDepth png", "32FC1; compressedDepth rvl", "tiff", "webp",
    "rgb8; theora", ";", "jpeg;png", "png; jpeg compressed bgr8", "pngjpeg",
]
_BOMB_SIDE = st.one_of(st.integers(0, 64), st.integers(7000, 2**31 - 1), st.just(100_000))


@st.composite
def compressed_messages(draw: st.DrawFn) -> tuple[CompressedImage, int]:
    kind = draw(st.sampled_from(["valid", "random", "truncated", "flipped", "png_bomb", "jpeg_size"]))
    valid = VALID_COMPRESSED[draw(st.sampled_from(sorted(VALID_COMPRESSED)))]
    if kind == "valid":
        data = valid
    elif kind == "random":
        prefix = draw(st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM"]))
        data = prefix + draw(st.binary(max_size=600))
    elif kind == "truncated":
        data = valid[: draw(st.integers(0, len(valid) - 1))]
    elif kind == "flipped":
        buffer = bytearray(valid)
        for _ in range(draw(st.integers(1, 8))):
            buffer[draw(st.integers(0, len(buffer) - 1))] = draw(st.integers(0, 255))
        data = bytes(buffer)
    elif kind == "png_bomb":
        colour_type, bit_depth = draw(st.sampled_from([(2, 8), (0, 16), (6, 16), (3, 8), (0, 1), (5, 8)]))
        data = _png_bomb(draw(_BOMB_SIDE), draw(_BOMB_SIDE), colour_type, bit_depth)
    else:
        data = _jpeg_with_size(draw(st.integers(0, 65535)), draw(st.integers(0, 65535)))
    fmt = draw(_mostly(st.sampled_from(_GOOD_FORMATS), st.sampled_from(_FORMATS), st.text(max_size=24)))
    max_pixels = draw(_mostly(st.just(DEFAULT_MAX_PIXELS), st.sampled_from([50, 1_000_000])))
    return CompressedImage(format=fmt, data=data), max_pixels


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_fuzz_compressed_to_rgb() -> None:
    @_fuzz_settings(1500)
    @given(compressed_messages())
    def run(case: tuple[CompressedImage, int]) -> None:
        msg, max_pixels = case
        try:
            out = compressed_to_rgb(msg, max_pixels=max_pixels)
        except ConversionError as exc:
            assert str(exc)
            return
        assert "compresseddepth" not in msg.format.lower()
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3 and out.flags.c_contiguous
        assert 0 < out.shape[0] * out.shape[1] <= max_pixels

    run()
    _good_frames_still_convert()


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bomb_headers_are_rejected_without_decoding() -> None:
    for width, height in [(100_000, 100_000), (2**31 - 1, 2**31 - 1), (65535, 65535), (10_000, 10_000), (6400, 6400)]:
        with pytest.raises(ConversionError, match=r"expected at most max_pixels"):
            compressed_to_rgb(CompressedImage(format="png", data=_png_bomb(width, height, 2, 8)))
    with pytest.raises(ConversionError, match=r"expected at most max_pixels"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=_jpeg_with_size(65535, 65535)))


# ------------------------------------------------------------------------------------------------ CameraInfo

_SPECIAL = st.sampled_from([0.0, -0.0, -1.0, 1.0, 1e-300, 1e308, -1e308, np.nan, np.inf, -np.inf, 5e-324])
_K = [500.0, 0.0, 320.0, 0.0, 505.0, 240.0, 0.0, 0.0, 1.0]


@st.composite
def camera_infos(draw: st.DrawFn) -> tuple[CameraInfo, Any, Any]:
    msg = CameraInfo()
    if draw(st.integers(0, 9)) == 9:  # wrong number of values (field checks are off by default)
        k: Any = draw(st.lists(st.floats(), max_size=12))
    else:
        k = list(_K)
        for _ in range(draw(st.integers(0, 3))):
            k[draw(st.integers(0, 8))] = draw(st.one_of(_SPECIAL, st.floats()))
    msg.k = k
    msg.width, msg.height = draw(_mostly(st.sampled_from([(640, 480), (0, 0)]), st.tuples(
        st.sampled_from([0, 640, 641, 320, 2**32 - 1]), st.sampled_from([0, 480, 479, 2**32 - 1]))))
    msg.binning_x, msg.binning_y = draw(_mostly(st.sampled_from([(0, 0), (1, 1)]), st.tuples(
        st.sampled_from([0, 1, 2, 4]), st.sampled_from([0, 1, 3]))))
    if draw(st.integers(0, 4)) == 4:
        msg.roi = RegionOfInterest(
            x_offset=draw(st.sampled_from([0, 0, 1, 100])),
            y_offset=draw(st.sampled_from([0, 0, 2])),
            width=draw(st.sampled_from([0, 640, 320])),
            height=draw(st.sampled_from([0, 480, 240])),
        )
    width = draw(_mostly(st.just(640), st.sampled_from([0, -640, 641, 2.5, None])))
    height = draw(_mostly(st.just(480), st.sampled_from([0, -1, 481, "480"])))
    return msg, width, height


def test_fuzz_camera_info_to_k() -> None:
    @_fuzz_settings(2000)
    @given(camera_infos())
    def run(case: tuple[CameraInfo, Any, Any]) -> None:
        msg, width, height = case
        try:
            k = camera_info_to_k(msg, width, height)
        except ConversionError as exc:
            assert str(exc)
            return
        assert (msg.width, msg.height) in ((0, 0), (width, height))
        assert msg.binning_x <= 1 and msg.binning_y <= 1
        assert k.shape == (3, 3) and k.dtype == np.float64 and np.isfinite(k).all()
        assert k[0, 0] > 0 and k[1, 1] > 0 and k[0, 1] == 0 and k[1, 0] == 0
        assert k[2].tolist() == [0.0, 0.0, 1.0]
        np.testing.assert_array_equal(k.ravel(), np.asarray(msg.k))

    run()
    _good_frames_still_convert()


# ------------------------------------------------------------------------------------------------ outputs


_ANY_FLOAT32 = st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True)
_DEPTH_SHAPES = hnp.array_shapes(min_dims=2, max_dims=2, max_side=9)


def test_depth_property() -> None:
    @_fuzz_settings(400)
    @given(
        st.one_of(
            hnp.arrays(np.float32, _DEPTH_SHAPES, elements=_ANY_FLOAT32 | st.sampled_from([0.0625, 65.53125, 70.0])),
            hnp.arrays(np.float64, _DEPTH_SHAPES, elements=st.floats() | st.sampled_from([1e300, -1e300, 65.5355])),
        ),
        st.sampled_from(["32FC1", "16UC1"]),
        st.sampled_from(["nan", "inf"]),
    )
    def run(depth: np.ndarray, encoding: str, invalid: str) -> None:
        msg = depth_to_image(HEADER, depth, encoding, invalid)
        assert msg.header is HEADER and msg.is_bigendian == 0
        assert (msg.height, msg.width) == depth.shape
        with np.errstate(over="ignore"):
            depth32 = depth.astype(np.float32)
        if encoding == "32FC1":
            out = np.frombuffer(bytes(msg.data), "<f4").reshape(depth.shape)
            valid = np.isfinite(depth32) & (depth32 > 0)
            np.testing.assert_array_equal(out[valid], depth32[valid])
            assert (np.isnan(out[~valid]) if invalid == "nan" else out[~valid] == np.inf).all()
        else:
            out = np.frombuffer(bytes(msg.data), "<u2").reshape(depth.shape)
            valid = np.isfinite(depth) & (depth > 0)
            assert (out[~valid] == 0).all() and (out[valid] >= 1).all()
            expected = np.clip(np.floor(depth[valid].astype(np.float64) * 1000.0 + 0.5), 1, 65535)
            np.testing.assert_array_equal(out[valid], expected)

    run()


def test_cloud_property() -> None:
    @_fuzz_settings(300)
    @given(
        hnp.arrays(np.float32, _rgb_shapes(9),
                   elements=st.one_of(st.floats(-100, 100, width=32), st.sampled_from([np.nan, np.inf, -np.inf]))),
        st.booleans(),
        st.booleans(),
        st.booleans(),
        st.integers(1, 4),
        st.integers(0, 2**32 - 1),
    )
    def run(points: np.ndarray, with_rgb: bool, with_normals: bool, organized: bool, stride: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        rgb = rng.integers(0, 256, points.shape, dtype=np.uint8) if with_rgb else None
        normals = rng.normal(size=points.shape).astype(np.float32) if with_normals else None
        msg = points_to_cloud(HEADER, points, rgb, normals, organized=organized, stride=stride)
        assert msg.header is HEADER
        num_fields = 3 + with_rgb + 3 * with_normals
        assert msg.point_step == 4 * num_fields and msg.row_step == msg.point_step * msg.width
        floats = np.frombuffer(bytes(msg.data), "<f4").reshape(msg.height, msg.width, num_fields)
        sub = points[::stride, ::stride]
        valid = np.isfinite(sub).all(axis=2)
        if organized:
            assert floats.shape[:2] == sub.shape[:2] and msg.is_dense is False
            assert np.isnan(floats[~valid][:, :3]).all()
            np.testing.assert_array_equal(floats[valid][:, :3], sub[valid])
            kept = np.ones(sub.shape[:2], bool)
        else:
            assert msg.height == 1 and msg.width == valid.sum() and msg.is_dense is True
            np.testing.assert_array_equal(floats[0][:, :3], sub[valid])
            kept = valid
        if rgb is not None:
            packed = np.ascontiguousarray(floats[..., 3]).view("<u4").reshape(-1)
            colours = rgb[::stride, ::stride][kept].astype(np.uint32)
            np.testing.assert_array_equal(packed, (colours[:, 0] << 16) | (colours[:, 1] << 8) | colours[:, 2])
        if normals is not None:
            np.testing.assert_array_equal(floats[..., -3:].reshape(-1, 3), normals[::stride, ::stride][kept])

    run()
