"""Write rosbag2 recordings (MCAP or sqlite3) with ``rosbags``: :class:`BagWriter` and message builders.

Messages are ``rosbags`` dataclasses of the shared typestore (:func:`moge2_ros.bags.typestore.get_typestore`),
serialised as CDR exactly like ROS 2 does, so ``ros2 bag``, rosbag2_py and ``rosbags`` read them. Their content
comes from the ROS-free codec :mod:`moge2_ros.io.msg_codec` (the same byte layouts as the ROS node's messages).

Time: ``stamp_ns`` is the message's ``header.stamp`` (nanoseconds since the epoch); ``log_time_ns`` is the bag's
receive time of the message (defaults to the stamp).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from moge2_ros.bags import NS_PER_S, BagError
from moge2_ros.bags.decode import header_stamp_ns
from moge2_ros.bags.typestore import CAMERA_INFO, COMPRESSED_IMAGE, GEOMETRY, IMAGE, POINT_CLOUD2, get_typestore
from moge2_ros.io.msg_codec import CameraInfoFields, CloudFields, GeometryFields, ImageFields

if TYPE_CHECKING:  # pragma: no cover
    from rosbags.interfaces import Connection

__all__ = [
    "STORAGES",
    "BagWriter",
    "publish_staged",
    "staging_path",
    "camera_info_msg",
    "cloud_msg",
    "compressed_msg",
    "geometry_msg",
    "header_msg",
    "image_msg",
    "range_msg",
    "tf_message",
]

#: Storage plugins :class:`BagWriter` can write.
STORAGES: Final[tuple[str, ...]] = ("mcap", "sqlite3")

# ------------------------------------------------------------------------------------------------ builders


def _types() -> dict[str, Any]:
    return get_typestore().types


def header_msg(stamp_ns: int, frame_id: str) -> Any:
    """``std_msgs/Header`` with ``stamp`` = ``stamp_ns`` (ns since the epoch, >= 0) and ``frame_id``."""
    stamp_ns = int(stamp_ns)
    if stamp_ns < 0:
        raise BagError(f"header stamp: expected >= 0 ns, found {stamp_ns}")
    types = _types()
    stamp = types["builtin_interfaces/msg/Time"](sec=stamp_ns // NS_PER_S, nanosec=stamp_ns % NS_PER_S)
    return types["std_msgs/msg/Header"](stamp=stamp, frame_id=str(frame_id))


def _u8(data: bytes | bytearray | np.ndarray) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8).ravel()


def image_msg(header: Any, fields: ImageFields) -> Any:
    """``sensor_msgs/Image`` from codec fields (:func:`moge2_ros.io.msg_codec.encode_depth` and friends)."""
    return _types()[IMAGE](
        header=header, height=fields.height, width=fields.width, encoding=fields.encoding,
        is_bigendian=fields.is_bigendian, step=fields.step, data=_u8(fields.data),
    )


def compressed_msg(header: Any, fmt: str, data: bytes) -> Any:
    """``sensor_msgs/CompressedImage`` holding already encoded ``data`` (``fmt``: ``"jpeg"``, ``"png"``, ...)."""
    return _types()[COMPRESSED_IMAGE](header=header, format=str(fmt), data=_u8(data))


def camera_info_msg(header: Any, fields: CameraInfoFields) -> Any:
    """``sensor_msgs/CameraInfo`` from :class:`moge2_ros.io.msg_codec.CameraInfoFields` (binning and ROI as given)."""
    types = _types()
    x_offset, y_offset, width, height = fields.roi
    roi = types["sensor_msgs/msg/RegionOfInterest"](x_offset=x_offset, y_offset=y_offset, height=height, width=width,
                                                    do_rectify=False)
    return types[CAMERA_INFO](
        header=header, height=fields.height, width=fields.width, distortion_model=fields.distortion_model,
        d=np.asarray(fields.d, dtype=np.float64), k=np.asarray(fields.k, dtype=np.float64),
        r=np.asarray(fields.r, dtype=np.float64), p=np.asarray(fields.p, dtype=np.float64),
        binning_x=fields.binning_x, binning_y=fields.binning_y, roi=roi,
    )


def cloud_msg(header: Any, fields: CloudFields) -> Any:
    """``sensor_msgs/PointCloud2`` from :func:`moge2_ros.io.msg_codec.encode_cloud` (FLOAT32 fields)."""
    types = _types()
    point_field = types["sensor_msgs/msg/PointField"]
    return types[POINT_CLOUD2](
        header=header, height=fields.height, width=fields.width,
        fields=[point_field(name=name, offset=offset, datatype=point_field.FLOAT32, count=1)
                for name, offset in fields.fields],
        is_bigendian=bool(fields.is_bigendian), point_step=fields.point_step, row_step=fields.row_step,
        data=_u8(fields.data), is_dense=bool(fields.is_dense),
    )


def geometry_msg(header: Any, fields: GeometryFields) -> Any:
    """``moge2_ros_msgs/MonocularGeometry`` of codec fields (field meanings:
    ``ros/moge2_ros_msgs/msg/MonocularGeometry.msg``); its ``camera_info`` gets the same header."""
    return _types()[GEOMETRY](
        header=header, camera_info=camera_info_msg(header, fields.camera_info),
        intrinsics_estimated=bool(fields.intrinsics_estimated), metric_scale=float(fields.metric_scale),
        fov_x_deg=float(fields.fov_x_deg), fov_y_deg=float(fields.fov_y_deg), num_tokens=int(fields.num_tokens),
        inference_ms=float(fields.inference_ms), model_id=str(fields.model_id),
        valid_fraction=float(fields.valid_fraction), scale_source=str(fields.scale_source),
        network_scale=float(fields.network_scale), scale_log_std=float(fields.scale_log_std),
        anchor_count=int(fields.anchor_count), anchor_inliers=int(fields.anchor_inliers),
        anchor_residual_m=float(fields.anchor_residual_m),
    )


def range_msg(header: Any, range_m: float, min_range: float, max_range: float, field_of_view: float,
              radiation_type: int = 1) -> Any:
    """``sensor_msgs/Range`` (REP 117: ``range_m`` may be +inf / -inf); ``field_of_view`` in radians,
    ``radiation_type`` 0 ultrasound, 1 infrared."""
    return _types()["sensor_msgs/msg/Range"](
        header=header, radiation_type=int(radiation_type), field_of_view=float(field_of_view),
        min_range=float(min_range), max_range=float(max_range), range=float(range_m), variance=0.0,
    )


def tf_message(transforms: list[tuple[int, str, str, tuple[float, ...]]]) -> Any:
    """``tf2_msgs/TFMessage`` of ``(stamp_ns, parent, child, (tx, ty, tz, qx, qy, qz, qw))`` entries: each maps
    points of ``child`` into ``parent`` (metres; quaternion x y z w, ROS order)."""
    types = _types()
    items = []
    for stamp_ns, parent, child, values in transforms:
        tx, ty, tz, qx, qy, qz, qw = (float(v) for v in values)
        transform = types["geometry_msgs/msg/Transform"](
            translation=types["geometry_msgs/msg/Vector3"](x=tx, y=ty, z=tz),
            rotation=types["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw))
        items.append(types["geometry_msgs/msg/TransformStamped"](header=header_msg(stamp_ns, parent),
                                                                 child_frame_id=str(child), transform=transform))
    return types["tf2_msgs/msg/TFMessage"](transforms=items)


# ------------------------------------------------------------------------------------------------ staging


def staging_path(target: str | Path) -> Path:
    """Where a bag meant for ``target`` is written first: ``<target>.partial/<target name>`` (rosbags names the
    storage file after its folder, so the finished folder can be moved to ``target`` as is)."""
    target = Path(target)
    return target.with_name(target.name + ".partial") / target.name


def publish_staged(target: str | Path) -> Path:
    """Move the finished bag at :func:`staging_path` to ``target`` (one rename) and delete ``<target>.partial``.

    Raises:
        BagError: ``target`` exists or the staged bag is incomplete (no ``metadata.yaml``).
    """
    target = Path(target)
    staged = staging_path(target)
    if not (staged / "metadata.yaml").is_file():
        raise BagError(f"{staged}: not a finished bag (no metadata.yaml)")
    if target.exists():
        raise BagError(f"{target}: exists already, not overwriting")
    try:
        staged.rename(target)
    except OSError as exc:
        raise BagError(f"{target}: cannot move the finished bag from {staged} ({exc})") from exc
    shutil.rmtree(staged.parent, ignore_errors=True)
    return target


# ------------------------------------------------------------------------------------------------ writer


class BagWriter:
    """A new rosbag2 recording (a folder with ``metadata.yaml`` and one ``.mcap`` or ``.db3`` file).

    Use as a context manager: the bag is complete (metadata written) only after a clean exit; on an exception the
    storage is aborted and the folder is removed, so no half-written bag is left behind that looks complete.

    Args:
        path: the bag folder to create; it must not exist.
        storage: ``"mcap"`` (ROS 2 Jazzy's default) or ``"sqlite3"``.
        version: rosbag2 metadata version (9 = Jazzy; 8 for older readers).

    Raises:
        BagError: bad storage, existing path, unwritable folder.
    """

    def __init__(self, path: str | Path, storage: str = "mcap", version: int = 9) -> None:
        if storage not in STORAGES:
            raise BagError(f"bag storage: expected one of {', '.join(STORAGES)}, found {storage!r}")
        if version not in (8, 9):
            raise BagError(f"bag version: expected 8 or 9, found {version!r}")
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"{self.path}: exists already; a bag is only ever written to a new folder")
        self.storage = storage
        self.version = version
        self._writer: Any = None
        self._connections: dict[str, "Connection"] = {}
        self._types: dict[str, str] = {}
        self.counts: dict[str, int] = {}

    # -------------------------------------------------------------------------------------------- lifecycle
    def open(self) -> "BagWriter":
        from rosbags.rosbag2 import StoragePlugin, Writer, WriterError

        plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
        try:
            self._writer = Writer(self.path, version=self.version, storage_plugin=plugin)  # type: ignore[arg-type]
            self._writer.open()
        except (WriterError, OSError) as exc:
            self._writer = None
            raise BagError(f"{self.path}: cannot create the bag ({exc})") from exc
        return self

    def close(self) -> None:
        """Finish the bag: write the storage index and ``metadata.yaml``."""
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        try:
            writer.close()
        except OSError as exc:
            raise BagError(f"{self.path}: cannot finish the bag ({exc})") from exc

    def abort(self) -> None:
        """Stop writing and delete the incomplete bag folder."""
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.abort()
            except Exception:  # noqa: BLE001 - best effort: the folder is removed below anyway
                pass
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> "BagWriter":
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -------------------------------------------------------------------------------------------- writing
    def _require_open(self) -> Any:
        if self._writer is None:
            raise BagError(f"{self.path}: the bag is not open for writing (use 'with BagWriter(...) as bag:')")
        return self._writer

    def add_topic(self, topic: str, msgtype: str, msgdef: str | None = None, digest: str | None = None) -> None:
        """Declare ``topic`` of ``msgtype`` (idempotent). ``msgdef``/``digest``: definition and RIHS01 hash of a
        type outside the typestore (when copying foreign topics); by default the typestore provides them."""
        writer = self._require_open()
        if topic in self._connections:
            if self._types[topic] != msgtype:
                raise BagError(f"{self.path}: topic {topic} is {self._types[topic]}, cannot also write {msgtype}")
            return
        from rosbags.rosbag2 import WriterError

        try:
            if msgdef is not None and digest:
                connection = writer.add_connection(topic, msgtype, msgdef=msgdef, rihs01=digest)
            else:
                connection = writer.add_connection(topic, msgtype, typestore=get_typestore())
        except (WriterError, KeyError) as exc:
            raise BagError(f"{self.path}: cannot add topic {topic} of type {msgtype} ({exc})") from exc
        self._connections[topic] = connection
        self._types[topic] = msgtype
        self.counts[topic] = 0

    def write_raw(self, topic: str, msgtype: str, data: bytes | memoryview, log_time_ns: int) -> None:
        """Write an already serialised (CDR) message; ``topic`` is added with the typestore's definition if new."""
        self.add_topic(topic, msgtype)
        self._require_open().write(self._connections[topic], int(log_time_ns), data)
        self.counts[topic] += 1

    def write(self, topic: str, msg: Any, log_time_ns: int | None = None) -> None:
        """Serialise and write a ``rosbags`` message; ``log_time_ns`` defaults to its ``header.stamp``."""
        msgtype = type(msg).__msgtype__
        store = get_typestore()
        if log_time_ns is None:
            log_time_ns = header_stamp_ns(msg)
        self.write_raw(topic, msgtype, store.serialize_cdr(msg, msgtype), log_time_ns)

    # ---------------------------------------------------------------------------------------- typed helpers
    def write_image(self, topic: str, stamp_ns: int, frame_id: str, fields: ImageFields,
                    log_time_ns: int | None = None) -> None:
        """``sensor_msgs/Image`` of codec fields under ``header(stamp_ns, frame_id)``."""
        self.write(topic, image_msg(header_msg(stamp_ns, frame_id), fields), log_time_ns)

    def write_compressed(self, topic: str, stamp_ns: int, frame_id: str, fmt: str, data: bytes,
                         log_time_ns: int | None = None) -> None:
        """``sensor_msgs/CompressedImage`` of encoded ``data``."""
        self.write(topic, compressed_msg(header_msg(stamp_ns, frame_id), fmt, data), log_time_ns)

    def write_camera_info(self, topic: str, stamp_ns: int, frame_id: str, fields: CameraInfoFields,
                          log_time_ns: int | None = None) -> None:
        """``sensor_msgs/CameraInfo`` of codec fields."""
        self.write(topic, camera_info_msg(header_msg(stamp_ns, frame_id), fields), log_time_ns)

    def write_cloud(self, topic: str, stamp_ns: int, frame_id: str, fields: CloudFields,
                    log_time_ns: int | None = None) -> None:
        """``sensor_msgs/PointCloud2`` of codec fields."""
        self.write(topic, cloud_msg(header_msg(stamp_ns, frame_id), fields), log_time_ns)
