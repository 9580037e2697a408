"""Unit tests of moge2_ros.ros.conversions: ROS 2 messages <-> numpy arrays (no ROS graph, no model).

Output messages are decoded here with plain numpy from their own metadata (encoding, step, fields, offsets,
point_step, row_step), as cv_bridge and ``sensor_msgs_py.point_cloud2.read_points`` would, and compared with
the input arrays bit for bit.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from PIL import Image as PILImage
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField, RegionOfInterest
from std_msgs.msg import Header

from moge2_ros.errors import InputError
from moge2_ros.io.writers import colorize_depth
from moge2_ros.ros.conversions import (
    ConversionError,
    camera_info_to_k,
    colorize_depth_to_image,
    compressed_to_rgb,
    depth_to_image,
    image_to_float,
    image_to_rgb,
    make_camera_info,
    mask_to_image,
    normals_to_image,
    points_to_cloud,
    rgb_to_image,
)

pytestmark = [
    pytest.mark.ros,
    # rclpy's type support imports rosidl_parser -> lark, which imports the deprecated sre_parse (not ours)
    pytest.mark.filterwarnings("ignore:module 'sre_(parse|constants)' is deprecated:DeprecationWarning"),
]

RNG_SEED = 20240607

# ------------------------------------------------------------------------------------------------ helpers


@pytest.fixture
def header() -> Header:
    return Header(frame_id="camera_color_optical_frame", stamp=Time(sec=1_712_345_678, nanosec=123_456_789))


def _rng() -> np.random.Generator:
    return np.random.default_rng(RNG_SEED)


def _image_msg(pixels: np.ndarray, encoding: str, pad: int = 0, big_endian: bool = False) -> Image:
    """Image message of ``pixels`` ``(H, W[, C])`` with ``pad`` garbage bytes at the end of every row."""
    height, width = pixels.shape[:2]
    dtype = pixels.dtype.newbyteorder(">" if big_endian else "<")
    rows = pixels.astype(dtype).reshape(height, -1).view(np.uint8)
    garbage = np.full((height, pad), 0xAB, dtype=np.uint8)
    data = np.concatenate([rows, garbage], axis=1)
    return Image(
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=int(big_endian),
        step=data.shape[1],
        data=data.tobytes(),
    )


def _decode_image(msg: Image) -> np.ndarray:
    """Decode one of our output encodings with numpy from the message's own metadata."""
    dtype, channels = {
        "32FC1": ("f4", 1), "16UC1": ("u2", 1), "mono8": ("u1", 1), "32FC3": ("f4", 3), "bgr8": ("u1", 3),
    }[msg.encoding]
    dtype = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    assert msg.step >= msg.width * channels * dtype.itemsize
    assert len(msg.data) == msg.step * msg.height
    buffer = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.step)
    rows = buffer[:, : msg.width * channels * dtype.itemsize].copy()
    pixels = rows.view(dtype).reshape(msg.height, msg.width, channels)
    return pixels[..., 0] if channels == 1 else pixels


_NUMPY_OF_DATATYPE = {PointField.FLOAT32: np.dtype("<f4")}


def _read_points(msg: PointCloud2) -> np.ndarray:
    """``(height, width)`` structured array of a cloud, built like ``sensor_msgs_py.point_cloud2.read_points``."""
    assert not msg.is_bigendian
    dtype = np.dtype(
        {
            "names": [f.name for f in msg.fields],
            "formats": [_NUMPY_OF_DATATYPE[f.datatype] for f in msg.fields],
            "offsets": [f.offset for f in msg.fields],
            "itemsize": msg.point_step,
        }
    )
    assert all(f.count == 1 for f in msg.fields)
    assert len(msg.data) == msg.row_step * msg.height
    data = bytes(msg.data)
    if msg.height * msg.width == 0:
        return np.zeros((msg.height, msg.width), dtype=dtype)
    return np.ndarray((msg.height, msg.width), dtype, data, 0, (msg.row_step, msg.point_step)).copy()


def _unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """PCL convention: float32 whose bits are uint32 0x00RRGGBB -> ``(..., 3)`` uint8 RGB."""
    bits = np.ascontiguousarray(packed, dtype="<f4").view("<u4")
    assert not (bits >> 24).any()
    return np.stack([(bits >> 16) & 0xFF, (bits >> 8) & 0xFF, bits & 0xFF], axis=-1).astype(np.uint8)


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a = np.ascontiguousarray(a, dtype="<f4")
    b = np.ascontiguousarray(b, dtype="<f4")
    return a.shape == b.shape and bool((a.view("<u4") == b.view("<u4")).all())


def _check_header(msg: Any, header: Header) -> None:
    """Header carried unchanged, also through serialisation (the message is publishable)."""
    assert msg.header is header
    back = deserialize_message(serialize_message(msg), type(msg))
    assert back.header.stamp.sec == header.stamp.sec
    assert back.header.stamp.nanosec == header.stamp.nanosec
    assert back.header.frame_id == header.frame_id


def _encode(rgb: np.ndarray, fmt: str, **kwargs: Any) -> bytes:
    stream = io.BytesIO()
    PILImage.fromarray(rgb).save(stream, format=fmt, **kwargs)
    return stream.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width x height`` RGB pixels but whose data is a few bytes (a bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _k(fx: float = 500.0, fy: float = 510.0, cx: float = 319.5, cy: float = 239.5) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def _camera_info(k: np.ndarray | list[float], width: int = 640, height: int = 480) -> CameraInfo:
    msg = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    msg.k = np.asarray(k, dtype=np.float64).ravel()
    return msg


# ------------------------------------------------------------------------------------------------ image_to_rgb


COLOUR_ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "8UC3"]


