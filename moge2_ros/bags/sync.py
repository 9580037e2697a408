"""Pairing of two message streams by header stamp (like ``message_filters``' approximate-time policy, offline)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from moge2_ros.errors import InputError

__all__ = ["match_by_stamp", "nearest_offset_ns"]


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
