"""The message types of our bags: ROS 2 Jazzy's standard messages plus ``moge2_ros_msgs/msg/MonocularGeometry``.

The custom type is registered from its definition ``ros/moge2_ros_msgs/msg/MonocularGeometry.msg`` (the file the
ROS build uses, so the CDR layout and the RIHS01 type hash are those of the compiled message), looked up in the
source tree first and then in an installed ``moge2_ros_msgs`` share folder.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Final

from moge2_ros.bags import BagError

if TYPE_CHECKING:  # pragma: no cover
    from rosbags.typesys.store import Typestore

__all__ = [
    "CAMERA_INFO",
    "COMPRESSED_IMAGE",
    "GEOMETRY",
    "IMAGE",
    "POINT_CLOUD2",
    "geometry_msg_path",
    "get_typestore",
]

IMAGE: Final[str] = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE: Final[str] = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO: Final[str] = "sensor_msgs/msg/CameraInfo"
POINT_CLOUD2: Final[str] = "sensor_msgs/msg/PointCloud2"
GEOMETRY: Final[str] = "moge2_ros_msgs/msg/MonocularGeometry"

_MSG_RELATIVE: Final[str] = "moge2_ros_msgs/msg/MonocularGeometry.msg"


def geometry_msg_path() -> Path:
    """Path of ``MonocularGeometry.msg``: ``<repo>/ros/moge2_ros_msgs/msg/`` or an installed share folder.

    Raises:
        BagError: the definition is nowhere to be found.
    """
    candidates = [Path(__file__).resolve().parents[2] / "ros" / _MSG_RELATIVE, Path(sys.prefix) / "share" / _MSG_RELATIVE]
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        candidates.append(Path(prefix) / "share" / _MSG_RELATIVE)
    for path in candidates:
        if path.is_file():
            return path
    raise BagError(
        "cannot find the message definition MonocularGeometry.msg (looked in: "
        + ", ".join(str(p) for p in candidates)
        + "); run from the moge2_ros source tree or source a workspace that built moge2_ros_msgs"
    )


@lru_cache(maxsize=1)
def get_typestore() -> "Typestore":
    """The shared ``rosbags`` typestore: ``Stores.ROS2_JAZZY`` + ``moge2_ros_msgs/msg/MonocularGeometry``.

    Raises:
        BagError: the custom message definition is missing or does not parse.
    """
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore as _rosbags_typestore

    store = _rosbags_typestore(Stores.ROS2_JAZZY)
    path = geometry_msg_path()
    try:
        types = get_types_from_msg(path.read_text(encoding="utf-8"), GEOMETRY)
        store.register(types)
    except Exception as exc:  # noqa: BLE001 - rosbags' parser errors have no common base class
        raise BagError(f"{path}: cannot register {GEOMETRY} ({type(exc).__name__}: {exc})") from exc
    return store