def _colour_message(rgb: np.ndarray, encoding: str, pad: int = 0) -> Image:
    """Encode an RGB array in ``encoding`` (alpha random)."""
    alpha = _rng().integers(0, 256, rgb.shape[:2] + (1,), dtype=np.uint8)
    layout = {
        "rgb8": rgb,
        "bgr8": rgb[..., ::-1],
        "8UC3": rgb[..., ::-1],
        "rgba8": np.concatenate([rgb, alpha], axis=2),
        "bgra8": np.concatenate([rgb[..., ::-1], alpha], axis=2),
    }[encoding]
    return _image_msg(np.ascontiguousarray(layout), encoding, pad=pad)


@pytest.mark.parametrize("encoding", COLOUR_ENCODINGS)
@pytest.mark.parametrize("pad", [0, 1, 13])
def test_colour_encodings_round_trip(encoding: str, pad: int) -> None:
    rgb = _rng().integers(0, 256, (7, 11, 3), dtype=np.uint8)
    out = image_to_rgb(_colour_message(rgb, encoding, pad=pad))
    assert out.dtype == np.uint8 and out.shape == (7, 11, 3)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("encoding", ["mono8", "8UC1"])
@pytest.mark.parametrize("pad", [0, 3])
def test_mono8_is_replicated(encoding: str, pad: int) -> None:
    grey = _rng().integers(0, 256, (5, 9), dtype=np.uint8)
    out = image_to_rgb(_image_msg(grey, encoding, pad=pad))
    assert out.dtype == np.uint8 and out.shape == (5, 9, 3)
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], grey)


@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("pad", [0, 2, 5])  # an odd pad gives an odd step: unaligned uint16 rows
def test_mono16_scaled_to_unit_float(encoding: str, big_endian: bool, pad: int) -> None:
    grey = _rng().integers(0, 65536, (6, 4), dtype=np.uint16)
    grey[0, :4] = [0, 1, 257, 65535]
    out = image_to_rgb(_image_msg(grey, encoding, pad=pad, big_endian=big_endian))
    assert out.dtype == np.float32 and out.shape == (6, 4, 3)
    expected = grey.astype(np.float32) / np.float32(65535.0)
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], expected)
    assert out[0, 0, 0] == 0.0 and out[0, 3, 0] == 1.0
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_mono16_byte_order_matters() -> None:
    grey = np.array([[0x0102]], dtype=np.uint16)
    little = _image_msg(grey, "mono16", big_endian=False)
    assert image_to_rgb(little)[0, 0, 0] == np.float32(0x0102) / np.float32(65535)
    little.is_bigendian = 1  # same bytes, other order
    assert image_to_rgb(little)[0, 0, 0] == np.float32(0x0201) / np.float32(65535)


def test_encoding_names_are_case_insensitive() -> None:
    rgb = _rng().integers(0, 256, (3, 4, 3), dtype=np.uint8)
    np.testing.assert_array_equal(image_to_rgb(_image_msg(rgb, "RGB8")), rgb)
    np.testing.assert_array_equal(image_to_rgb(_image_msg(np.ascontiguousarray(rgb[..., ::-1]), "8uc3")), rgb)


def test_result_is_a_read_only_view_and_trailing_bytes_are_ignored() -> None:
    rgb = _rng().integers(0, 256, (4, 5, 3), dtype=np.uint8)
    msg = _image_msg(rgb, "rgb8")
    msg.data = bytes(msg.data) + b"extra"
    out = image_to_rgb(msg)
    np.testing.assert_array_equal(out, rgb)
    assert not out.flags.writeable
    with pytest.raises(ValueError):
        out[0, 0, 0] = 1


def test_image_errors_name_expected_and_found() -> None:
    rgb = np.zeros((4, 5, 3), dtype=np.uint8)
    good = _image_msg(rgb, "rgb8")

    def variant(**fields: Any) -> Image:
        msg = _image_msg(rgb, "rgb8")
        for name, value in fields.items():
            setattr(msg, name, value)
        return msg

    cases = [
        (variant(encoding="yuv422"), r"expected one of .*rgb8.*found 'yuv422'"),
        (variant(encoding="32FC1"), r"found '32FC1'"),
        (variant(width=0), r"width > 0 and height > 0, found 0x4"),
        (variant(height=0), r"found 5x0"),
        (variant(step=14), r"step: expected >= width \* bytes_per_pixel = 5 \* 3 = 15 for rgb8, found 14"),
        (variant(data=bytes(59)), r"at least step \* height = 15 \* 4 = 60 bytes, found 59"),
        (variant(data=b""), r"found 0$"),
        (variant(width=65537, step=65537 * 3), r"at least .* bytes, found 60"),
        (variant(width=2.0), r"image.width: expected an integer, found float"),
        (variant(encoding=None), r"image.encoding: expected a str, found NoneType"),
        (variant(is_bigendian="yes", encoding="mono8", step=5), None),  # 8-bit: byte order irrelevant
    ]
    for msg, pattern in cases:
        if pattern is None:
            image_to_rgb(msg)
            continue
        with pytest.raises(ConversionError, match=pattern):
            image_to_rgb(msg)
    with pytest.raises(ConversionError, match=r"at most max_pixels = 19 pixels, found 5x4 = 20"):
        image_to_rgb(good, max_pixels=19)
    with pytest.raises(ConversionError, match=r"max_pixels: expected an integer > 0"):
        image_to_rgb(good, max_pixels=0)
    with pytest.raises(ConversionError, match=r"expected a sensor_msgs/Image, found CompressedImage"):
        image_to_rgb(CompressedImage())  # type: ignore[arg-type]
    mono16 = _image_msg(np.zeros((2, 2), np.uint16), "mono16")
    mono16.is_bigendian = "yes"
    with pytest.raises(ConversionError, match=r"is_bigendian: expected 0 or 1"):
        image_to_rgb(mono16)


