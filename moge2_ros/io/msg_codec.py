"""ROS-free numpy codec of the ROS 2 sensor messages: the byte layouts of Image, CompressedImage, CameraInfo and
PointCloud2, shared by the ROS node (:mod:`moge2_ros.ros.conversions`, rclpy messages) and the rosbag2 tools
(:mod:`moge2_ros.bags`, ``rosbags`` dataclasses).

Nothing here imports ROS. Decoders take any object with the ROS field names (an rclpy message, a ``rosbags``
dataclass, a ``types.SimpleNamespace``); encoders return plain field records (:class:`ImageFields`,
:class:`CameraInfoFields`, :class:`CloudFields`) that the caller copies into its own message class.

Conventions:
    * Frames: REP 103 optical frame (x right, y down, z forward), the same as MoGe's OpenCV camera frame; no
      rotation is applied anywhere.
    * Units: metres; intrinsics in pixels (ROS ``CameraInfo.K``: pixel centres at integer coordinates).
    * Invalid float values are NaN (``encode_depth(invalid="inf")`` writes +Inf, REP 117 "no return"); 16UC1 depth
      uses 0 = invalid. Depth values that are non-finite or <= 0 are invalid.
    * Encoded buffers are little-endian (``is_bigendian = 0``), rows unpadded, ``bytes`` (point clouds: the
      ``bytearray`` the points were written into), because rclpy copies a bytes-like object into its
      ``array('B')`` with one ``memcpy`` while a numpy array is converted element by element.

Errors:
    Every bad input raises :class:`ConversionError` stating what was expected and what was found. Sizes, steps
    and buffer lengths are checked before any byte is read, so a hostile message costs neither memory nor time.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from moge2_ros.errors import BudgetError, InputError
from moge2_ros.io.plausibility import check_intrinsics
from moge2_ros.io.writers import colorize_depth, depth_to_mm_uint16

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEPTH_ENCODINGS",
    "IMAGE_ENCODINGS",
    "CameraInfoFields",
    "CloudFields",
    "ConversionError",
    "GeometryFields",
    "ImageFields",
    "CameraInfoLayout",
    "camera_info_fields",
    "camera_info_layout",
    "check_camera_info",
    "decode_cloud_xyz",
    "decode_compressed_rgb",
    "decode_depth",
    "decode_image_rgb",
    "decode_rgb",
    "distortion_note",
    "encode_camera_info",
    "encode_cloud",
    "encode_colorized_depth",
    "encode_depth",
    "encode_image",
    "encode_mask",
    "encode_normals",
    "encode_rgb",
    "is_compressed",
    "k_matrix",
]

#: Largest accepted input image in pixels (the Predictor's default limit): protects the process from absurd
#: allocations requested by a malformed or hostile message.
DEFAULT_MAX_PIXELS: Final[int] = 40_000_000

#: Encodings of depth images (REP 118): float metres or uint16 millimetres (0 = invalid).
DEPTH_ENCODINGS: Final[tuple[str, ...]] = ("32FC1", "16UC1")


class ConversionError(InputError):
    """A ROS message or an array cannot be converted (bad encoding, size, step, data, intrinsics, ...)."""


class ImageTooLargeError(ConversionError, BudgetError):
    """An image whose size (from its header) is over the pixel limit: refused before it is decoded."""


# ------------------------------------------------------------------------------------------------ helpers


def short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters (error messages quote untrusted values)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def field(msg: Any, name: str, what: str) -> Any:
    """``msg.<name>``; a message object without that field raises :class:`ConversionError`."""
    try:
        return getattr(msg, name)
    except AttributeError:
        raise ConversionError(f"{what}: expected a message with a field '{name}', found {type(msg).__name__}") from None


def as_int(value: Any, what: str) -> int:
    """An integer message field or argument as a Python int (bools and floats are rejected)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ConversionError(f"{what}: expected an integer, found {type(value).__name__} {short(value)}")
    return int(value)


def positive_int(value: Any, what: str) -> int:
    """An integer > 0 (see :func:`as_int`)."""
    number = as_int(value, what)
    if number <= 0:
        raise ConversionError(f"{what}: expected an integer > 0, found {number}")
    return number


def as_str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ConversionError(f"{what}: expected a str, found {type(value).__name__} {short(value)}")
    return value


def byte_buffer(data: Any, what: str) -> npt.NDArray[np.uint8]:
    """Zero-copy ``(N,)`` uint8 view of a message's ``uint8[]`` field (``array('B')``, ``bytes``, numpy uint8)."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError, BufferError) as exc:
        raise ConversionError(
            f"{what}: expected a contiguous bytes-like buffer (array('B') or bytes), found {type(data).__name__}"
        ) from exc


def check_image_size(width: int, height: int, max_pixels: int, what: str) -> None:
    """Require ``width, height > 0`` and ``width * height <= max_pixels``."""
    if width <= 0 or height <= 0:
        raise ConversionError(f"{what}: expected width > 0 and height > 0, found {width}x{height}")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{what}: expected at most max_pixels = {max_pixels} pixels, found {width}x{height} = {width * height}"
        )


def as_array(value: Any, what: str) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise ConversionError(f"{what}: expected a numpy.ndarray, found {type(value).__name__}")
    return value


def float_map(value: Any, what: str, channels: int | None) -> np.ndarray:
    """Require a floating ``(H, W)`` (``channels`` None) or ``(H, W, channels)`` array with H, W > 0."""
    array = as_array(value, what)
    expected = "(H, W)" if channels is None else f"(H, W, {channels})"
    ndim = 2 if channels is None else 3
    if array.ndim != ndim or (channels is not None and array.shape[2] != channels):
        raise ConversionError(f"{what}: expected shape {expected}, found {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ConversionError(f"{what}: expected H > 0 and W > 0, found shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ConversionError(f"{what}: expected a floating point array (metres), found dtype {array.dtype}")
    return array


def finite3(array: np.ndarray) -> npt.NDArray[np.bool_]:
    """``(...)`` bool: all 3 components of ``(..., 3)`` finite (component-wise: ``.all(axis=-1)`` is ~30x slower)."""
    finite = np.isfinite(array[..., 0])
    finite &= np.isfinite(array[..., 1])
    finite &= np.isfinite(array[..., 2])
    return finite


def _all_nan3(array: np.ndarray, where: np.ndarray) -> bool:
    """True when every ``(..., 3)`` vector of ``array`` at ``where`` is NaN in all three components."""
    nan3 = np.isnan(array[..., 0])
    nan3 &= np.isnan(array[..., 1])
    nan3 &= np.isnan(array[..., 2])
    return bool(np.array_equal(nan3 & where, where))


def valid_depth(depth: np.ndarray) -> npt.NDArray[np.bool_]:
    """``(H, W)`` bool: finite and > 0 (NaN, +-Inf, 0 and negative depths are invalid)."""
    return (depth > 0) & (depth < np.inf)


# ------------------------------------------------------------------------------------------------ image layout


@dataclass(frozen=True)
class ImageFields:
    """Content of a ``sensor_msgs/Image`` (everything but the header)."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: bytes


