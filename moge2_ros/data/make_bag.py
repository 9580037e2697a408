"""Write rosbag2 recordings from :class:`~moge2_ros.data.sample.Sample` sequences (``moge2-ros make-bag`` and tests).

The bag looks like a RealSense-style recording: a colour image topic (raw ``rgb8``/``bgr8`` or compressed
JPEG/PNG), its ``camera_info``, a depth image registered to the colour image (16UC1 millimetres or 32FC1 metres)
and optionally a LiDAR-like ``PointCloud2`` made by back-projecting the depth. Header stamps are
``start_ns + k * period_ns``; every message of frame k is logged at its own stamp.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from moge2_ros.bags import BagError
from moge2_ros.bags.writer import BagWriter, publish_staged, staging_path
from moge2_ros.data.sample import Sample, validate_sample
from moge2_ros.io import msg_codec as codec

__all__ = ["IMAGE_FORMATS", "BagLayout", "cloud_from_depth", "write_samples_bag"]

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
) -> BagLayout:
    """Write ``samples`` into a new bag folder ``path`` (atomically: the folder exists only when complete).

    Topics (under ``namespace``): ``color/image_raw`` (``image_format`` rgb8 / bgr8) or
    ``color/image_raw/compressed`` (jpeg / png), ``color/camera_info`` (the sample's pixel K), and
    ``aligned_depth_to_color/image_raw`` (the sample's depth, NaN written as invalid) when ``with_depth``, and
    ``lidar/points`` (the valid depth pixels back-projected, frame ``frame_id``) when ``with_cloud``.

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
    )
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
                layout.stamps_ns.append(stamp)
                layout.depth_stamps_ns.append(label_stamp)
    except BaseException:
        shutil.rmtree(staging.parent, ignore_errors=True)
        raise
    publish_staged(path)
    return layout