def test_conversion_error_is_an_input_error() -> None:
    assert issubclass(ConversionError, InputError)
    with pytest.raises(InputError):
        image_to_rgb(Image())


def test_huge_declared_size_is_rejected_before_reading() -> None:
    msg = Image(height=100_000, width=100_000, encoding="rgb8", step=300_000, data=b"\x00" * 16)
    with pytest.raises(ConversionError, match="max_pixels"):
        image_to_rgb(msg)
    msg = Image(height=1, width=2**32 - 1, encoding="mono8", step=2**32 - 1, data=b"\x00" * 16)
    with pytest.raises(ConversionError, match="max_pixels"):
        image_to_rgb(msg)


# ------------------------------------------------------------------------------------------------ compressed


def _smooth_rgb(height: int = 48, width: int = 64) -> np.ndarray:
    """Smooth colourful image (JPEG-friendly) with a pure red, green and blue block."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // (width - 1), y * 255 // (height - 1), (x + y) * 255 // (width + height - 2)], -1)
    rgb = rgb.astype(np.uint8)
    rgb[:16, :16] = (255, 0, 0)
    rgb[:16, 16:32] = (0, 255, 0)
    rgb[:16, 32:48] = (0, 0, 255)
    return rgb


@pytest.mark.parametrize("fmt", ["png", "PNG", "rgb8; png compressed rgb8", "bgr8; png compressed bgr8", ""])
def test_png_round_trip_exact(fmt: str) -> None:
    rgb = _rng().integers(0, 256, (9, 13, 3), dtype=np.uint8)
    out = compressed_to_rgb(CompressedImage(format=fmt, data=_encode(rgb, "PNG")))
    assert out.dtype == np.uint8 and out.shape == (9, 13, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("fmt", ["jpeg", "jpg", "rgb8; jpeg compressed bgr8", "bgr8; jpeg compressed bgr8", ""])
def test_jpeg_decodes_like_pillow_with_colours_in_rgb_order(fmt: str) -> None:
    rgb = _smooth_rgb()
    data = _encode(rgb, "JPEG", quality=95)
    out = compressed_to_rgb(CompressedImage(format=fmt, data=data))
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    np.testing.assert_array_equal(out, np.asarray(PILImage.open(io.BytesIO(data)).convert("RGB")))
    assert np.abs(out.astype(int) - rgb).mean() < 3.0
    red, green, blue = out[8, 8], out[8, 24], out[8, 40]
    assert red[0] > 240 and red[1] < 20 and red[2] < 20
    assert green[1] > 240 and green[0] < 20 and green[2] < 20
    assert blue[2] > 240 and blue[0] < 20 and blue[1] < 20


def test_compressed_grey_alpha_palette_and_16_bit() -> None:
    grey = _rng().integers(0, 256, (6, 7), dtype=np.uint8)
    out = compressed_to_rgb(CompressedImage(format="mono8; png compressed mono8", data=_encode(grey, "PNG")))
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=2))

    rgba = _rng().integers(0, 256, (6, 7, 4), dtype=np.uint8)
    out = compressed_to_rgb(CompressedImage(format="rgba8; png compressed rgba8", data=_encode(rgba, "PNG")))
    np.testing.assert_array_equal(out, rgba[..., :3])

    stream = io.BytesIO()
    PILImage.fromarray(grey).convert("P").save(stream, format="PNG")
    out = compressed_to_rgb(CompressedImage(format="png", data=stream.getvalue()))
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=2))

    grey16 = np.array([[0, 128, 257, 65535], [1000, 30000, 65278, 65534]], dtype=np.uint16)
    out = compressed_to_rgb(CompressedImage(format="mono16; png compressed mono16", data=_encode(grey16, "PNG")))
    expected = np.round(grey16 / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(out, np.repeat(expected[..., None], 3, axis=2))


def test_compressed_errors() -> None:
    png = _encode(_smooth_rgb(), "PNG")
    jpeg = _encode(_rng().integers(0, 256, (48, 64, 3), dtype=np.uint8), "JPEG")  # noise: mostly scan data
    gif = _encode(_smooth_rgb(), "GIF")
    cases = [
        (CompressedImage(format="jpeg", data=b""), r"expected JPEG or PNG bytes, found 0 bytes"),
        (
            CompressedImage(format="jpeg", data=bytes(range(256))),
            r"expected JPEG or PNG data, found data starting with b'\\x00\\x01",
        ),
        (CompressedImage(format="png", data=gif), r"expected JPEG or PNG data"),  # only JPEG/PNG decoders
        (CompressedImage(format="jpeg", data=jpeg[: len(jpeg) // 2]), r"corrupt or truncated"),
        (CompressedImage(format="png", data=png[: len(png) // 2]), r"corrupt or truncated"),
        (CompressedImage(format="png", data=png[:30]), r"JPEG or PNG|corrupt or truncated"),
        (CompressedImage(format="16UC1; compressedDepth png", data=png), r"compressedDepth carries a depth"),
        (CompressedImage(format="tiff", data=png), r"expected 'jpeg', 'png'.*found 'tiff'"),
        (CompressedImage(format="rgb8; theora", data=png), r"found 'rgb8; theora'"),
        (CompressedImage(format="pngx", data=png), r"found 'pngx'"),
        (CompressedImage(format=b"png", data=png), r"format: expected a str"),  # type: ignore[arg-type]
    ]
    for msg, pattern in cases:
        with pytest.raises(ConversionError, match=pattern):
            compressed_to_rgb(msg)
    with pytest.raises(ConversionError, match=r"at most max_pixels = 100 pixels, found 64x48 = 3072"):
        compressed_to_rgb(CompressedImage(format="png", data=png), max_pixels=100)
    with pytest.raises(ConversionError, match=r"expected a sensor_msgs/CompressedImage, found Image"):
        compressed_to_rgb(Image())  # type: ignore[arg-type]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("size", [(100_000, 100_000), (8000, 8000), (40_000, 1001)])
def test_decompression_bomb_rejected_from_header(size: tuple[int, int]) -> None:
    """A PNG claiming a huge size is rejected from its header (Pillow's bomb check or max_pixels)."""
    msg = CompressedImage(format="png", data=_png_header_only(*size))
    with pytest.raises(ConversionError, match=r"expected at most max_pixels = 40000000 pixels, found"):
        compressed_to_rgb(msg)


def test_header_only_png_within_limits_is_truncated() -> None:
    msg = CompressedImage(format="png", data=_png_header_only(100, 100))
    with pytest.raises(ConversionError, match="corrupt or truncated"):
        compressed_to_rgb(msg)


# ------------------------------------------------------------------------------------------------ camera info


def test_camera_info_to_k() -> None:
    k = _k(cx=300.25, cy=250.75)
    out = camera_info_to_k(_camera_info(k), 640, 480)
    assert out.dtype == np.float64 and out.shape == (3, 3)
    np.testing.assert_array_equal(out, k)


def test_camera_info_zero_size_means_image_size() -> None:
    np.testing.assert_array_equal(camera_info_to_k(_camera_info(_k(), width=0, height=0), 640, 480), _k())


def test_camera_info_full_image_roi_and_binning_one_are_accepted() -> None:
    msg = _camera_info(_k())
    msg.roi = RegionOfInterest(x_offset=0, y_offset=0, width=640, height=480)
    msg.binning_x = msg.binning_y = 1
    np.testing.assert_array_equal(camera_info_to_k(msg, 640, 480), _k())


def test_camera_info_roi_then_binning_as_image_geometry() -> None:
    """The image is the ROI of the full sensor, then binned: K's principal point moves by the ROI offset, then fx,
    cx are divided by binning_x and fy, cy by binning_y (image_geometry.PinholeCameraModel)."""
    msg = _camera_info(_k(fx=500.0, fy=505.0, cx=320.0, cy=240.0))
    msg.roi = RegionOfInterest(x_offset=10, y_offset=20, width=320, height=240)
    msg.binning_x, msg.binning_y = 2, 4
    expected = np.array([[250.0, 0.0, 155.0], [0.0, 126.25, 55.0], [0.0, 0.0, 1.0]])
    np.testing.assert_array_equal(camera_info_to_k(msg, 160, 60), expected)
    binned = _camera_info(_k(fx=500.0, fy=505.0, cx=320.0, cy=240.0))
    binned.binning_x = binned.binning_y = 2
    np.testing.assert_array_equal(camera_info_to_k(binned, 320, 240),
                                  [[250.0, 0.0, 160.0], [0.0, 252.5, 120.0], [0.0, 0.0, 1.0]])


def test_camera_info_errors() -> None:
    def with_k(index: int, value: float) -> CameraInfo:
        values = _k().ravel()
        values[index] = value
        return _camera_info(values)

    roi = _camera_info(_k())
    roi.roi = RegionOfInterest(x_offset=10, y_offset=20, width=320, height=240)
    binned = _camera_info(_k())
    binned.binning_x = 2
    short_k = _camera_info(_k())
    short_k.k = [500.0, 0.0, 320.0, 0.0]  # field checks are off by default: a wrong size gets through
    cases = [
        (
            _camera_info(_k(), width=320, height=240),
            r"expected the size of the image 640x480 \(or 0x0\), found 320x240",
        ),
        (_camera_info(_k(), width=640, height=0), r"found 640x0"),
        (_camera_info(np.zeros(9)), r"expected fx = K\[0\] > 0 and fy = K\[4\] > 0 .*found fx = 0, fy = 0"),
        (with_k(0, -500.0), r"found fx = -500"),
        (with_k(4, 0.0), r"fy = 0"),
        (with_k(2, np.nan), r"expected finite values"),
        (with_k(0, np.inf), r"expected finite values"),
        (with_k(1, 0.5), r"expected zero skew K\[1\] = 0, found 0.5"),
        (with_k(8, 2.0), r"last row \(0, 0, 1\), found .* last row \(0, 0, 2\)"),
        (with_k(6, 1.0), r"last row \(1, 0, 1\)"),
        (with_k(3, 1.0), r"found K\[3\] = 1"),
        (roi, r"expected the size of the image 640x480 \(or 0x0\), found the 320x240 region of interest = 320x240"),
        (binned, r"expected the size of the image 640x480 \(or 0x0\), found 640x480 binned 2x1 = 320x480"),
        (short_k, r"expected 9 values \(row-major 3x3\), found 4"),
    ]
    for msg, pattern in cases:
        with pytest.raises(ConversionError, match=pattern):
            camera_info_to_k(msg, 640, 480)
    with pytest.raises(ConversionError, match=r"image width: expected an integer > 0, found 0"):
        camera_info_to_k(_camera_info(_k()), 0, 480)
    with pytest.raises(ConversionError, match=r"expected a sensor_msgs/CameraInfo"):
        camera_info_to_k(Image(), 640, 480)  # type: ignore[arg-type]


def test_make_camera_info(header: Header) -> None:
    k = _k(fx=612.5, fy=611.0, cx=320.3, cy=241.7)
    msg = make_camera_info(header, k, 640, 480)
    _check_header(msg, header)
    assert (msg.width, msg.height) == (640, 480)
    assert msg.distortion_model == "plumb_bob"
    np.testing.assert_array_equal(np.asarray(msg.d), np.zeros(5))
    np.testing.assert_array_equal(np.asarray(msg.k).reshape(3, 3), k)
    np.testing.assert_array_equal(np.asarray(msg.r).reshape(3, 3), np.eye(3))
    np.testing.assert_array_equal(np.asarray(msg.p).reshape(3, 4), np.hstack([k, np.zeros((3, 1))]))
    assert (msg.binning_x, msg.binning_y) == (0, 0)
    assert (msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height) == (0, 0, 0, 0)
    back = deserialize_message(serialize_message(msg), CameraInfo)
    np.testing.assert_array_equal(camera_info_to_k(back, 640, 480), k)


def test_make_camera_info_errors(header: Header) -> None:
    cases: list[tuple[Any, Any, int, int, str]] = [
        (header, np.eye(3)[:2], 640, 480, r"k: expected shape \(3, 3\), found \(2, 3\)"),
        (header, _k().ravel(), 640, 480, r"k: expected shape \(3, 3\), found \(9,\)"),
        (header, [[1, 0, 0], [0, 1, 0], [0, 0, 1]], 640, 480, r"k: expected a numpy.ndarray, found list"),
        (header, _k(fx=np.nan), 640, 480, r"expected finite values"),
        (header, _k(fy=0.0), 640, 480, r"fy = 0"),
        (header, _k(), 0, 480, r"width: expected an integer > 0, found 0"),
        (header, _k(), 640, -1, r"height: expected an integer > 0, found -1"),
        (None, _k(), 640, 480, r"header: expected a std_msgs/Header, found NoneType"),
    ]
    for hdr, k, width, height, pattern in cases:
        with pytest.raises(ConversionError, match=pattern):
            make_camera_info(hdr, k, width, height)


# ------------------------------------------------------------------------------------------------ depth and images


def _depth_with_invalid() -> np.ndarray:
    depth = _rng().uniform(0.3, 20.0, (5, 7)).astype(np.float32)
    depth[0, :5] = [np.nan, np.inf, -np.inf, 0.0, -1.5]
    return depth


def test_depth_32fc1_nan_invalid(header: Header) -> None:
    depth = _depth_with_invalid()
    msg = depth_to_image(header, depth)
    _check_header(msg, header)
    assert (msg.encoding, msg.is_bigendian, msg.step, msg.width, msg.height) == ("32FC1", 0, 7 * 4, 7, 5)
    out = _decode_image(msg)
    assert np.isnan(out[0, :5]).all()
    assert _same_bits(out[1:], depth[1:]) and _same_bits(out[0, 5:], depth[0, 5:])


def test_depth_32fc1_inf_invalid(header: Header) -> None:
    depth = _depth_with_invalid()
    out = _decode_image(depth_to_image(header, depth, invalid="inf"))
    assert (out[0, :5] == np.inf).all()
    assert _same_bits(out[1:], depth[1:])


def test_depth_float64_is_cast_and_out_of_range_is_invalid(header: Header) -> None:
    depth = np.array([[1.25, 1e300, 2.0]], dtype=np.float64)
    out = _decode_image(depth_to_image(header, depth))
    assert out[0, 0] == np.float32(1.25) and np.isnan(out[0, 1]) and out[0, 2] == 2.0


def test_depth_16uc1_millimetres(header: Header) -> None:
    depth = np.array(
        [[np.nan, np.inf, 0.0, -0.2, 1e-7, 0.0004, 0.0625, 1.2344, 1.2346, 65.535, 70.0, 1e30]], dtype=np.float32
    )
    msg = depth_to_image(header, depth, encoding="16UC1")
    _check_header(msg, header)
    assert (msg.encoding, msg.is_bigendian, msg.step) == ("16UC1", 0, depth.shape[1] * 2)
    out = _decode_image(msg)
    assert out.dtype == np.dtype("<u2")
    # invalid -> 0; a valid tiny depth -> 1 mm (never 0); 0.0625 m = 62.5 mm exactly -> 63 (half up);
    # beyond 65.535 m saturates at 65535.
    assert out[0].tolist() == [0, 0, 0, 0, 1, 1, 63, 1234, 1235, 65535, 65535, 65535]
    # invalid="inf" has no meaning in 16UC1: still 0.
    assert _decode_image(depth_to_image(header, depth, "16UC1", invalid="inf"))[0, :4].tolist() == [0, 0, 0, 0]


def test_depth_errors(header: Header) -> None:
    good = np.ones((2, 3), dtype=np.float32)
    cases: list[tuple[Any, Any, str, str, str]] = [
        (header, np.ones((2, 3, 1), np.float32), "32FC1", "nan", r"depth: expected shape \(H, W\), found \(2, 3, 1\)"),
        (header, np.ones((0, 3), np.float32), "32FC1", "nan", r"expected H > 0 and W > 0"),
        (header, np.ones((2, 3), np.uint16), "32FC1", "nan", r"expected a floating point array .* found dtype uint16"),
        (header, [[1.0]], "32FC1", "nan", r"depth: expected a numpy.ndarray, found list"),
        (header, good, "mono16", "nan", r"expected one of 32FC1, 16UC1, found 'mono16'"),
        (header, good, "32FC1", "zero", r"invalid: expected 'nan' or 'inf', found 'zero'"),
        ("frame", good, "32FC1", "nan", r"header: expected a std_msgs/Header, found str"),
    ]
    for hdr, depth, encoding, invalid, pattern in cases:
        with pytest.raises(ConversionError, match=pattern):
            depth_to_image(hdr, depth, encoding, invalid)


def test_mask_to_image(header: Header) -> None:
    mask = _rng().random((6, 10)) > 0.5
    msg = mask_to_image(header, mask[:, ::2])  # non-contiguous input
    _check_header(msg, header)
    assert (msg.encoding, msg.step, msg.width, msg.height) == ("mono8", 5, 5, 6)
    out = _decode_image(msg)
    np.testing.assert_array_equal(out, np.where(mask[:, ::2], 255, 0))
    for bad, pattern in [(mask.astype(np.uint8), r"expected dtype bool, found uint8"), (mask[0], r"found \(10,\)")]:
        with pytest.raises(ConversionError, match=pattern):
            mask_to_image(header, bad)


def test_normals_to_image(header: Header) -> None:
    normal = _rng().normal(size=(4, 6, 3)).astype(np.float32)
    normal /= np.linalg.norm(normal, axis=2, keepdims=True)
    normal[0, 0] = [np.nan, 0.0, 1.0]
    normal[1, 1] = [0.0, np.inf, 0.0]
    msg = normals_to_image(header, normal)
    _check_header(msg, header)
    assert (msg.encoding, msg.step, msg.is_bigendian) == ("32FC3", 6 * 12, 0)
    out = _decode_image(msg)
    assert np.isnan(out[0, 0]).all() and np.isnan(out[1, 1]).all()
    keep = np.ones((4, 6), bool)
    keep[0, 0] = keep[1, 1] = False
    assert _same_bits(out[keep], normal[keep])
    with pytest.raises(ConversionError, match=r"normal: expected shape \(H, W, 3\), found \(4, 6\)"):
        normals_to_image(header, normal[..., 0])


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_rgb_to_image_round_trip(header: Header, encoding: str) -> None:
    rgb = _rng().integers(0, 256, (5, 8, 3), dtype=np.uint8)
    msg = rgb_to_image(header, rgb, encoding)
    _check_header(msg, header)
    assert (msg.encoding, msg.step, msg.is_bigendian) == (encoding, 24, 0)
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)
    for bad, enc, pattern in [
        (rgb[..., :2], "rgb8", r"rgb: expected shape \(H, W, 3\) dtype uint8"),
        (rgb.astype(np.float32), "rgb8", r"found \(5, 8, 3\) float32"),
        (rgb, "mono8", r"expected 'rgb8' or 'bgr8', found 'mono8'"),
    ]:
        with pytest.raises(ConversionError, match=pattern):
            rgb_to_image(header, bad, enc)


