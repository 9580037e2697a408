"""Conversions between ROS 2 messages and numpy arrays: pure functions, no ROS graph, no maths.

Inputs (camera → model), type-checked rclpy versions of the codec's decoders for tools and tests:
    :func:`image_to_rgb` (``sensor_msgs/Image``), :func:`compressed_to_rgb` (``sensor_msgs/CompressedImage``),
    :func:`camera_info_to_k` (``sensor_msgs/CameraInfo`` → 3x3 K in pixels), :func:`image_to_float` (a depth
    image → metres). ``moge2_node`` itself decodes through :func:`moge2_ros.pipeline.decode_rgb` and hands the
    CameraInfo to the pipeline, like ``bag-infer`` does (the same codec functions underneath).
Outputs (model → ROS):
    :func:`image_msg`, :func:`camera_info_msg`, :func:`cloud_msg`, :func:`geometry_msg` wrap the codec payloads
    of :class:`moge2_ros.pipeline.FramePipeline` (what ``moge2_node`` publishes) into rclpy messages;
    :func:`depth_to_image` (REP 117/118 depth), :func:`make_camera_info`, :func:`mask_to_image`,
    :func:`normals_to_image`, :func:`colorize_depth_to_image`, :func:`points_to_cloud` (``PointCloud2``) and
    :func:`rgb_to_image` (an RGB array → ``rgb8``/``bgr8``, for the demo camera) encode an array and wrap it.

Conventions:
    * Frames: REP 103 optical frame (x right, y down, z forward), the same as MoGe's OpenCV camera frame, so no
      rotation is applied anywhere. Every output message carries the given input ``header`` unchanged (the very
      same object: stamp and frame_id).
    * Units: metres; intrinsics in pixels (ROS convention: pixel centres at integer coordinates).
    * Invalid float values are NaN (``depth_to_image(invalid="inf")`` writes +Inf, REP 117 "no return");
      16UC1 depth uses 0 = invalid. Depth values that are non-finite or <= 0 are invalid.
    * Output buffers are little-endian (``is_bigendian = 0``), rows unpadded, assigned to the message as
      ``bytes`` (or, for point clouds, the ``bytearray`` the points were written into): rclpy copies a
      bytes-like object into its ``array('B')`` with one ``memcpy``, while a numpy array is converted element
      by element, ~100x slower.

The byte layouts themselves live in :mod:`moge2_ros.io.msg_codec` (ROS-free, shared with the rosbag2 tools of
:mod:`moge2_ros.bags`); this module only checks the rclpy message types and copies the codec's fields into (or out
of) rclpy messages.

Errors:
    Every bad input (message or array) raises :class:`ConversionError` with a message that states what was
    expected and what was found. Sizes, steps and buffer lengths are checked before any byte is read, so a
    hostile message costs neither memory nor time. The node logs (throttled), counts and skips such frames.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField, RegionOfInterest
from std_msgs.msg import Header

from moge2_ros.io import msg_codec as codec
from moge2_ros.io.msg_codec import DEFAULT_MAX_PIXELS, DEPTH_ENCODINGS, IMAGE_ENCODINGS, ConversionError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEPTH_ENCODINGS",
    "IMAGE_ENCODINGS",
    "ConversionError",
    "camera_info_msg",
    "camera_info_to_k",
    "cloud_msg",
    "colorize_depth_to_image",
    "compressed_to_rgb",
    "depth_to_image",
    "geometry_msg",
    "image_msg",
    "image_to_float",
    "image_to_rgb",
    "make_camera_info",
    "mask_to_image",
    "normals_to_image",
    "points_to_cloud",
    "rgb_to_image",
]


# ------------------------------------------------------------------------------------------------ helpers


def _require_type(value: Any, cls: type, what: str) -> None:
    if not isinstance(value, cls):
        expected = f"{cls.__module__.split('.')[0]}/{cls.__name__}"  # ROS name, e.g. sensor_msgs/Image
        raise ConversionError(f"{what}: expected a {expected}, found {type(value).__name__}")


def _require_header(header: Any) -> Header:
    _require_type(header, Header, "header")
    return header


# ------------------------------------------------------------------------------------------------ input images


def image_to_rgb(msg: Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a ``sensor_msgs/Image`` into a channels-last RGB array for the Predictor.

    Encodings, checks, row padding and the returned view are those of
    :func:`moge2_ros.io.msg_codec.decode_image_rgb` (rgb8, bgr8, rgba8, bgra8, mono8, mono16 and the 8UC3 / 8UC1 /
    16UC1 aliases; everything checked before a byte is read).

    Returns:
        ``(H, W, 3)`` RGB: uint8 for 8-bit encodings, float32 in [0, 1] for 16-bit grey; a read-only view of the
        message buffer where possible.

    Raises:
        ConversionError: not an Image, unsupported encoding, bad size, step or data length.
    """
    _require_type(msg, Image, "image")
    return codec.decode_image_rgb(msg, max_pixels)


