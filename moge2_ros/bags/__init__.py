"""rosbag2 recordings (sqlite3 and MCAP) without a ROS installation, through the pure-Python ``rosbags`` library.

* :mod:`.reader`: :func:`~.reader.open_bag` -> :class:`~.reader.BagReader` (topics, counts, deserialised messages).
* :mod:`.decode`: message -> numpy (RGB, depth in metres, K, LiDAR points, header stamps), via
  :mod:`moge2_ros.io.msg_codec`, the same codec the ROS node uses.
* :mod:`.sync`: pairing of two topics by header stamp within a tolerance; the CameraInfo in force at a stamp.
* :mod:`.writer`: :class:`~.writer.BagWriter` (Image, CompressedImage, CameraInfo, PointCloud2,
  ``moge2_ros_msgs/MonocularGeometry``, raw copies).
* :mod:`.typestore`: the ROS 2 Jazzy message types plus ``moge2_ros_msgs/msg/MonocularGeometry``.

``moge2-ros bag-infer`` (the node's frame pipeline over a recording) is :mod:`moge2_ros.pipeline.bag_infer`.
The dataset of a recording (image + depth or LiDAR labels as Samples) is :class:`moge2_ros.data.bag.BagDataset`,
opened through :func:`moge2_ros.data.open_dataset`.  ``rosbags`` and torch are imported lazily, inside the
functions that need them.
"""

from __future__ import annotations

from typing import Final

from moge2_ros.errors import DatasetError

__all__ = ["NS_PER_S", "BagError"]

#: Nanoseconds per second: header stamps (``sec``, ``nanosec``) <-> the integer nanoseconds of bag records.
NS_PER_S: Final[int] = 1_000_000_000


class BagError(DatasetError):
    """A rosbag2 recording is missing, unreadable, corrupt or truncated, or lacks the topics / stamps asked for.

    The message names the bag (and the topic, stamp or file where there is one) and says what to do.
    """