@pytest.mark.parametrize("encoding", ["32FC1", "16UC1"])
def test_image_to_float_inverts_depth_to_image(header: Header, encoding: str) -> None:
    depth = _depth_with_invalid()
    out = image_to_float(depth_to_image(header, depth, encoding))
    assert out.dtype == np.float32 and out.shape == depth.shape and out.flags.writeable
    valid = np.isfinite(depth) & (depth > 0)
    assert np.isnan(out[~valid]).all()
    if encoding == "32FC1":
        assert _same_bits(out[valid], depth[valid])
    else:
        np.testing.assert_allclose(out[valid], depth[valid], atol=0.0005 + 1e-6)


@pytest.mark.parametrize("big_endian", [False, True])
def test_image_to_float_padding_and_byte_order(big_endian: bool) -> None:
    depth = _rng().uniform(0.1, 5.0, (3, 4)).astype(np.float32)
    np.testing.assert_array_equal(image_to_float(_image_msg(depth, "32FC1", pad=3, big_endian=big_endian)), depth)
    mm = np.array([[0, 1, 65535], [1234, 500, 7]], dtype=np.uint16)
    out = image_to_float(_image_msg(mm, "16UC1", pad=1, big_endian=big_endian))
    assert np.isnan(out[0, 0])
    np.testing.assert_array_equal(out.ravel()[1:], mm.ravel()[1:].astype(np.float32) / np.float32(1000))


