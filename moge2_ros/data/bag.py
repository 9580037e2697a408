"""Training / evaluation samples from a rosbag2 recording: :class:`BagDataset`.

Each sample pairs one image message with, by header stamp within a tolerance,

* a depth image registered to that image (same size and optical frame, e.g. RealSense ``aligned_depth_to_color``,
  a simulator's depth camera): label type "B" (real, dense-ish); or
* a LiDAR ``PointCloud2`` projected into the image with its CameraInfo K (z-buffer: the nearest point of a pixel
  wins): label type "C" (sparse).

Intrinsics come from the camera_info topic (the message in force at the image's stamp). Depth is metric
(``is_metric = True``) in metres along the optical axis (OpenCV / REP 103 camera frame: x right, y down,
z forward), NaN where unknown.

Only header stamps and log times are read when the dataset is built (no image is decoded); samples are decoded
on access, so the dataset works with a ``torch.utils.data.DataLoader`` (each worker process opens the bag itself).
Reading, decoding and stamp matching are the recording I/O of :mod:`moge2_ros.bags`; open a recording through
:func:`moge2_ros.data.open_dataset` (``format="bag"``) or this class.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from moge2_ros.bags import BagError
from moge2_ros.bags.decode import depth_from_msg, k_from_camera_info, rgb_from_msg, xyz_from_cloud
from moge2_ros.bags.reader import BagReader, RawMessage, open_bag
from moge2_ros.bags.sync import CameraInfoTrack, default_camera_info_topic, match_by_stamp, nearest_offset_ns
from moge2_ros.bags.typestore import CAMERA_INFO, COMPRESSED_IMAGE, IMAGE, POINT_CLOUD2
from moge2_ros.data.sample import Dataset
from moge2_ros.data.sample import Sample, validate_sample
from moge2_ros.errors import InputError

__all__ = ["DEFAULT_TOLERANCE_MS", "BagDataset", "project_points_to_depth"]

#: Default largest stamp offset between an image and its depth / cloud, milliseconds.
DEFAULT_TOLERANCE_MS = 20.0


def project_points_to_depth(
    points: npt.NDArray[np.floating], intrinsics: npt.NDArray[np.floating], width: int, height: int
) -> npt.NDArray[np.float32]:
    """Depth image of 3-D points seen by a pinhole camera (z-buffer: the nearest point of each pixel wins).

    A point ``(x, y, z)`` with ``z > 0`` falls on the pixel whose centre is nearest to ``(fx x / z + cx,
    fy y / z + cy)`` (pixel centres at integer coordinates, ROS ``CameraInfo.K``); points outside the image are
    dropped. Projection uses :func:`moge2_ros.geometry.projection.project_points`.

    Args:
        points: ``(N, 3)`` points in metres in the camera optical frame (x right, y down, z forward).
        intrinsics: ``(3, 3)`` pixel K.
        width, height: image size, pixels.

    Returns:
        ``(height, width)`` float32 depth (z) in metres, NaN where no point falls.
    """
    import torch

    from moge2_ros.geometry.intrinsics import pixel_to_normalized_intrinsics
    from moge2_ros.geometry.projection import project_points

    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise InputError(f"points: expected shape (N, 3), found {pts.shape}")
    depth = torch.full((height * width,), float("inf"), dtype=torch.float64)
    pts_t = torch.from_numpy(pts)
    pts_t = pts_t[torch.isfinite(pts_t).all(dim=1) & (pts_t[:, 2] > 0)]
    if pts_t.shape[0]:
        k_norm = pixel_to_normalized_intrinsics(torch.as_tensor(np.asarray(intrinsics, dtype=np.float64)), width, height)
        uv = project_points(pts_t, k_norm)  # uv units: pixel j spans [j / W, (j + 1) / W)
        col = torch.floor(uv[:, 0] * width)
        row = torch.floor(uv[:, 1] * height)
        inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
        flat = (row[inside] * width + col[inside]).long()
        depth.scatter_reduce_(0, flat, pts_t[inside, 2], reduce="amin")
    out = depth.reshape(height, width).to(torch.float32).numpy()
    out[~np.isfinite(out)] = np.nan
    return out


@dataclass(frozen=True)
class _Entry:
    """Where a message is in the bag: its log time, its rank among the topic's messages of that log time, stamp."""

    log_time_ns: int
    rank: int
    stamp_ns: int


def _index(reader: BagReader, topics: list[str]) -> dict[str, list[_Entry]]:
    """Stamps of every message of ``topics`` (header read straight from the CDR bytes, nothing decoded)."""
    index: dict[str, list[_Entry]] = {t: [] for t in topics}
    last: dict[str, tuple[int, int]] = {}
    for raw in reader.raw_messages(topics):
        stamp = reader.stamp_of(raw)
        assert stamp is not None  # every indexed type has a header
        previous_time, previous_rank = last.get(raw.topic, (-1, -1))
        rank = previous_rank + 1 if raw.log_time_ns == previous_time else 0
        last[raw.topic] = (raw.log_time_ns, rank)
        index[raw.topic].append(_Entry(raw.log_time_ns, rank, stamp))
    return index