def encode_image(pixels: np.ndarray, encoding: str) -> ImageFields:
    """Image fields holding ``pixels`` ``(H, W[, C])`` (a little-endian dtype) as unpadded rows."""
    height, width = pixels.shape[:2]
    step = width * (pixels.itemsize * (pixels.shape[2] if pixels.ndim == 3 else 1))
    # C order whatever the strides; bytes: rclpy copies it in one memcpy
    return ImageFields(height, width, encoding, 0, step, pixels.tobytes())


@dataclass(frozen=True)
class _Encoding:
    """Layout of a supported input encoding."""

    name: str  # canonical ROS name (sensor_msgs/image_encodings.hpp)
    channels: int  # values per pixel
    itemsize: int  # bytes per value
    bgr: bool  # colour order B, G, R (rather than R, G, B)


_CANONICAL_ENCODINGS: Final[dict[str, _Encoding]] = {
    e.name: e
    for e in (
        _Encoding("rgb8", 3, 1, False),
        _Encoding("bgr8", 3, 1, True),
        _Encoding("rgba8", 4, 1, False),
        _Encoding("bgra8", 4, 1, True),
        _Encoding("mono8", 1, 1, False),
        _Encoding("mono16", 1, 2, False),
    )
}
#: OpenCV-style aliases: 8UC3 is OpenCV's (and cv_bridge's) BGR; 8UC1 / 16UC1 are grey.
_ALIASES: Final[dict[str, str]] = {"8UC3": "bgr8", "8UC1": "mono8", "16UC1": "mono16"}
_ENCODING_LOOKUP: Final[dict[str, _Encoding]] = {
    **{name.lower(): enc for name, enc in _CANONICAL_ENCODINGS.items()},
    **{alias.lower(): _CANONICAL_ENCODINGS[target] for alias, target in _ALIASES.items()},
}

#: Input encodings accepted by :func:`decode_image_rgb` (case-insensitive).
IMAGE_ENCODINGS: Final[tuple[str, ...]] = (*_CANONICAL_ENCODINGS, *_ALIASES)


def _image_buffer(
    msg: Any, what: str, label: str, bytes_per_pixel: int, max_pixels: int
) -> tuple[int, int, int, npt.NDArray[np.uint8]]:
    """Validate an Image's geometry before touching its bytes: ``(width, height, step, data)``.

    Checks ``0 < width * height <= max_pixels``, ``step >= width * bytes_per_pixel`` and
    ``len(data) >= step * height`` (``what`` prefixes the field names, ``label`` names the encoding).
    """
    width = as_int(field(msg, "width", what), f"{what}.width")
    height = as_int(field(msg, "height", what), f"{what}.height")
    check_image_size(width, height, max_pixels, f"{what} ({label})")
    step = as_int(field(msg, "step", what), f"{what}.step")
    if step < width * bytes_per_pixel:
        raise ConversionError(
            f"{what}.step: expected >= width * bytes_per_pixel = {width} * {bytes_per_pixel} = "
            f"{width * bytes_per_pixel} for {label}, found {step}"
        )
    raw = byte_buffer(field(msg, "data", what), f"{what}.data")
    if raw.size < step * height:
        raise ConversionError(
            f"{what}.data: expected at least step * height = {step} * {height} = {step * height} bytes, "
            f"found {raw.size}"
        )
    return width, height, step, raw


def _is_bigendian(msg: Any, what: str) -> bool:
    value = field(msg, "is_bigendian", what)
    if not isinstance(value, (int, np.integer)):  # bool is an int
        raise ConversionError(f"{what}.is_bigendian: expected 0 or 1, found {short(value)}")
    return bool(value)