def test_image_to_float_errors() -> None:
    good = _image_msg(np.ones((2, 3), np.float32), "32FC1")
    cases = [
        (_image_msg(np.ones((2, 3), np.uint8), "mono8"), r"expected one of 32FC1, 16UC1, found 'mono8'"),
        (Image(height=2, width=3, encoding="32FC1", step=11, data=bytes(24)), r"= 12 for 32FC1, found 11"),
        (Image(height=2, width=3, encoding="16UC1", step=6, data=bytes(11)), r"at least step \* height = 6 \* 2 = 12"),
        (Image(height=0, width=3, encoding="16UC1", step=6, data=b""), r"expected width > 0 and height > 0"),
    ]
    for msg, pattern in cases:
        with pytest.raises(ConversionError, match=pattern):
            image_to_float(msg)
    with pytest.raises(ConversionError, match="max_pixels"):
        image_to_float(good, max_pixels=5)


def test_colorize_depth_to_image_uses_the_package_colormap(header: Header) -> None:
    depth = _depth_with_invalid()
    msg = colorize_depth_to_image(header, depth)
    _check_header(msg, header)
    assert (msg.encoding, msg.step) == ("bgr8", 7 * 3)
    np.testing.assert_array_equal(_decode_image(msg), colorize_depth(depth)[..., ::-1])
    with pytest.raises(ConversionError, match=r"depth: expected shape \(H, W\)"):
        colorize_depth_to_image(header, depth[None])