def _fetch(reader: BagReader, topic: str, entry: _Entry) -> RawMessage:
    for rank, raw in enumerate(reader.raw_messages([topic], entry.log_time_ns, entry.log_time_ns + 1)):
        if rank == entry.rank:
            return raw
    raise BagError(f"{reader.path}: the {topic} message at log time {entry.log_time_ns} ns vanished (bag modified?)")


def _span(entries: Sequence[_Entry]) -> str:
    stamps = [e.stamp_ns for e in entries]
    return f"{min(stamps) / 1e9:.3f}..{max(stamps) / 1e9:.3f} s ({len(stamps)} messages)"


class BagDataset(Dataset):
    """``Sequence[Sample]`` of a rosbag2 recording (see the module docstring).

    Args:
        path: bag folder or ``.mcap`` / ``.db3`` file.
        image_topic: ``sensor_msgs/Image`` (any colour encoding) or ``sensor_msgs/CompressedImage`` topic.
        depth_topic: registered depth ``sensor_msgs/Image`` topic (16UC1 millimetres or 32FC1 metres), same size
            and frame as the image -> label type "B".
        cloud_topic: ``sensor_msgs/PointCloud2`` topic -> label type "C" (exactly one of depth / cloud).
        camera_info_topic: ``sensor_msgs/CameraInfo`` of the image; None = the image topic's sibling
            ``.../camera_info``.
        tolerance_ms: largest header-stamp offset between an image and its depth or cloud, ms.
        cloud_to_camera: ``(4, 4)`` rigid transform taking cloud-frame points to the camera optical frame
            (``p_cam = T @ p_cloud``); None requires the cloud to be in the image's frame_id already.

    Attributes:
        pairs: ``(image index, label index)`` of each sample in the image topic / label topic.
        unmatched_images: images without a depth / cloud within the tolerance (skipped).

    Raises:
        BagError: unreadable bag, missing topic or wrong type, no camera_info, no image with a label within the
            tolerance ("unsynchronised stamps").
    """

    def __init__(
        self,
        path: str | Path,
        image_topic: str,
        depth_topic: str | None = None,
        cloud_topic: str | None = None,
        camera_info_topic: str | None = None,
        tolerance_ms: float = DEFAULT_TOLERANCE_MS,
        cloud_to_camera: npt.ArrayLike | None = None,
    ) -> None:
        self.path = Path(path)
        if (depth_topic is None) == (cloud_topic is None):
            raise BagError(f"{self.path}: give exactly one of depth_topic (registered depth) or cloud_topic (LiDAR)")
        if not (tolerance_ms >= 0 and np.isfinite(tolerance_ms)):
            raise BagError(f"tolerance_ms: expected a finite number >= 0, found {tolerance_ms}")
        self.image_topic = image_topic
        self.label_topic = depth_topic if depth_topic is not None else cloud_topic
        assert self.label_topic is not None
        self.label_type = "B" if depth_topic is not None else "C"
        self.tolerance_ms = float(tolerance_ms)
        self.cloud_to_camera = None
        if cloud_to_camera is not None:
            transform = np.asarray(cloud_to_camera, dtype=np.float64)
            if transform.shape != (4, 4) or not np.isfinite(transform).all() or not np.allclose(transform[3], [0, 0, 0, 1]):
                raise BagError(f"cloud_to_camera: expected a finite (4, 4) rigid transform, found {transform.tolist()}")
            self.cloud_to_camera = transform
        self._reader: BagReader | None = None
        self._pid = -1

        with open_bag(self.path) as bag:
            bag.require_topic(image_topic, (IMAGE, COMPRESSED_IMAGE), "image")
            if depth_topic is not None:
                bag.require_topic(depth_topic, (IMAGE,), "depth")
            else:
                bag.require_topic(self.label_topic, (POINT_CLOUD2,), "point cloud")
            if camera_info_topic is None:
                camera_info_topic = default_camera_info_topic(image_topic)
                if bag.topics.get(camera_info_topic) != CAMERA_INFO:
                    infos = [t for t, kind in bag.topics.items() if kind == CAMERA_INFO]
                    raise BagError(
                        f"{self.path}: no camera_info topic next to {image_topic} ({camera_info_topic}); give "
                        f"camera_info_topic (CameraInfo topics in the bag: {', '.join(infos) or 'none'})"
                    )
            bag.require_topic(camera_info_topic, (CAMERA_INFO,), "camera_info")
            self.camera_info_topic = camera_info_topic
            index = _index(bag, [image_topic, self.label_topic])
            self._infos = CameraInfoTrack(bag, camera_info_topic)
        self._images = index[image_topic]
        self._labels = index[self.label_topic]
        tolerance_ns = int(round(self.tolerance_ms * 1e6))
        self.pairs = match_by_stamp([e.stamp_ns for e in self._images], [e.stamp_ns for e in self._labels], tolerance_ns)
        if not self.pairs:
            offset = nearest_offset_ns([e.stamp_ns for e in self._images], [e.stamp_ns for e in self._labels])
            raise BagError(
                f"{self.path}: unsynchronised stamps: no {self.label_topic} message within {self.tolerance_ms:g} ms "
                f"of any {image_topic} message (image stamps {_span(self._images)}, {self.label_topic} stamps "
                f"{_span(self._labels)}, nearest offset {offset / 1e6:.1f} ms); check the topics or raise "
                "tolerance_ms"
            )
        self.unmatched_images = len(self._images) - len(self.pairs)

    # -------------------------------------------------------------------------------------------- access
    def _bag(self) -> BagReader:
        """The open reader of this process (re-opened after a fork: sqlite and file handles are not fork-safe)."""
        if self._reader is None or self._pid != os.getpid():
            self._reader = open_bag(self.path)
            self._pid = os.getpid()
        return self._reader

    def close(self) -> None:
        """Close the bag (it is re-opened on the next access)."""
        if self._reader is not None and self._pid == os.getpid():
            self._reader.close()
        self._reader = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_reader"] = None  # an open bag does not cross process boundaries
        return state

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def stamps_ns(self) -> list[int]:
        """Header stamps of the samples' images, ns."""
        return [self._images[i].stamp_ns for i, _ in self.pairs]

    @property
    def stems(self) -> list[str]:
        """One name per sample: its index, zero-padded to at least 6 digits (``000000``, ...)."""
        digits = max(6, len(str(len(self) - 1)))
        return [f"{i:0{digits}d}" for i in range(len(self))]

    @overload
    def __getitem__(self, index: int) -> Sample: ...

    @overload
    def __getitem__(self, index: slice) -> list[Sample]: ...

    def __getitem__(self, index: int | slice) -> Sample | list[Sample]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"BagDataset indices must be integers or slices, not {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"BagDataset index {index} out of range for {len(self)} samples")
        i, j = self.pairs[int(index)]
        bag = self._bag()
        image_entry, label_entry = self._images[i], self._labels[j]
        where = f"{self.path}:{self.image_topic}@{image_entry.stamp_ns}"
        image_msg = bag.deserialize(_fetch(bag, self.image_topic, image_entry))
        try:
            rgb = rgb_from_msg(image_msg)
            height, width = rgb.shape[:2]
            info = self._infos.at(image_entry.stamp_ns)
            k = k_from_camera_info(info, width, height)
        except InputError as exc:
            raise BagError(f"{where}: {exc}") from exc
        label_msg = bag.deserialize(_fetch(bag, self.label_topic, label_entry))
        label_where = f"{self.path}:{self.label_topic}@{label_entry.stamp_ns}"
        try:
            if self.label_type == "B":
                depth = depth_from_msg(label_msg)
                if depth.shape != (height, width):
                    raise BagError(
                        f"{label_where}: depth is {depth.shape[1]}x{depth.shape[0]} but the image is {width}x{height}; "
                        "expected a depth image registered to the colour image (e.g. aligned_depth_to_color)"
                    )
            else:
                depth = self._project_cloud(label_msg, image_msg.header.frame_id, k, width, height, label_where)
        except InputError as exc:
            raise BagError(f"{label_where}: {exc}") from exc
        sample = Sample(
            image=rgb,
            depth=depth,
            intrinsics=k,
            label_type=self.label_type,
            is_metric=True,
            source=where,
            meta={
                "bag": str(self.path),
                "stamp_ns": image_entry.stamp_ns,
                "frame_id": str(image_msg.header.frame_id),
                "label_topic": self.label_topic,
                "label_stamp_ns": label_entry.stamp_ns,
                "index": int(index) % len(self),
            },
        )
        return validate_sample(sample)

    def _project_cloud(self, msg: Any, camera_frame: str, k: np.ndarray, width: int, height: int, where: str) -> np.ndarray:
        points = xyz_from_cloud(msg)
        if self.cloud_to_camera is not None:
            points = points.astype(np.float64) @ self.cloud_to_camera[:3, :3].T + self.cloud_to_camera[:3, 3]
        elif msg.header.frame_id != camera_frame:
            raise BagError(
                f"{where}: the cloud is in frame {msg.header.frame_id!r}, the image in {camera_frame!r}; pass "
                "cloud_to_camera (4x4 transform from the cloud frame to the camera optical frame)"
            )
        return project_points_to_depth(points, k, width, height)

    def __iter__(self) -> Iterator[Sample]:
        for index in range(len(self)):
            yield self[index]