def decode_image_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode the fields of a ``sensor_msgs/Image`` into a channels-last RGB array.

    Row padding (``step > width * bytes_per_pixel``) is honoured; trailing bytes after ``step * height`` are
    ignored. Everything is checked before a byte is read: known encoding, ``0 < width``, ``0 < height``,
    ``width * height <= max_pixels``, ``step >= width * bytes_per_pixel``, ``len(data) >= step * height``.

    Args:
        msg: any object with the Image fields (``width, height, step, encoding, is_bigendian, data``).
            Encodings: ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8`` (alpha dropped), ``mono8``, ``mono16``
            (``is_bigendian`` honoured) and the aliases ``8UC3`` (= ``bgr8``, OpenCV's order), ``8UC1``
            (= ``mono8``), ``16UC1`` (= ``mono16``); matched case-insensitively.
        max_pixels: largest accepted ``width * height``.

    Returns:
        ``(H, W, 3)`` RGB: uint8 for the 8-bit encodings (grey replicated to 3 channels); float32 in [0, 1]
        (value / 65535) for 16-bit grey. The array is a **read-only**, possibly non-contiguous view of the
        message buffer where possible (8-bit encodings; grey is a broadcast view): copy it before writing.

    Raises:
        ConversionError: unsupported encoding, bad size, step or data length, non-buffer data.
    """
    max_pixels = positive_int(max_pixels, "max_pixels")
    name = as_str(field(msg, "encoding", "image"), "image.encoding")
    spec = _ENCODING_LOOKUP.get(name.strip().lower())
    if spec is None:
        raise ConversionError(f"image.encoding: expected one of {', '.join(IMAGE_ENCODINGS)}, found {short(name)}")
    width, height, step, raw = _image_buffer(msg, "image", spec.name, spec.channels * spec.itemsize, max_pixels)

    if spec.itemsize == 1:
        pixels = np.ndarray((height, width, spec.channels), np.uint8, raw, 0, (step, spec.channels, 1))
        pixels.flags.writeable = False  # a view of the message: never write through it
        if spec.channels == 1:
            return np.broadcast_to(pixels, (height, width, 3))
        return pixels[..., 2::-1] if spec.bgr else pixels[..., 0:3]

    dtype = np.dtype(">u2" if _is_bigendian(msg, "image") else "<u2")
    grey = np.ndarray((height, width), dtype, raw, 0, (step, 2))
    scaled = grey.astype(np.float32) / np.float32(65535.0)  # exact for 0 and 65535
    return np.broadcast_to(scaled[..., None], (height, width, 3))


def decode_depth(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> npt.NDArray[np.float32]:
    """Decode the fields of a REP 118 depth image into metres (the inverse of :func:`encode_depth`).

    Same checks as :func:`decode_image_rgb` (size, ``step >= width * bytes``, data length) before reading; row
    padding and ``is_bigendian`` are honoured.

    Args:
        msg: any object with the Image fields; ``32FC1`` (metres) or ``16UC1`` (millimetres, 0 = invalid).
        max_pixels: largest accepted ``width * height``.

    Returns:
        ``(H, W)`` float32 depth in metres, C-contiguous (a copy); 32FC1 values unchanged (NaN / +-Inf kept),
        16UC1 zeros become NaN.

    Raises:
        ConversionError: other encoding, bad size, step or data length.
    """
    max_pixels = positive_int(max_pixels, "max_pixels")
    encoding = as_str(field(msg, "encoding", "depth image"), "depth image.encoding")
    if encoding not in DEPTH_ENCODINGS:
        raise ConversionError(
            f"depth image.encoding: expected one of {', '.join(DEPTH_ENCODINGS)}, found {short(encoding)}"
        )
    width, height, step, raw = _image_buffer(msg, "depth image", encoding, 4 if encoding == "32FC1" else 2, max_pixels)
    order = ">" if _is_bigendian(msg, "depth image") else "<"
    if encoding == "32FC1":
        values = np.ndarray((height, width), np.dtype(order + "f4"), raw, 0, (step, 4))
        return values.astype(np.float32)  # native order, contiguous copy
    millimetres = np.ndarray((height, width), np.dtype(order + "u2"), raw, 0, (step, 2))
    metres = millimetres.astype(np.float32) / np.float32(1000.0)
    metres[millimetres == 0] = np.nan
    return metres


# ------------------------------------------------------------------------------------------------ compressed


# Pillow modes of 16-bit greyscale PNGs.
_PIL_GREY16_MODES: Final[frozenset[str]] = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_CODEC_PATTERN: Final[re.Pattern[str]] = re.compile(r"(?<![a-z0-9])(jpe?g|png)(?![a-z0-9])")


def _check_compressed_format(fmt: str) -> None:
    """Accept ``""``, ``"jpeg"``, ``"png"`` and compressed_image_transport's ``"<enc>; <codec> compressed <enc>"``."""
    lowered = fmt.strip().lower()
    if "compresseddepth" in lowered:
        raise ConversionError(
            f"compressed image.format: expected a colour image (jpeg or png), found {short(fmt)}: "
            "compressedDepth carries a depth image, subscribe to the colour image instead"
        )
    codec_part = lowered.split(";", 1)[1] if ";" in lowered else lowered
    if lowered and _CODEC_PATTERN.search(codec_part) is None:
        raise ConversionError(
            f"compressed image.format: expected 'jpeg', 'png' or '<encoding>; jpeg|png compressed <encoding>', "
            f"found {short(fmt)}"
        )


# End of a JPEG entropy-coded segment: a marker that is neither a stuffed 0xFF00, a restart marker nor fill.
_JPEG_MARKER: Final[re.Pattern[bytes]] = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
# Start-of-frame markers of Huffman-coded JPEGs (sequential, progressive, lossless); arithmetic coding is C9-CF.
_JPEG_SOF_HUFFMAN: Final[frozenset[int]] = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7})
_JPEG_SOF_ARITHMETIC: Final[frozenset[int]] = frozenset({0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def jpeg_scan_shortfall(data: bytes) -> tuple[int, int] | None:
    """``(needed, found)`` bytes when the JPEG's scans hold too little data for the size in its header, else None.

    libjpeg fills the blocks after a premature end of scan with grey and only warns (Pillow hides the warning),
    so a JPEG whose header claims 6000x6000 but whose scans cover 16x16 decodes "successfully" at full size.
    A rigorous lower bound catches it without decoding: in a Huffman-coded scan that starts a block's DC
    coefficient (sequential, or a progressive DC-first scan) every block costs at least one bit for its DC
    code, plus at least one for its AC codes in a sequential scan. Blocks are counted per component as if
    the scan were not interleaved (never more than the real count). Arithmetic-coded JPEGs (which can spend
    less than a bit per block) and files whose structure the decoder will reject anyway are not judged here.
    """
    if not data.startswith(b"\xff\xd8"):
        return None
    pos, n = 2, len(data)
    components: dict[int, int] = {}  # component id -> number of 8x8 blocks of that component
    sequential = None
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # standalone markers
            pos += 2
            continue
        if marker == 0xD9:  # EOI
            return None
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        segment = data[pos + 4:pos + 2 + length]
        if length < 2 or len(segment) != length - 2:
            return None
        if marker in _JPEG_SOF_ARITHMETIC:
            return None
        if marker in _JPEG_SOF_HUFFMAN:
            if len(segment) < 6:
                return None
            height, width, count = int.from_bytes(segment[1:3], "big"), int.from_bytes(segment[3:5], "big"), segment[5]
            if height == 0 or width == 0 or len(segment) < 6 + 3 * count or count == 0:
                return None  # height 0: defined later by a DNL marker; leave it to the decoder
            factors = {segment[6 + 3 * i]: (segment[7 + 3 * i] >> 4, segment[7 + 3 * i] & 15) for i in range(count)}
            h_max = max(h for h, _ in factors.values()) or 1
            v_max = max(v for _, v in factors.values()) or 1
            components = {cid: _ceil_div(_ceil_div(width * h, h_max), 8) * _ceil_div(_ceil_div(height * v, v_max), 8)
                          for cid, (h, v) in factors.items()}
            sequential = marker in (0xC0, 0xC1)
        if marker == 0xDA:  # start of scan: its entropy-coded data runs to the next real marker
            start = pos + 2 + length
            end_match = _JPEG_MARKER.search(data, start)
            end = end_match.start() if end_match else n
            if components and len(segment) >= 1:
                ids = [segment[1 + 2 * i] for i in range(segment[0]) if 1 + 2 * i < len(segment)]
                tail = segment[1 + 2 * segment[0]:]
                ss, ah = (tail[0], tail[2] >> 4) if len(tail) >= 3 else (1, 1)
                if ss == 0 and ah == 0:  # every block's DC coefficient starts here
                    bits_per_block = 2 if sequential else 1
                    needed_bits = sum(components.get(cid, 0) for cid in ids) * bits_per_block
                    if needed_bits > 8 * (end - start):
                        return _ceil_div(needed_bits, 8), end - start
            pos = end
            continue
        pos += 2 + length
    return None


def _pil_to_rgb(image: Any) -> np.ndarray:
    """Fully decode an opened Pillow image to C-contiguous ``(H, W, 3)`` uint8 RGB."""
    image.load()
    if image.mode in _PIL_GREY16_MODES:  # 16-bit grey PNG: scale 0..65535 to 0..255 (convert() would clip)
        grey = np.clip(np.asarray(image), 0, 65535)
        grey8 = np.round(grey / 257.0).astype(np.uint8)
        return np.repeat(grey8[..., None], 3, axis=2)
    if image.mode != "RGB":
        image = image.convert("RGB")  # L, LA, P, RGBA (alpha dropped), CMYK, 1, ...
    return np.asarray(image, dtype=np.uint8)


def decode_compressed_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode the fields of a ``sensor_msgs/CompressedImage`` (JPEG or PNG) into RGB with Pillow.

    Like ``image_transport``'s compressed subscriber, the data is decoded by its content (only the JPEG and PNG
    decoders are enabled); ``format`` must be empty, ``"jpeg"``/``"jpg"``/``"png"`` or compressed_image_transport's
    ``"<encoding>; jpeg|png compressed <encoding>"`` (e.g. ``"rgb8; jpeg compressed bgr8"``). ``compressedDepth``
    is rejected. The size in the header is checked against ``max_pixels`` before anything is decoded
    (decompression bombs), and Pillow's own bomb check applies too. Truncated data is rejected: data that ends
    before the image does (Pillow's "image file is truncated"; ``ImageFile.LOAD_TRUNCATED_IMAGES`` must stay
    False), and JPEGs whose scans are too short for the size in their header (:func:`jpeg_scan_shortfall`),
    before the full-size decode. EXIF orientation is not applied: a camera
    image must stay in sensor orientation to match its CameraInfo.

    Args:
        msg: any object with the CompressedImage fields (``format``, ``data``).
        max_pixels: largest accepted ``width * height``.

    Returns:
        ``(H, W, 3)`` uint8 RGB, C-contiguous. Grey is replicated, alpha dropped, 16-bit grey PNG scaled to
        8 bits (value / 257, rounded).

    Raises:
        ConversionError: empty, corrupt, truncated or non-JPEG/PNG data; unsupported format; too large.
    """
    max_pixels = positive_int(max_pixels, "max_pixels")
    fmt = as_str(field(msg, "format", "compressed image"), "compressed image.format")
    _check_compressed_format(fmt)
    raw = byte_buffer(field(msg, "data", "compressed image"), "compressed image.data")
    if raw.size == 0:
        raise ConversionError("compressed image.data: expected JPEG or PNG bytes, found 0 bytes")

    from PIL import Image as PILImage  # lazy: only users of compressed images pay for Pillow

    what = f"compressed image ({short(fmt, 40)}, {raw.size} bytes)"
    # The decoder's failures on hostile bytes are not part of any API: Pillow raises UnidentifiedImageError,
    # OSError, SyntaxError, ValueError, struct.error, EOFError, DecompressionBombError, ... The try blocks
    # below only wrap Pillow calls, so no bug of ours is hidden.
    try:
        opened = PILImage.open(io.BytesIO(raw), formats=("JPEG", "PNG"))
    except PILImage.DecompressionBombError as exc:  # Pillow's own limit, checked while reading the header
        raise ConversionError(
            f"{what}: expected at most max_pixels = {max_pixels} pixels, found a decompression bomb ({exc})"
        ) from exc
    except PILImage.UnidentifiedImageError as exc:
        raise ConversionError(
            f"{what}: expected JPEG or PNG data, found data starting with {raw[:8].tobytes()!r}"
        ) from exc
    except Exception as exc:  # noqa: BLE001
        raise ConversionError(f"{what}: expected JPEG or PNG data, found an unreadable header ({exc})") from exc
    with opened as image:
        width, height = image.size  # from the header only: nothing decoded yet
        check_image_size(width, height, max_pixels, what)
        shortfall = jpeg_scan_shortfall(raw.tobytes()) if image.format == "JPEG" else None
        if shortfall is not None:
            raise ConversionError(
                f"{what}: expected a complete JPEG image of {width}x{height}, found truncated data (its scans need "
                f"at least {shortfall[0]} bytes for that size, found {shortfall[1]})"
            )
        try:
            rgb = _pil_to_rgb(image)
        except Exception as exc:  # noqa: BLE001
            raise ConversionError(
                f"{what}: expected a complete {image.format} image of {width}x{height}, found corrupt or "
                f"truncated data ({exc})"
            ) from exc
    if rgb.shape != (height, width, 3):
        raise ConversionError(f"{what}: expected decoded shape {(height, width, 3)}, found {rgb.shape}")
    return rgb


def is_compressed(msg: Any) -> bool:
    """Whether ``msg`` is a ``sensor_msgs/CompressedImage`` (it has ``format`` and no ``encoding``)."""
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


def decode_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The model input of a camera image message: :func:`decode_compressed_rgb` for a ``CompressedImage``
    (:func:`is_compressed`), else :func:`decode_image_rgb`.

    This is the one decoding of camera images into the frame pipeline (:mod:`moge2_ros.pipeline.frame`), used by
    ``moge2_node`` and ``bag-infer`` alike.

    Returns:
        ``(H, W, 3)`` RGB: uint8 (a read-only view of the message buffer for raw 8-bit encodings), or float32 in
        [0, 1] for 16-bit grey raw images.

    Raises:
        ConversionError: as the two decoders.
    """
    if is_compressed(msg):
        return decode_compressed_rgb(msg, max_pixels)
    return decode_image_rgb(msg, max_pixels)


# ------------------------------------------------------------------------------------------------ intrinsics


def k_matrix(values: Any, what: str) -> npt.NDArray[np.float64]:
    """Validate 9 values (row-major) as a pinhole K: finite, fx, fy > 0, zero skew, rows 2-3 = (0 fy cy), (0 0 1).

    Returns:
        ``(3, 3)`` float64 K in pixels (a copy).
    """
    try:
        k = np.array(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConversionError(f"{what}: expected 9 numbers, found {type(values).__name__}") from exc
    if k.size != 9:
        raise ConversionError(f"{what}: expected 9 values (row-major 3x3), found {k.size}")
    k = k.reshape(3, 3)
    if not np.isfinite(k).all():
        raise ConversionError(f"{what}: expected finite values, found {k.ravel().tolist()}")
    fx, fy = k[0, 0], k[1, 1]
    if not (fx > 0 and fy > 0):
        raise ConversionError(
            f"{what}: expected fx = K[0] > 0 and fy = K[4] > 0 (pixels), found fx = {fx:g}, fy = {fy:g} "
            "(an uncalibrated camera publishes zeros)"
        )
    if k[0, 1] != 0:
        raise ConversionError(f"{what}: expected zero skew K[1] = 0, found {k[0, 1]:g}")
    if k[1, 0] != 0 or k[2, 0] != 0 or k[2, 1] != 0 or k[2, 2] != 1:
        raise ConversionError(
            f"{what}: expected K[3] = 0 and last row (0, 0, 1), found K[3] = {k[1, 0]:g}, "
            f"last row ({k[2, 0]:g}, {k[2, 1]:g}, {k[2, 2]:g})"
        )
    return k


@dataclass(frozen=True)
class CameraInfoLayout:
    """Where an image lies on the sensor a ``sensor_msgs/CameraInfo`` was calibrated for (image_geometry).

    Attributes:
        info_size: the message's ``(width, height)``: the full sensor resolution (the image size when 0x0).
        binning: ``(binning_x, binning_y)``, 1 = none (the message's 0 means 1).
        roi: ``(x_offset, y_offset, width, height)`` in full-resolution pixels; all zero = the full sensor.
    """

    info_size: tuple[int, int]
    binning: tuple[int, int]
    roi: tuple[int, int, int, int]


def camera_info_layout(msg: Any, width: int, height: int) -> CameraInfoLayout:
    """Check the size, binning and region of interest of a ``sensor_msgs/CameraInfo`` against its image.

    The image is the ROI of the full sensor (``msg.width x msg.height``; ROI all zero = the full sensor), then
    binned by ``binning_x x binning_y`` (0 or 1 = none): it must be ``roi.width / binning_x x roi.height /
    binning_y`` pixels, the binning must divide the ROI's offset and size, and the ROI must lie inside the sensor.
    A message of 0x0 without binning or ROI (sent by some drivers) means "the image size".

    Raises:
        ConversionError: one line starting ``camera_info``.
    """
    width = positive_int(width, "image width")
    height = positive_int(height, "image height")
    info_w = as_int(field(msg, "width", "camera_info"), "camera_info.width")
    info_h = as_int(field(msg, "height", "camera_info"), "camera_info.height")
    bin_x = as_int(field(msg, "binning_x", "camera_info"), "camera_info.binning_x")
    bin_y = as_int(field(msg, "binning_y", "camera_info"), "camera_info.binning_y")
    if bin_x < 0 or bin_y < 0:
        raise ConversionError(f"camera_info: expected binning_x, binning_y >= 0, found {bin_x}x{bin_y}")
    bin_x, bin_y = max(bin_x, 1), max(bin_y, 1)
    roi = field(msg, "roi", "camera_info")
    box = tuple(
        as_int(field(roi, f, "camera_info.roi"), f"camera_info.roi.{f}")
        for f in ("x_offset", "y_offset", "width", "height")
    )
    x_off, y_off, roi_w, roi_h = box
    has_roi = box != (0, 0, 0, 0) and box != (0, 0, info_w, info_h)
    if (info_w, info_h) == (0, 0) and not has_roi and (bin_x, bin_y) == (1, 1):
        return CameraInfoLayout((width, height), (1, 1), (0, 0, 0, 0))
    if info_w <= 0 or info_h <= 0:
        raise ConversionError(f"camera_info: expected the calibrated size (width, height > 0) with binning or a "
                              f"region of interest, found {info_w}x{info_h}")
    if has_roi:
        if roi_w <= 0 or roi_h <= 0 or x_off < 0 or y_off < 0 or x_off + roi_w > info_w or y_off + roi_h > info_h:
            raise ConversionError(
                f"camera_info.roi: expected a region inside the calibrated {info_w}x{info_h} image, found "
                f"x_offset={x_off}, y_offset={y_off}, width={roi_w}, height={roi_h}"
            )
        area_w, area_h = roi_w, roi_h
    else:
        x_off = y_off = 0
        area_w, area_h = info_w, info_h
    if area_w % bin_x or area_h % bin_y or x_off % bin_x or y_off % bin_y:
        raise ConversionError(
            f"camera_info: binning {bin_x}x{bin_y} does not divide the {'region of interest' if has_roi else 'image'} "
            f"{area_w}x{area_h}" + (f" at offset ({x_off}, {y_off})" if has_roi else "")
        )
    expected = (area_w // bin_x, area_h // bin_y)
    if expected != (width, height):
        what = f"the {area_w}x{area_h} region of interest" if has_roi else f"{info_w}x{info_h}"
        binned = f" binned {bin_x}x{bin_y}" if (bin_x, bin_y) != (1, 1) else ""
        raise ConversionError(
            f"camera_info: expected the size of the image {width}x{height} (or 0x0), found {what}{binned} = "
            f"{expected[0]}x{expected[1]}" if (has_roi or binned) else
            f"camera_info: expected the size of the image {width}x{height} (or 0x0), found {info_w}x{info_h}"
        )
    return CameraInfoLayout((info_w, info_h), (bin_x, bin_y), (x_off, y_off, roi_w, roi_h) if has_roi else
                            (0, 0, 0, 0))


def check_camera_info(msg: Any, width: int, height: int) -> npt.NDArray[np.float64]:
    """The intrinsic matrix K of the image described by a ``sensor_msgs/CameraInfo``, checked against the image.

    Binning and a region of interest follow image_geometry (:func:`camera_info_layout`): K is the message's K
    with the principal point shifted by the ROI offset, then fx, cx divided by ``binning_x`` and fy, cy by
    ``binning_y``.  K must be plausible for the image (:func:`moge2_ros.io.plausibility.check_intrinsics`: fields
    of view, pixel aspect, principal point).  D, R and P are not looked at here: the camera model with distortion
    and rectification is :func:`moge2_ros.io.camera_model.camera_model_from_info`.

    Args:
        msg: any object with the CameraInfo fields (``width, height, binning_x, binning_y, roi, k``).
        width, height: size of the image it is used with, pixels.

    Returns:
        ``(3, 3)`` float64 K = ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` of the image, pixels (a copy).

    Raises:
        ConversionError: non-finite K, fx or fy <= 0, non-zero skew, last row not (0, 0, 1), implausible K for
            the image size, size mismatch, binning that does not divide the size, ROI outside the sensor.
    """
    layout = camera_info_layout(msg, width, height)
    k = k_matrix(field(msg, "k", "camera_info"), "camera_info.k")
    if layout.roi != (0, 0, 0, 0) or layout.binning != (1, 1):
        k[0, 2] -= layout.roi[0]
        k[1, 2] -= layout.roi[1]
        k[0] /= layout.binning[0]
        k[1] /= layout.binning[1]
    return check_intrinsics(k, width, height, "camera_info.k", ConversionError)


def distortion_note(msg: Any) -> str | None:
    """One line saying that a ``sensor_msgs/CameraInfo`` has lens distortion that is ignored, or None.

    None when ``msg.d`` is empty or all zero (whatever ``distortion_model`` says).  For callers that use K alone
    (the node and ``bag-infer`` with ``rectify`` off): a distorted image gives bent geometry, the note asks for
    rectified images.

    Raises:
        ConversionError: ``d`` is not a list of numbers, ``distortion_model`` not a str.
    """
    model = as_str(field(msg, "distortion_model", "camera_info"), "camera_info.distortion_model")
    values = field(msg, "d", "camera_info")
    try:
        d = np.array(values, dtype=np.float64).ravel()
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConversionError(f"camera_info.d: expected a list of numbers, found {short(values)}") from exc
    if not d.size or not np.any(d != 0):  # NaN != 0: a NaN coefficient is reported too
        return None
    shown = ", ".join(f"{v:.3g}" for v in d[:5]) + (f", ... ({d.size} values)" if d.size > 5 else "")
    name = " ".join(model.split())[:40] or "unnamed"  # one line, bounded: the message is untrusted
    return (f"camera_info has {name} distortion (D = [{shown}]) that is ignored: give rectified images "
            "(image_proc's image_rect) or the depth and points are bent")


@dataclass(frozen=True)
class CameraInfoFields:
    """Content of a ``sensor_msgs/CameraInfo`` (everything but the header)."""

    height: int
    width: int
    distortion_model: str
    d: npt.NDArray[np.float64]  # (5,) from encode_camera_info; any length when copied from an input
    k: npt.NDArray[np.float64]  # (9,) row-major
    r: npt.NDArray[np.float64]  # (9,)
    p: npt.NDArray[np.float64]  # (12,)
    binning_x: int = 0
    binning_y: int = 0
    roi: tuple[int, int, int, int] = (0, 0, 0, 0)  # x_offset, y_offset, width, height (do_rectify False)


def camera_info_fields(msg: Any) -> CameraInfoFields:
    """The content of an input ``sensor_msgs/CameraInfo`` (for outputs on the raw image grid, which carry the
    input's camera unchanged).  The message must have passed the camera checks already.

    Raises:
        ConversionError: a field missing or not numeric.
    """
    roi = field(msg, "roi", "camera_info")
    try:
        return CameraInfoFields(
            height=as_int(field(msg, "height", "camera_info"), "camera_info.height"),
            width=as_int(field(msg, "width", "camera_info"), "camera_info.width"),
            distortion_model=as_str(field(msg, "distortion_model", "camera_info"), "camera_info.distortion_model"),
            d=np.array(field(msg, "d", "camera_info"), dtype=np.float64).ravel(),
            k=np.array(field(msg, "k", "camera_info"), dtype=np.float64).ravel(),
            r=np.array(field(msg, "r", "camera_info"), dtype=np.float64).ravel(),
            p=np.array(field(msg, "p", "camera_info"), dtype=np.float64).ravel(),
            binning_x=as_int(field(msg, "binning_x", "camera_info"), "camera_info.binning_x"),
            binning_y=as_int(field(msg, "binning_y", "camera_info"), "camera_info.binning_y"),
            roi=tuple(as_int(field(roi, f, "camera_info.roi"), f"camera_info.roi.{f}")  # type: ignore[arg-type]
                      for f in ("x_offset", "y_offset", "width", "height")),
        )
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConversionError(f"camera_info: expected numeric fields, found {exc}") from None


def encode_camera_info(k: np.ndarray, width: int, height: int) -> CameraInfoFields:
    """CameraInfo fields describing exactly a depth image of ``width x height`` pixels.

    Pinhole model with no distortion (``plumb_bob``, ``d`` = 5 zeros), ``r`` = identity, ``p`` = ``[K | 0]``.

    Args:
        k: ``(3, 3)`` intrinsics in pixels (given or estimated); same checks as :func:`check_camera_info`.
        width, height: size of the depth image, pixels.

    Raises:
        ConversionError: bad K or size.
    """
    k_array = as_array(k, "k")
    if k_array.shape != (3, 3):
        raise ConversionError(f"k: expected shape (3, 3), found {k_array.shape}")
    k_checked = k_matrix(k_array, "k")
    width = positive_int(width, "width")
    height = positive_int(height, "height")
    projection = np.zeros((3, 4), dtype=np.float64)
    projection[:, :3] = k_checked
    return CameraInfoFields(
        height=height,
        width=width,
        distortion_model="plumb_bob",
        d=np.zeros(5, dtype=np.float64),
        k=k_checked.ravel(),
        r=np.eye(3, dtype=np.float64).ravel(),
        p=projection.ravel(),
    )


@dataclass(frozen=True)
class GeometryFields:
    """Content of a ``moge2_ros_msgs/MonocularGeometry`` (everything but the header; field meanings:
    ``ros/moge2_ros_msgs/msg/MonocularGeometry.msg``)."""

    camera_info: CameraInfoFields  # of the depth image (its header is the message's)
    intrinsics_estimated: bool  # K estimated from the image (False: CameraInfo or fixed K)
    metric_scale: float  # the model's metric scale factor (after any smoothing)
    fov_x_deg: float  # horizontal field of view, degrees
    fov_y_deg: float  # vertical field of view, degrees
    num_tokens: int  # ViT tokens used
    inference_ms: float  # model time of the frame, milliseconds
    model_id: str  # what ran (model source or ONNX file)
    valid_fraction: float  # share of valid pixels in [0, 1]
    scale_source: str = "network"  # what set metric_scale: network, or anchor sources joined by '+'
    network_scale: float = math.nan  # the network's own metric scale of the frame
    scale_log_std: float = math.nan  # uncertainty of metric_scale, std of its log (NaN: not estimated)
    anchor_count: int = 0  # anchor samples used
    anchor_inliers: int = 0  # of which inliers
    anchor_residual_m: float = math.nan  # median absolute residual of the inliers, metres


# ------------------------------------------------------------------------------------------------ output images


def encode_depth(depth: np.ndarray, encoding: str = "32FC1", invalid: str = "nan") -> ImageFields:
    """Depth image fields (REP 117/118) from metric depth.

    Args:
        depth: ``(H, W)`` float depth along the optical axis (z), metres; non-finite or <= 0 is invalid.
        encoding: ``"32FC1"`` (float32 metres) or ``"16UC1"`` (uint16 millimetres, rounded half up, valid
            depths clipped to [1, 65535] so a valid depth never reads 0; 0 = invalid; same as the CLI depth PNG).
        invalid: value of invalid pixels in 32FC1: ``"nan"`` (default) or ``"inf"`` (+Inf, REP 117 "no
            return"). Ignored for 16UC1 (always 0).

    Raises:
        ConversionError: bad shape, dtype, encoding or ``invalid``.
    """
    depth = float_map(depth, "depth", channels=None)
    if encoding not in DEPTH_ENCODINGS:
        raise ConversionError(f"depth encoding: expected one of {', '.join(DEPTH_ENCODINGS)}, found {short(encoding)}")
    if invalid not in ("nan", "inf"):
        raise ConversionError(f"invalid: expected 'nan' or 'inf', found {short(invalid)}")
    if encoding == "32FC1":
        with np.errstate(over="ignore"):  # float64 beyond the float32 range becomes inf, hence invalid
            metres = depth.astype(np.float32, copy=False)
        fill = np.float32(np.nan if invalid == "nan" else np.inf)
        pixels = np.where(valid_depth(metres), metres, fill).astype("<f4", copy=False)
        return encode_image(pixels, "32FC1")
    return encode_image(depth_to_mm_uint16(depth).astype("<u2", copy=False), "16UC1")


def encode_mask(mask: np.ndarray) -> ImageFields:
    """``mono8`` validity image fields: 255 where ``mask`` (``(H, W)`` bool) is True, 0 elsewhere."""
    mask = as_array(mask, "mask")
    if mask.ndim != 2 or mask.shape[0] == 0 or mask.shape[1] == 0:
        raise ConversionError(f"mask: expected shape (H, W) with H, W > 0, found {mask.shape}")
    if mask.dtype != np.bool_:
        raise ConversionError(f"mask: expected dtype bool, found {mask.dtype}")
    pixels = mask.view(np.uint8) * np.uint8(255)  # bool is stored as 0 / 1
    return encode_image(pixels, "mono8")


def encode_normals(normal: np.ndarray) -> ImageFields:
    """``32FC3`` fields of ``(H, W, 3)`` float normals (optical frame); a pixel with a non-finite component is NaN."""
    normal = float_map(normal, "normal", channels=3)
    with np.errstate(over="ignore"):  # float64 beyond the float32 range becomes inf, hence invalid
        pixels = normal.astype("<f4", copy=False)
    bad = ~finite3(pixels)
    # Pixels NaN in all three components (the predictor's invalid pixels) are already right: the slow masked
    # write (on a copy: the caller's array is never modified) only runs for partial NaN / inf pixels.
    if bad.any() and not _all_nan3(pixels, bad):
        pixels = pixels.copy()
        pixels[bad] = np.nan
    return encode_image(pixels, "32FC3")


def encode_rgb(rgb: np.ndarray, encoding: str = "rgb8") -> ImageFields:
    """Colour image fields of ``(H, W, 3)`` uint8 RGB as ``rgb8`` or ``bgr8`` (channels reversed)."""
    rgb = as_array(rgb, "rgb")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0 or rgb.dtype != np.uint8:
        raise ConversionError(f"rgb: expected shape (H, W, 3) dtype uint8 with H, W > 0, found {rgb.shape} {rgb.dtype}")
    if encoding not in ("rgb8", "bgr8"):
        raise ConversionError(f"rgb encoding: expected 'rgb8' or 'bgr8', found {short(encoding)}")
    return encode_image(rgb if encoding == "rgb8" else rgb[..., ::-1], encoding)


def encode_colorized_depth(depth: np.ndarray) -> ImageFields:
    """``bgr8`` preview fields of ``(H, W)`` float depth (metres) with :func:`moge2_ros.io.writers.colorize_depth`."""
    depth = float_map(depth, "depth", channels=None)
    try:
        rgb = colorize_depth(depth)
    except InputError as exc:
        raise ConversionError(f"depth: {exc}") from exc
    return encode_image(rgb[..., ::-1], "bgr8")


# ------------------------------------------------------------------------------------------------ point clouds

#: ``sensor_msgs/PointField`` datatype constants (FLOAT32 is what we write).
POINT_FIELD_FLOAT32: Final[int] = 7
POINT_FIELD_FLOAT64: Final[int] = 8


@dataclass(frozen=True)
class CloudFields:
    """Content of a ``sensor_msgs/PointCloud2`` (everything but the header).

    ``fields`` lists ``(name, offset)``; every field is FLOAT32 (datatype 7) with ``count = 1``.
    """

    height: int
    width: int
    fields: tuple[tuple[str, int], ...]
    is_bigendian: bool
    point_step: int
    row_step: int
    data: bytearray
    is_dense: bool


def encode_cloud(
    points: np.ndarray,
    rgb: np.ndarray | None = None,
    normals: np.ndarray | None = None,
    organized: bool = True,
    stride: int = 1,
) -> CloudFields:
    """``sensor_msgs/PointCloud2`` fields of a point map, readable by ``sensor_msgs_py.point_cloud2`` and RViz.

    Fields, all FLOAT32 (``count = 1``), packed without padding (``point_step = 4 * number of fields``):
    ``x, y, z`` (offsets 0, 4, 8; metres, optical frame); then ``rgb`` if ``rgb`` is given, packed in the PCL
    convention (uint32 ``0x00RRGGBB`` reinterpreted as float32); then ``normal_x, normal_y, normal_z`` if
    ``normals`` is given (a normal with a non-finite component is NaN).

    A point is valid when x, y and z are all finite.
    * organized: ``height = ceil(H / stride)``, ``width = ceil(W / stride)`` (pixels ``[::stride, ::stride]``),
      invalid points have NaN x, y, z, ``is_dense = False``.
    * unorganized: invalid points dropped, ``height = 1``, ``width`` = number of valid points, in row-major
      pixel order; ``is_dense = True`` unless a kept point has a NaN normal.

    Args:
        points: ``(H, W, 3)`` float points in metres, optical frame (REP 103: x right, y down, z forward).
        rgb: optional ``(H, W, 3)`` RGB colours of the points: uint8, or float in [0, 1] (scaled by 255 and
            rounded, clipped to [0, 1], NaN -> 0).
        normals: optional ``(H, W, 3)`` float unit normals, optical frame.
        organized: keep the image layout (True) or drop invalid points (False).
        stride: keep every ``stride``-th pixel in both directions (>= 1).

    Raises:
        ConversionError: bad shapes, dtypes or stride.
    """
    points = float_map(points, "points", channels=3)
    height, width = points.shape[:2]
    if rgb is not None:
        rgb = as_array(rgb, "rgb")
        if rgb.shape != (height, width, 3) or not (rgb.dtype == np.uint8 or np.issubdtype(rgb.dtype, np.floating)):
            raise ConversionError(
                f"rgb: expected shape {(height, width, 3)} (the points' H, W) dtype uint8 or float in [0, 1], "
                f"found shape {rgb.shape} dtype {rgb.dtype}"
            )
    if normals is not None:
        normals = float_map(normals, "normals", channels=3)
        if normals.shape != points.shape:
            raise ConversionError(f"normals: expected shape {points.shape} (the points'), found {normals.shape}")
    if not isinstance(organized, (bool, np.bool_)):
        raise ConversionError(f"organized: expected a bool, found {type(organized).__name__}")
    stride = positive_int(stride, "stride")

    names = ["x", "y", "z"]
    if rgb is not None:
        names.append("rgb")
    if normals is not None:
        names += ["normal_x", "normal_y", "normal_z"]
    num_fields = len(names)
    sub = (slice(None, None, stride), slice(None, None, stride))
    xyz = points[sub]
    rows, cols = xyz.shape[:2]

    point_step = 4 * num_fields
    # The organized cloud is written straight into the buffer handed to the message (no .tobytes() copy).
    # Fields are little-endian float32.
    buffer: bytearray | None = bytearray(rows * cols * point_step) if organized else None
    cloud = (
        np.frombuffer(buffer, dtype="<f4").reshape(rows, cols, num_fields)
        if buffer is not None
        else np.empty((rows, cols, num_fields), dtype="<f4")
    )
    # Per-field copies: one long strided loop per coordinate instead of a 3-element inner loop per point (~5x).
    with np.errstate(over="ignore"):  # float64 beyond the float32 range becomes inf, hence invalid
        for c in range(3):
            cloud[..., c] = xyz[..., c]
    valid = finite3(cloud[..., 0:3])  # after the cast: float64 beyond float32 range is invalid
    if rgb is not None:
        colour = rgb[sub]
        if colour.dtype != np.uint8:  # float in [0, 1] (e.g. decode_image_rgb of mono16): to 0..255, NaN -> 0
            colour = np.round(np.clip(np.nan_to_num(colour, nan=0.0), 0.0, 1.0) * 255.0).astype(np.uint8)
        # uint32 0x00RRGGBB stored little-endian is the byte sequence B, G, R, 0 (one byte plane at a time)
        packed_bytes = cloud.view(np.uint8)[..., 12:16]
        for byte, channel in enumerate((2, 1, 0)):
            packed_bytes[..., byte] = colour[..., channel]
        packed_bytes[..., 3] = 0
    if normals is not None:
        first = 4 if rgb is not None else 3
        normal_block = cloud[..., first : first + 3]
        normals_sub = normals[sub]
        with np.errstate(over="ignore"):
            for c in range(3):
                normal_block[..., c] = normals_sub[..., c]
        bad_normal = ~finite3(normal_block)
        if bad_normal.any() and not _all_nan3(normal_block, bad_normal):
            normal_block[bad_normal] = np.nan

    if organized:
        assert buffer is not None
        # Invalid points must be NaN in x, y and z; points that are NaN in all three (the predictor's invalid
        # pixels) already are, so the slow masked write only runs for partial NaN / inf points.
        if not valid.all() and not _all_nan3(cloud[..., 0:3], ~valid):
            cloud[~valid, 0:3] = np.nan
        is_dense = False
    else:
        # gather whole points (one void item of point_step bytes each): much faster than cloud[valid]
        item = np.dtype((np.void, point_step))
        keep = valid.ravel()
        cols = int(np.count_nonzero(keep))
        rows = 1
        buffer = bytearray(cols * point_step)
        kept = np.frombuffer(buffer, dtype=item)
        np.compress(keep, cloud.view(item).reshape(-1), out=kept)  # row-major pixel order
        is_dense = normals is None or bool(np.isfinite(kept.view("<f4")).all())

    return CloudFields(
        height=rows,
        width=cols,
        fields=tuple((name, 4 * i) for i, name in enumerate(names)),
        is_bigendian=False,
        point_step=point_step,
        row_step=point_step * cols,
        data=buffer,
        is_dense=is_dense,
    )


#: Largest accepted number of points in a decoded cloud (a 128-beam LiDAR sweep has ~260k).
DEFAULT_MAX_POINTS: Final[int] = 50_000_000


def decode_cloud_xyz(msg: Any, finite_only: bool = True, max_points: int = DEFAULT_MAX_POINTS) -> npt.NDArray[np.float32]:
    """The x, y, z of every point of a ``sensor_msgs/PointCloud2`` (the fields of any object with its names).

    Reads the ``x``, ``y``, ``z`` fields by their offsets (FLOAT32 or FLOAT64, ``count = 1``), honouring
    ``point_step``, ``row_step`` (row padding) and ``is_bigendian``; other fields are ignored. Everything is
    checked before a byte is read: ``point_step`` covers every xyz field, ``row_step >= width * point_step``,
    ``len(data) >= row_step * height``.

    Args:
        msg: any object with the PointCloud2 fields (``height, width, fields, is_bigendian, point_step, row_step,
            data``; each field with ``name, offset, datatype, count``).
        finite_only: drop points with a non-finite coordinate (organized clouds mark invalid points NaN).
        max_points: largest accepted ``width * height``.

    Returns:
        ``(N, 3)`` float32 points, metres, in the cloud's frame, row-major order.

    Raises:
        ConversionError: missing x/y/z field, unsupported datatype, bad steps or data length.
    """
    width = as_int(field(msg, "width", "point cloud"), "point cloud.width")
    height = as_int(field(msg, "height", "point cloud"), "point cloud.height")
    if width < 0 or height < 0 or width * height > max_points:
        raise ConversionError(
            f"point cloud: expected 0 <= width * height <= {max_points} points, found {width}x{height}"
        )
    point_step = as_int(field(msg, "point_step", "point cloud"), "point cloud.point_step")
    row_step = as_int(field(msg, "row_step", "point cloud"), "point cloud.row_step")
    order = ">" if _is_bigendian(msg, "point cloud") else "<"
    layout: dict[str, tuple[int, str]] = {}
    for item in field(msg, "fields", "point cloud"):
        name = as_str(field(item, "name", "point cloud.fields"), "point cloud.fields.name")
        if name in ("x", "y", "z"):
            datatype = as_int(field(item, "datatype", "point cloud.fields"), f"point cloud field {name}.datatype")
            count = as_int(field(item, "count", "point cloud.fields"), f"point cloud field {name}.count")
            offset = as_int(field(item, "offset", "point cloud.fields"), f"point cloud field {name}.offset")
            if datatype not in (POINT_FIELD_FLOAT32, POINT_FIELD_FLOAT64) or count != 1:
                raise ConversionError(
                    f"point cloud field {name}: expected datatype FLOAT32 (7) or FLOAT64 (8) with count 1, "
                    f"found datatype {datatype} count {count}"
                )
            size = 4 if datatype == POINT_FIELD_FLOAT32 else 8
            if offset < 0 or offset + size > point_step:
                raise ConversionError(
                    f"point cloud field {name}: expected offset + {size} <= point_step = {point_step}, found offset {offset}"
                )
            layout[name] = (offset, f"{order}f{size}")
    missing = [name for name in ("x", "y", "z") if name not in layout]
    if missing:
        raise ConversionError(f"point cloud: expected fields x, y, z, found no {', '.join(missing)}")
    if row_step < width * point_step:
        raise ConversionError(
            f"point cloud.row_step: expected >= width * point_step = {width} * {point_step}, found {row_step}"
        )
    raw = byte_buffer(field(msg, "data", "point cloud"), "point cloud.data")
    if raw.size < row_step * height:
        raise ConversionError(
            f"point cloud.data: expected at least row_step * height = {row_step} * {height} = {row_step * height} "
            f"bytes, found {raw.size}"
        )
    if width * height == 0:
        return np.empty((0, 3), dtype=np.float32)
    xyz = np.empty((height, width, 3), dtype=np.float32)
    for axis, name in enumerate(("x", "y", "z")):
        offset, dtype = layout[name]
        xyz[..., axis] = np.ndarray((height, width), np.dtype(dtype), raw, offset, (row_step, point_step))
    xyz = xyz.reshape(-1, 3)
    if finite_only:
        xyz = xyz[finite3(xyz)]
    return xyz