# ------------------------------------------------------------------------------------------------ point clouds


def _point_map(height: int = 5, width: int = 7) -> np.ndarray:
    rng = _rng()
    z = rng.uniform(0.5, 10.0, (height, width)).astype(np.float32)
    points = np.stack([rng.uniform(-1, 1, (height, width)) * z, rng.uniform(-1, 1, (height, width)) * z, z], -1)
    points = points.astype(np.float32)
    points[0, 0] = np.nan
    points[1, 2] = [1.0, np.inf, 2.0]
    points[2, 3, 2] = np.nan
    return points


def _xyz(cloud: np.ndarray) -> np.ndarray:
    return np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=-1)


def _normals(cloud: np.ndarray) -> np.ndarray:
    return np.stack([cloud["normal_x"], cloud["normal_y"], cloud["normal_z"]], axis=-1)


def _fields(msg: PointCloud2) -> list[tuple[str, int, int, int]]:
    return [(f.name, f.offset, f.datatype, f.count) for f in msg.fields]


def test_cloud_organized_xyz(header: Header) -> None:
    points = _point_map()
    msg = points_to_cloud(header, points)
    _check_header(msg, header)
    assert _fields(msg) == [("x", 0, PointField.FLOAT32, 1), ("y", 4, PointField.FLOAT32, 1), ("z", 8, 7, 1)]
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (5, 7, 12, 7 * 12)
    assert msg.is_dense is False and msg.is_bigendian is False
    xyz = _xyz(_read_points(msg))
    valid = np.isfinite(points).all(axis=2)
    assert valid.sum() == 5 * 7 - 3
    assert np.isnan(xyz[~valid]).all()  # every coordinate of an invalid point is NaN
    assert _same_bits(xyz[valid], points[valid])


