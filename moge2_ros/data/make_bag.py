"""Write rosbag2 recordings from :class:`~moge2_ros.data.sample.Sample` sequences (``moge2-ros make-bag`` and tests).

The bag looks like a RealSense-style recording: a colour image topic (raw ``rgb8``/``bgr8`` or compressed
JPEG/PNG), its ``camera_info``, a depth image registered to the colour image (16UC1 millimetres or 32FC1 metres)
and optionally a LiDAR-like ``PointCloud2`` made by back-projecting the depth. Header stamps are
``start_ns + k * period_ns``; every message of frame k is logged at its own stamp.

Metric anchor sensors (:class:`AnchorSensors`, for ``bag-infer --anchor-topic``) are simulated from the same
depth: a scan-line LiDAR ``PointCloud2`` in its own frame and a single-beam ``sensor_msgs/Range`` looking along the
optical axis, each with its transform to the camera optical frame in ``/tf_static``.
"""

from __future__ import annotations

import io
import math
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from moge2_ros.bags import BagError
from moge2_ros.bags.writer import BagWriter, header_msg, publish_staged, range_msg, staging_path, tf_message
from moge2_ros.data.sample import Sample, validate_sample
from moge2_ros.io import msg_codec as codec

__all__ = ["IMAGE_FORMATS", "AnchorSensors", "BagLayout", "cloud_from_depth", "range_from_depth", "write_samples_bag"]

#: ``image_format`` values of :func:`write_samples_bag`: raw encodings and compressed codecs.
IMAGE_FORMATS: Final[tuple[str, ...]] = ("rgb8", "bgr8", "jpeg", "png")
#: A fixed, recognisable epoch (2023-11-14T22:13:20Z) for the first header stamp.
DEFAULT_START_NS: Final[int] = 1_700_000_000_000_000_000


@dataclass
class BagLayout:
    """Topic names and stamps of a bag written by :func:`write_samples_bag`."""

    image_topic: str
    camera_info_topic: str
    depth_topic: str | None
    cloud_topic: str | None
    frame_id: str
    stamps_ns: list[int] = field(default_factory=list)
    depth_stamps_ns: list[int] = field(default_factory=list)
    lidar_topic: str | None = None
    range_topic: str | None = None
    ranges_m: list[float] = field(default_factory=list)


#: Rotation of a ROS body-style sensor frame (x forward, y left, z up) into the camera optical frame (x right,
#: y down, z forward): ``p_cam = R p_sensor``; as a quaternion (x, y, z, w).
BODY_TO_OPTICAL_Q: Final[tuple[float, float, float, float]] = (0.5, -0.5, 0.5, 0.5)


@dataclass(frozen=True)
class AnchorSensors:
    """Metric sensors simulated from each sample's depth, written with :func:`write_samples_bag`.

    Both sensor frames are body-style (x forward, y left, z up) and look along the camera's optical axis; their
    transforms ``sensor -> camera optical frame`` are ``[tx, ty, tz, qx, qy, qz, qw]`` (metres, quaternion x y z w):
    ``p_cam = R p_sensor + t``.

    Attributes:
        lidar: write ``<ns>/lidar/scan`` (PointCloud2 x, y, z in ``lidar_frame``): the depth of every
            ``lidar_row_stride``-th pixel row and ``lidar_col_stride``-th column, back-projected and moved into
            the LiDAR frame.
        lidar_frame, lidar_to_camera: the LiDAR's frame id and transform.
        range: write ``<ns>/range`` (``sensor_msgs/Range`` in ``range_frame``): the distance from the sensor to the
            closest surface inside a cone of ``range_fov`` radians around its +x axis (REP 117; +inf = nothing
            within ``range_max``).
        range_frame, range_to_camera, range_fov, range_min, range_max: the rangefinder's frame, transform and
            limits.
        tf_static: publish the transforms on ``/tf_static`` (one message at the first stamp); False leaves them
            out (to test a missing transform).
        tf_dynamic: publish them on ``/tf`` instead, once per frame at the sensors' stamp (as a robot whose sensor
            mounts move would).
    """

    lidar: bool = True
    lidar_frame: str = "lidar"
    lidar_to_camera: tuple[float, ...] = (0.0, -0.08, 0.02) + BODY_TO_OPTICAL_Q
    lidar_row_stride: int = 8
    lidar_col_stride: int = 2
    range: bool = True
    range_frame: str = "rangefinder"
    range_to_camera: tuple[float, ...] = (0.03, 0.05, 0.0) + BODY_TO_OPTICAL_Q
    range_fov: float = 0.1
    range_min: float = 0.05
    range_max: float = 20.0
    tf_static: bool = True
    tf_dynamic: bool = False