def image_to_float(msg: Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> npt.NDArray[np.float32]:
    """Decode a REP 118 depth image (``32FC1`` / ``16UC1``) into ``(H, W)`` float32 metres (the inverse of
    :func:`depth_to_image`): encodings, checks and invalid values as :func:`moge2_ros.io.msg_codec.decode_depth`.

    Raises:
        ConversionError: not an Image, or rejected by the codec.
    """
    _require_type(msg, Image, "depth image")
    return codec.decode_depth(msg, max_pixels)


def compressed_to_rgb(msg: CompressedImage, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG or PNG) into RGB with Pillow.

    Accepted ``format`` strings, the decompression-bomb checks and the colour conversions are those of
    :func:`moge2_ros.io.msg_codec.decode_compressed_rgb`.

    Returns:
        ``(H, W, 3)`` uint8 RGB, C-contiguous.

    Raises:
        ConversionError: not a CompressedImage; empty, corrupt, truncated or non-JPEG/PNG data; unsupported
            format; too large.
    """
    _require_type(msg, CompressedImage, "compressed image")
    return codec.decode_compressed_rgb(msg, max_pixels)


# ------------------------------------------------------------------------------------------------ intrinsics


def camera_info_to_k(msg: CameraInfo, width: int, height: int) -> npt.NDArray[np.float64]:
    """The intrinsic matrix K of a ``sensor_msgs/CameraInfo``, checked against the image it belongs to.

    The rules (K used as given, distortion ignored, size must match or be 0x0, binning and ROI rejected) are
    those of :func:`moge2_ros.io.msg_codec.check_camera_info`.

    Returns:
        ``(3, 3)`` float64 K = ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``, pixels (a copy).

    Raises:
        ConversionError: not a CameraInfo, or K / size / binning / ROI rejected by the codec.
    """
    _require_type(msg, CameraInfo, "camera_info")
    _require_type(msg.roi, RegionOfInterest, "camera_info.roi")
    return codec.check_camera_info(msg, width, height)


def make_camera_info(header: Header, k: np.ndarray, width: int, height: int) -> CameraInfo:
    """CameraInfo describing exactly a published depth image of ``width x height`` pixels, under ``header`` (carried
    unchanged): the model and checks of :func:`moge2_ros.io.msg_codec.encode_camera_info`; no binning, no ROI.

    Raises:
        ConversionError: bad header, K or size.
    """
    return camera_info_msg(header, codec.encode_camera_info(k, width, height))


# ------------------------------------------------------------------------------------------------ output images


def depth_to_image(header: Header, depth: np.ndarray, encoding: str = "32FC1", invalid: str = "nan") -> Image:
    """Depth image message (REP 117/118) from metric depth under ``header`` (carried unchanged); ``depth``,
    ``encoding`` and ``invalid`` as :func:`moge2_ros.io.msg_codec.encode_depth` (``invalid="inf"`` lets costmaps
    clear space such as sky).

    Raises:
        ConversionError: bad header, shape, dtype, encoding or ``invalid``.
    """
    return image_msg(header, codec.encode_depth(depth, encoding, invalid))


def mask_to_image(header: Header, mask: np.ndarray) -> Image:
    """``mono8`` validity image of :func:`moge2_ros.io.msg_codec.encode_mask` under ``header`` (carried unchanged).

    Raises:
        ConversionError: bad header, shape or dtype.
    """
    return image_msg(header, codec.encode_mask(mask))


def normals_to_image(header: Header, normal: np.ndarray) -> Image:
    """``32FC3`` normal image of :func:`moge2_ros.io.msg_codec.encode_normals` under ``header`` (carried unchanged).

    Raises:
        ConversionError: bad header, shape or dtype.
    """
    return image_msg(header, codec.encode_normals(normal))


def rgb_to_image(header: Header, rgb: np.ndarray, encoding: str = "rgb8") -> Image:
    """Colour image message of :func:`moge2_ros.io.msg_codec.encode_rgb` under ``header`` (carried unchanged); the
    inverse of :func:`image_to_rgb` for rgb8 / bgr8.

    Raises:
        ConversionError: bad header, shape, dtype or encoding.
    """
    return image_msg(header, codec.encode_rgb(rgb, encoding))


def colorize_depth_to_image(header: Header, depth: np.ndarray) -> Image:
    """``bgr8`` depth preview of :func:`moge2_ros.io.msg_codec.encode_colorized_depth` under ``header`` (carried
    unchanged). For looking at (RViz, rqt), not for measuring: near = red, far = blue, invalid = black.

    Raises:
        ConversionError: bad header, shape or dtype.
    """
    return image_msg(header, codec.encode_colorized_depth(depth))


# ------------------------------------------------------------------------------------------------ point clouds


def points_to_cloud(
    header: Header,
    points: np.ndarray,
    rgb: np.ndarray | None = None,
    normals: np.ndarray | None = None,
    organized: bool = True,
    stride: int = 1,
) -> PointCloud2:
    """``sensor_msgs/PointCloud2`` of a point map, readable by ``sensor_msgs_py.point_cloud2`` and RViz.

    The fields (x, y, z [, rgb] [, normal_x/y/z], FLOAT32, no padding), the validity rule and the organized /
    unorganized layouts are those of :func:`moge2_ros.io.msg_codec.encode_cloud`, which packs the buffer; this
    function adds the header and the ``PointField`` list.

    Args:
        header: the input image's header (carried unchanged).
        points, rgb, normals, organized, stride: as :func:`moge2_ros.io.msg_codec.encode_cloud` (metres, optical
            frame; rgb uint8 or float in [0, 1]).

    Raises:
        ConversionError: bad header, shapes, dtypes or stride.
    """
    return cloud_msg(header, codec.encode_cloud(points, rgb, normals, organized=organized, stride=stride))


# ------------------------------------------------------------------------------------------------ codec payloads


def image_msg(header: Header, fields: codec.ImageFields) -> Image:
    """``sensor_msgs/Image`` of codec fields (:func:`moge2_ros.io.msg_codec.encode_depth` and friends, or a
    :class:`moge2_ros.pipeline.FrameOutputs` image) under ``header`` (the input image's, carried unchanged).

    Raises:
        ConversionError: bad header.
    """
    msg = Image()
    msg.header = _require_header(header)
    msg.height = fields.height
    msg.width = fields.width
    msg.encoding = fields.encoding
    msg.is_bigendian = fields.is_bigendian
    msg.step = fields.step
    msg.data = fields.data
    return msg


def camera_info_msg(header: Header, fields: codec.CameraInfoFields) -> CameraInfo:
    """``sensor_msgs/CameraInfo`` of :class:`moge2_ros.io.msg_codec.CameraInfoFields` (binning and ROI as given:
    zero from :func:`~moge2_ros.io.msg_codec.encode_camera_info`).

    Raises:
        ConversionError: bad header.
    """
    msg = CameraInfo()
    msg.header = _require_header(header)
    msg.height = fields.height
    msg.width = fields.width
    msg.distortion_model = fields.distortion_model
    msg.d = fields.d.tolist()
    msg.k = fields.k
    msg.r = fields.r
    msg.p = fields.p
    msg.binning_x = fields.binning_x
    msg.binning_y = fields.binning_y
    x_offset, y_offset, width, height = fields.roi
    msg.roi = RegionOfInterest(x_offset=x_offset, y_offset=y_offset, width=width, height=height)
    return msg


def cloud_msg(header: Header, fields: codec.CloudFields) -> PointCloud2:
    """``sensor_msgs/PointCloud2`` of :func:`moge2_ros.io.msg_codec.encode_cloud` fields (FLOAT32 fields).

    Raises:
        ConversionError: bad header.
    """
    msg = PointCloud2()
    msg.header = _require_header(header)
    msg.height = fields.height
    msg.width = fields.width
    msg.fields = [
        PointField(name=name, offset=offset, datatype=PointField.FLOAT32, count=1) for name, offset in fields.fields
    ]
    msg.is_bigendian = fields.is_bigendian
    msg.point_step = fields.point_step
    msg.row_step = fields.row_step
    msg.data = fields.data
    msg.is_dense = fields.is_dense
    return msg


def geometry_msg(msg_type: type, header: Header, fields: codec.GeometryFields) -> Any:
    """A ``moge2_ros_msgs/MonocularGeometry`` (``msg_type``: its rclpy class, imported by the caller because the
    package is optional) of codec fields; ``camera_info`` gets the same header. A message definition without
    ``valid_fraction`` or the scale fields (an older build of moge2_ros_msgs) is filled without them.

    Raises:
        ConversionError: bad header.
    """
    msg = msg_type()
    msg.header = _require_header(header)
    msg.camera_info = camera_info_msg(header, fields.camera_info)
    msg.intrinsics_estimated = bool(fields.intrinsics_estimated)
    msg.metric_scale = float(fields.metric_scale)
    msg.fov_x_deg = float(fields.fov_x_deg)
    msg.fov_y_deg = float(fields.fov_y_deg)
    msg.num_tokens = int(fields.num_tokens)
    msg.inference_ms = float(fields.inference_ms)
    msg.model_id = str(fields.model_id)
    if hasattr(msg, "valid_fraction"):
        msg.valid_fraction = float(fields.valid_fraction)
    if hasattr(msg, "scale_source"):
        msg.scale_source = str(fields.scale_source)
        msg.network_scale = float(fields.network_scale)
        msg.scale_log_std = float(fields.scale_log_std)
        msg.anchor_count = int(fields.anchor_count)
        msg.anchor_inliers = int(fields.anchor_inliers)
        msg.anchor_residual_m = float(fields.anchor_residual_m)
    return msg