def test_cloud_organized_rgb_normals(header: Header) -> None:
    points = _point_map()
    rgb = _rng().integers(0, 256, (5, 7, 3), dtype=np.uint8)
    rgb[0, 1] = (255, 255, 255)
    normals = _rng().normal(size=(5, 7, 3)).astype(np.float32)
    normals[4, 4, 1] = np.nan
    msg = points_to_cloud(header, points, rgb, normals)
    _check_header(msg, header)
    names = ["x", "y", "z", "rgb", "normal_x", "normal_y", "normal_z"]
    assert _fields(msg) == [(n, 4 * i, PointField.FLOAT32, 1) for i, n in enumerate(names)]
    assert (msg.point_step, msg.row_step) == (28, 7 * 28)
    cloud = _read_points(msg)
    valid = np.isfinite(points).all(axis=2)
    assert _same_bits(_xyz(cloud)[valid], points[valid])
    np.testing.assert_array_equal(_unpack_rgb(cloud["rgb"]), rgb)
    good_normal = np.isfinite(normals).all(axis=2)
    assert _same_bits(_normals(cloud)[good_normal], normals[good_normal])
    assert np.isnan(_normals(cloud)[4, 4]).all()


def test_cloud_normals_without_rgb(header: Header) -> None:
    points = _point_map()
    normals = _rng().normal(size=(5, 7, 3)).astype(np.float32)
    msg = points_to_cloud(header, points, normals=normals)
    assert [(f.name, f.offset) for f in msg.fields] == [
        ("x", 0), ("y", 4), ("z", 8), ("normal_x", 12), ("normal_y", 16), ("normal_z", 20)
    ]
    assert msg.point_step == 24
    assert _same_bits(_normals(_read_points(msg)), normals)