def _rigid(values: tuple[float, ...], what: str) -> tuple[np.ndarray, np.ndarray]:
    """``(R (3, 3), t (3,))`` of ``[tx, ty, tz, qx, qy, qz, qw]`` (sensor -> camera)."""
    from moge2_ros.anchors import AnchorError, Extrinsic

    if len(values) != 7:
        raise BagError(f"{what}: expected [tx, ty, tz, qx, qy, qz, qw], found {list(values)}")
    try:
        return Extrinsic(tuple(values[:3]), tuple(values[3:])).matrix()  # type: ignore[arg-type]
    except AnchorError as exc:
        raise BagError(f"{what}: {exc}") from None


def range_from_depth(depth: npt.NDArray[np.floating], intrinsics: npt.NDArray[np.floating],
                     sensor_to_camera: tuple[float, ...], fov: float, min_range: float, max_range: float) -> float:
    """The reading of a rangefinder (cone of full angle ``fov`` radians around its +x axis, apex at its origin)
    placed by ``sensor_to_camera`` ``[tx, ty, tz, qx, qy, qz, qw]``, seeing the surfaces of ``depth`` ``(H, W)``
    (metres, camera optical frame, NaN invalid): the smallest distance from the apex to a valid surface point inside
    the cone (the pixels of the image sample the surfaces); +inf when none is within ``[min_range, max_range]``
    (REP 117 "no return"), -inf when the closest is nearer than ``min_range``."""
    rotation, apex = _rigid(sensor_to_camera, "range_to_camera")
    points = cloud_from_depth(depth, intrinsics).astype(np.float64)
    rel = points - apex
    dist = np.linalg.norm(rel, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = rel @ rotation[:, 0] / dist
    inside = dist[(cos >= math.cos(fov / 2)) & (dist > 0)]
    if inside.size == 0 or inside.min() > max_range:
        return math.inf
    closest = float(inside.min())
    return -math.inf if closest < min_range else closest


def _lidar_points(depth: np.ndarray, intrinsics: np.ndarray, sensors: AnchorSensors) -> np.ndarray:
    """``(N, 3)`` float32 scan-line points in the LiDAR frame."""
    sparse = np.full(depth.shape, np.nan, dtype=np.float32)
    rows = slice(sensors.lidar_row_stride // 2, None, sensors.lidar_row_stride)
    cols = slice(0, None, sensors.lidar_col_stride)
    sparse[rows, cols] = depth[rows, cols]
    points = cloud_from_depth(sparse, intrinsics).astype(np.float64)
    rotation, t = _rigid(sensors.lidar_to_camera, "lidar_to_camera")
    return ((points - t) @ rotation).astype(np.float32)  # p_lidar = R^T (p_cam - t)


def cloud_from_depth(depth: npt.NDArray[np.floating], intrinsics: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """``(N, 3)`` float32 points (metres, camera optical frame) of the valid pixels of ``depth`` ``(H, W)``,
    back-projected through the pixel centres with pixel K (:func:`moge2_ros.geometry.projection.depth_to_points`)."""
    import torch

    from moge2_ros.geometry.intrinsics import pixel_to_normalized_intrinsics
    from moge2_ros.geometry.projection import depth_to_points

    height, width = depth.shape
    k_norm = pixel_to_normalized_intrinsics(torch.as_tensor(np.asarray(intrinsics, dtype=np.float64)), width, height)
    points = depth_to_points(torch.from_numpy(np.asarray(depth, dtype=np.float64)), k_norm).numpy()
    valid = np.isfinite(depth) & (depth > 0)
    return points[valid].astype(np.float32)


def _compress(rgb: np.ndarray, fmt: str, quality: int) -> bytes:
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    if fmt == "jpeg":
        PILImage.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    else:
        PILImage.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def write_samples_bag(
    path: str | Path,
    samples: Iterable[Sample],
    storage: str = "mcap",
    *,
    image_format: str = "rgb8",
    depth_encoding: str = "16UC1",
    namespace: str = "/camera",
    frame_id: str = "camera_color_optical_frame",
    start_ns: int = DEFAULT_START_NS,
    period_ns: int = 100_000_000,
    depth_offset_ns: int = 0,
    with_depth: bool = True,
    with_cloud: bool = False,
    jpeg_quality: int = 95,
    anchors: AnchorSensors | None = None,
) -> BagLayout:
    """Write ``samples`` into a new bag folder ``path`` (atomically: the folder exists only when complete).

    Topics (under ``namespace``): ``color/image_raw`` (``image_format`` rgb8 / bgr8) or
    ``color/image_raw/compressed`` (jpeg / png), ``color/camera_info`` (the sample's pixel K), and
    ``aligned_depth_to_color/image_raw`` (the sample's depth, NaN written as invalid) when ``with_depth``, and
    ``lidar/points`` (the valid depth pixels back-projected, frame ``frame_id``) when ``with_cloud``; the metric
    anchor sensors of ``anchors`` (``lidar/scan``, ``range`` and ``/tf_static``, see :class:`AnchorSensors`),
    stamped like the depth.

    Args:
        path: new bag folder.
        samples: frames to write (validated with :func:`~moge2_ros.data.sample.validate_sample`).
        storage: ``"mcap"`` or ``"sqlite3"``.
        image_format: one of :data:`IMAGE_FORMATS`.
        depth_encoding: ``"16UC1"`` (millimetres, 0 = invalid) or ``"32FC1"`` (metres, NaN = invalid).
        namespace: topic prefix.
        frame_id: header frame of every message (colour optical frame: depth is registered to it).
        start_ns, period_ns: header stamp of frame k = ``start_ns + k * period_ns``.
        depth_offset_ns: added to the depth (and cloud) stamps only, to test synchronisation.
        with_depth, with_cloud: which label topics to write.
        jpeg_quality: Pillow JPEG quality (``image_format="jpeg"``).
        anchors: simulated metric anchor sensors (None = none).

    Returns:
        The topic names and stamps written.

    Raises:
        BagError: bad arguments, existing ``path``; DatasetError: an invalid sample.
    """
    if image_format not in IMAGE_FORMATS:
        raise BagError(f"image_format: expected one of {', '.join(IMAGE_FORMATS)}, found {image_format!r}")
    if depth_encoding not in codec.DEPTH_ENCODINGS:
        raise BagError(f"depth_encoding: expected one of {', '.join(codec.DEPTH_ENCODINGS)}, found {depth_encoding!r}")
    if period_ns <= 0 or start_ns < 0 or start_ns + depth_offset_ns < 0:
        raise BagError(f"stamps: expected start_ns >= 0 and period_ns > 0, found {start_ns}, {period_ns}")
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    compressed = image_format in ("jpeg", "png")
    layout = BagLayout(
        image_topic=f"{ns}/color/image_raw" + ("/compressed" if compressed else ""),
        camera_info_topic=f"{ns}/color/camera_info",
        depth_topic=f"{ns}/aligned_depth_to_color/image_raw" if with_depth else None,
        cloud_topic=f"{ns}/lidar/points" if with_cloud else None,
        frame_id=frame_id,
        lidar_topic=f"{ns}/lidar/scan" if anchors is not None and anchors.lidar else None,
        range_topic=f"{ns}/range" if anchors is not None and anchors.range else None,
    )
    if anchors is not None:
        if anchors.lidar_row_stride < 1 or anchors.lidar_col_stride < 1:
            raise BagError(f"anchors: LiDAR strides must be >= 1, found {anchors.lidar_row_stride}, "
                           f"{anchors.lidar_col_stride}")
        _rigid(anchors.lidar_to_camera, "lidar_to_camera")
        _rigid(anchors.range_to_camera, "range_to_camera")
    path = Path(path)
    staging = staging_path(path)
    if path.exists():
        raise BagError(f"{path}: exists already")
    if staging.parent.exists():
        raise BagError(f"{staging.parent}: exists (left by an interrupted run?); delete it first")
    try:
        with BagWriter(staging, storage) as bag:
            for k, sample in enumerate(samples):
                validate_sample(sample)
                stamp = start_ns + k * period_ns
                height, width = sample.depth.shape
                if compressed:
                    bag.write_compressed(layout.image_topic, stamp, frame_id, image_format,
                                         _compress(sample.image, image_format, jpeg_quality))
                else:
                    bag.write_image(layout.image_topic, stamp, frame_id, codec.encode_rgb(sample.image, image_format))
                bag.write_camera_info(layout.camera_info_topic, stamp, frame_id,
                                      codec.encode_camera_info(np.asarray(sample.intrinsics, dtype=np.float64), width, height))
                label_stamp = stamp + depth_offset_ns
                if layout.depth_topic is not None:
                    bag.write_image(layout.depth_topic, label_stamp, frame_id,
                                    codec.encode_depth(sample.depth, depth_encoding))
                if layout.cloud_topic is not None:
                    points = cloud_from_depth(sample.depth, sample.intrinsics)
                    cloud = codec.encode_cloud(points.reshape(1, -1, 3), organized=True)
                    bag.write_cloud(layout.cloud_topic, label_stamp, frame_id, cloud)
                if anchors is not None:
                    _write_anchors(bag, layout, anchors, sample, stamp, label_stamp)
                layout.stamps_ns.append(stamp)
                layout.depth_stamps_ns.append(label_stamp)
    except BaseException:
        shutil.rmtree(staging.parent, ignore_errors=True)
        raise
    publish_staged(path)
    return layout


def _write_anchors(bag: BagWriter, layout: BagLayout, sensors: AnchorSensors, sample: Sample, stamp: int,
                   label_stamp: int) -> None:
    """The anchor sensor messages of one frame (and ``/tf_static`` with the first frame, or ``/tf`` with each)."""
    topic = "/tf" if sensors.tf_dynamic else "/tf_static"
    if (sensors.tf_dynamic or (sensors.tf_static and not layout.stamps_ns)) and (sensors.lidar or sensors.range):
        tf_stamp = label_stamp if sensors.tf_dynamic else stamp
        transforms = []
        if sensors.lidar:
            transforms.append((tf_stamp, layout.frame_id, sensors.lidar_frame, sensors.lidar_to_camera))
        if sensors.range:
            transforms.append((tf_stamp, layout.frame_id, sensors.range_frame, sensors.range_to_camera))
        bag.write(topic, tf_message(transforms), tf_stamp)
    if layout.lidar_topic is not None:
        points = _lidar_points(sample.depth, sample.intrinsics, sensors)
        bag.write_cloud(layout.lidar_topic, label_stamp, sensors.lidar_frame,
                        codec.encode_cloud(points.reshape(1, -1, 3), organized=True))
    if layout.range_topic is not None:
        reading = range_from_depth(sample.depth, sample.intrinsics, sensors.range_to_camera, sensors.range_fov,
                                   sensors.range_min, sensors.range_max)
        layout.ranges_m.append(reading)
        bag.write(layout.range_topic, range_msg(header_msg(label_stamp, sensors.range_frame), reading,
                                                sensors.range_min, sensors.range_max, sensors.range_fov))
