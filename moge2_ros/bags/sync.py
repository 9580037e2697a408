"""Messages by header stamp, offline: pairing of two streams (like ``message_filters``' approximate-time policy)
and the CameraInfo in force at an image's stamp."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from moge2_ros.errors import InputError

if TYPE_CHECKING:
    from moge2_ros.bags.reader import BagReader

__all__ = ["match_by_stamp", "nearest_offset_ns", "CameraInfoTrack", "default_camera_info_topic"]


def _stamps(values: Sequence[int] | np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise InputError(f"{what}: expected a 1-D sequence of integer nanosecond stamps, found {array.dtype} {array.shape}")
    return array.astype(np.int64)


def match_by_stamp(
    primary_stamps: Sequence[int] | np.ndarray,
    other_stamps: Sequence[int] | np.ndarray,
    tolerance_ns: int,
) -> list[tuple[int, int]]:
    """One-to-one pairs ``(i, j)`` with ``|primary_stamps[i] - other_stamps[j]| <= tolerance_ns``.

    Among all pairs within the tolerance, the closest are taken first (ties: lower ``i``, then lower ``j``), and
    each index is used at most once; so two images never share one depth map and a dropped depth frame leaves its
    image unmatched instead of pairing it with a neighbour's depth beyond the tolerance. Stamps need not be sorted.

    Args:
        primary_stamps: ``(N,)`` integer ns (e.g. the image topic's header stamps).
        other_stamps: ``(M,)`` integer ns (e.g. the depth topic's header stamps).
        tolerance_ns: largest accepted offset, ns (>= 0).

    Returns:
        Pairs sorted by ``i``.

    Raises:
        InputError: non-integer stamps or a negative tolerance.
    """
    primary = _stamps(primary_stamps, "primary_stamps")
    other = _stamps(other_stamps, "other_stamps")
    tolerance = int(tolerance_ns)
    if tolerance < 0:
        raise InputError(f"tolerance_ns: expected >= 0, found {tolerance}")
    if primary.size == 0 or other.size == 0:
        return []
    order = np.argsort(other, kind="stable")
    sorted_other = other[order]
    lo = np.searchsorted(sorted_other, primary - tolerance, side="left")
    hi = np.searchsorted(sorted_other, primary + tolerance, side="right")
    counts = hi - lo
    if counts.sum() == 0:
        return []
    i_idx = np.repeat(np.arange(primary.size), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    k_idx = np.repeat(lo, counts) + offsets
    j_idx = order[k_idx]
    distance = np.abs(primary[i_idx] - other[j_idx])
    ranking = np.lexsort((j_idx, i_idx, distance))
    used_i: set[int] = set()
    used_j: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for r in ranking:
        i, j = int(i_idx[r]), int(j_idx[r])
        if i in used_i or j in used_j:
            continue
        used_i.add(i)
        used_j.add(j)
        pairs.append((i, j))
    pairs.sort()
    return pairs


def nearest_offset_ns(primary_stamps: Sequence[int] | np.ndarray, other_stamps: Sequence[int] | np.ndarray) -> int | None:
    """The smallest ``|primary - other|`` over all pairs, ns (None if either is empty): for error messages."""
    primary = _stamps(primary_stamps, "primary_stamps")
    other = np.sort(_stamps(other_stamps, "other_stamps"))
    if primary.size == 0 or other.size == 0:
        return None
    pos = np.clip(np.searchsorted(other, primary), 1, max(other.size - 1, 1))
    left = np.abs(primary - other[pos - 1])
    right = np.abs(primary - other[np.minimum(pos, other.size - 1)])
    return int(min(left.min(), right.min()))


def default_camera_info_topic(image_topic: str) -> str:
    """The image_transport sibling of an image topic: ``/cam/color/image_raw[/compressed]`` -> ``/cam/color/camera_info``."""
    topic = image_topic.rstrip("/")
    if topic.endswith("/compressed"):
        topic = topic[: -len("/compressed")]
    parent = topic.rsplit("/", 1)[0] if "/" in topic else ""
    return f"{parent}/camera_info"


class CameraInfoTrack:
    """The CameraInfo messages of a topic by header stamp, for looking up the one in force at an image's stamp.

    Only messages whose content (size, K, binning, ROI) differs from the previous one are kept, so a long
    recording of a fixed camera costs one message of memory.
    """

    def __init__(self, bag: BagReader, topic: str) -> None:
        self.topic = topic
        changes: list[tuple[int, Any]] = []
        previous: tuple[Any, ...] | None = None
        for message in bag.messages([topic]):
            msg = message.msg
            key = (msg.width, msg.height, tuple(np.asarray(msg.k).tolist()), msg.binning_x, msg.binning_y,
                   msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height)
            if key != previous:
                changes.append((message.stamp_ns if message.stamp_ns is not None else message.log_time_ns, msg))
                previous = key
        changes.sort(key=lambda item: item[0])
        self._changes = changes

    def __len__(self) -> int:
        return len(self._changes)

    def at(self, stamp_ns: int) -> Any:
        """The camera_info in force at ``stamp_ns``: the last change stamped at or before it, else the first one
        (None when the topic has no message)."""
        chosen = self._changes[0][1] if self._changes else None
        for stamp, msg in self._changes:
            if stamp > stamp_ns:
                break
            chosen = msg
        return chosen