def test_cloud_float_rgb_from_mono16(header: Header) -> None:
    """image_to_rgb gives float32 in [0, 1] for mono16: the cloud colours are its 8-bit rounding."""
    grey = np.array([[0, 257, 32768], [65535, 100, 65278]], dtype=np.uint16)
    rgb = image_to_rgb(_image_msg(grey, "mono16"))
    cloud = _read_points(points_to_cloud(header, np.ones((2, 3, 3), np.float32), rgb))
    expected = np.round(grey / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(_unpack_rgb(cloud["rgb"]), np.repeat(expected[..., None], 3, axis=2))
    odd = np.array([[[np.nan, -0.5, 1.5]]], dtype=np.float64)
    assert _unpack_rgb(_read_points(points_to_cloud(header, np.ones((1, 1, 3)), odd))["rgb"]).tolist() == [
        [[0, 0, 255]]
    ]


def test_cloud_rgb_packing_is_pcl_convention(header: Header) -> None:
    points = np.ones((1, 3, 3), dtype=np.float32)
    rgb = np.array([[[0x12, 0x34, 0x56], [255, 0, 0], [0, 0, 255]]], dtype=np.uint8)
    cloud = _read_points(points_to_cloud(header, points, rgb))
    assert cloud["rgb"].view("<u4").tolist() == [[0x00123456, 0x00FF0000, 0x000000FF]]


@pytest.mark.parametrize("stride", [1, 2, 3, 8])
@pytest.mark.parametrize("organized", [True, False])
def test_cloud_stride(header: Header, stride: int, organized: bool) -> None:
    points = _point_map(5, 7)
    rgb = _rng().integers(0, 256, (5, 7, 3), dtype=np.uint8)
    msg = points_to_cloud(header, points, rgb, organized=organized, stride=stride)
    sub_points, sub_rgb = points[::stride, ::stride], rgb[::stride, ::stride]
    cloud = _read_points(msg)
    valid = np.isfinite(sub_points).all(axis=2)
    if organized:
        assert (msg.height, msg.width) == (-(-5 // stride), -(-7 // stride)) == sub_points.shape[:2]
        assert _same_bits(_xyz(cloud)[valid], sub_points[valid])
        np.testing.assert_array_equal(_unpack_rgb(cloud["rgb"]), sub_rgb)
    else:
        assert (msg.height, msg.width) == (1, int(valid.sum()))
        assert _same_bits(_xyz(cloud)[0], sub_points[valid])
        np.testing.assert_array_equal(_unpack_rgb(cloud["rgb"])[0], sub_rgb[valid])


def test_cloud_unorganized_drops_invalid_and_is_dense(header: Header) -> None:
    points = _point_map()
    normals = _rng().normal(size=(5, 7, 3)).astype(np.float32)
    msg = points_to_cloud(header, points, normals=normals, organized=False)
    _check_header(msg, header)
    valid = np.isfinite(points).all(axis=2)
    assert (msg.height, msg.width, msg.row_step) == (1, valid.sum(), valid.sum() * 24)
    assert msg.is_dense is True
    cloud = _read_points(msg)[0]
    assert _same_bits(_xyz(cloud), points[valid])  # row-major pixel order
    assert _same_bits(_normals(cloud), normals[valid])
    normals[3, 3] = np.nan  # a kept point without a normal: not dense any more
    assert points_to_cloud(header, points, normals=normals, organized=False).is_dense is False


def test_cloud_all_invalid_unorganized_is_empty(header: Header) -> None:
    msg = points_to_cloud(header, np.full((3, 4, 3), np.nan, np.float32), organized=False)
    assert (msg.height, msg.width, msg.row_step, len(msg.data)) == (1, 0, 0, 0)
    assert deserialize_message(serialize_message(msg), PointCloud2).width == 0


def test_cloud_float64_points_and_non_contiguous_inputs(header: Header) -> None:
    points = _point_map().astype(np.float64)
    points[4, 6] = [1e300, 0.0, 1.0]  # beyond float32: invalid
    rgb = np.ascontiguousarray(_rng().integers(0, 256, (5, 7, 4), dtype=np.uint8))[..., 2::-1]
    cloud = _read_points(points_to_cloud(header, points, rgb))
    with np.errstate(over="ignore"):
        points32 = points.astype(np.float32)
    valid = np.isfinite(points32).all(axis=2)
    assert not valid[4, 6] and np.isnan(_xyz(cloud)[4, 6]).all()
    assert _same_bits(_xyz(cloud)[valid], points32[valid])
    np.testing.assert_array_equal(_unpack_rgb(cloud["rgb"]), rgb)


def test_cloud_errors(header: Header) -> None:
    points = _point_map()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"points": points[..., :2]}, r"points: expected shape \(H, W, 3\), found \(5, 7, 2\)"),
        ({"points": np.ones((5, 7, 3), np.int32)}, r"points: expected a floating point array"),
        ({"rgb": np.zeros((5, 6, 3), np.uint8)}, r"rgb: expected shape \(5, 7, 3\) .* found shape \(5, 6, 3\)"),
        ({"rgb": np.zeros((5, 7, 3), np.int16)}, r"uint8 or float in \[0, 1\], found shape \(5, 7, 3\) dtype int16"),
        ({"normals": np.zeros((5, 7, 3), np.uint8)}, r"normals: expected a floating point array"),
        ({"normals": np.zeros((4, 7, 3), np.float32)}, r"normals: expected shape \(5, 7, 3\) .* found \(4, 7, 3\)"),
        ({"stride": 0}, r"stride: expected an integer > 0, found 0"),
        ({"stride": 1.5}, r"stride: expected an integer, found float"),
        ({"organized": "yes"}, r"organized: expected a bool, found str"),
        ({"header": Time()}, r"header: expected a std_msgs/Header, found Time"),
    ]
    for overrides, pattern in cases:
        kwargs: dict[str, Any] = {"header": header, "points": points, **overrides}
        with pytest.raises(ConversionError, match=pattern):
            points_to_cloud(**kwargs)
