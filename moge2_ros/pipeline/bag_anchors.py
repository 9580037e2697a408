"""Metric anchor readings of a recording for ``bag-infer --anchor-topic`` (issue 14): the offline twin of the node's
anchor subscriptions.

* the topic's kind comes from its type in the bag: ``PointCloud2`` -> ``points``, ``Image`` (32FC1 / 16UC1) ->
  ``depth``, ``Range`` -> ``range``;
* each topic is streamed in log-time order on its own reader (constant memory, one pass), and an image gets the
  reading whose header stamp is nearest to its own within the age limit;
* messages become anchors through :mod:`moge2_ros.pipeline.anchor_msgs` (the node's conversions);
* the sensor -> camera optical frame transform of a cloud or a range comes from an explicit extrinsic (the
  ``--anchor-extrinsic`` flag) or from the bag's ``/tf_static`` and ``/tf`` (:class:`moge2_ros.bags.tf.TfTree`),
  composed along the chain from the reading's ``frame_id`` to the image's; a reading in the image's own frame
  needs none.  A registered depth image is in the camera's view by definition and needs none either.

Bad readings never stop a run: they are counted per topic (:attr:`BagAnchors.counts`).  What is wrong before the
first frame (unknown topic, wrong type, no transform chain at all) raises one :class:`~moge2_ros.bags.BagError`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from moge2_ros.anchors import Anchor, AnchorError, Extrinsic
from moge2_ros.bags import NS_PER_S, BagError
from moge2_ros.bags.reader import BagReader, RawMessage, open_bag
from moge2_ros.bags.tf import TF_TOPICS, TfTree, frame_key
from moge2_ros.bags.typestore import IMAGE, POINT_CLOUD2
from moge2_ros.errors import InputError
from moge2_ros.pipeline.anchor_msgs import (cloud_anchor, depth_anchor, extrinsic_param, range_anchor,
                                            transform_extrinsic)

__all__ = ["ANCHOR_TYPES", "BagAnchors", "anchor_kind", "chain_extrinsic"]

RANGE: Final[str] = "sensor_msgs/msg/Range"
#: Message type -> anchor kind.
ANCHOR_TYPES: Final[dict[str, str]] = {POINT_CLOUD2: "points", IMAGE: "depth", RANGE: "range"}
_DEPTH_ENCODINGS: Final[tuple[str, ...]] = ("32FC1", "16UC1")
#: Per-topic counters, in the order they are reported.
COUNTERS: Final[tuple[str, ...]] = ("used", "no_reading", "bad", "no_transform")


def anchor_kind(bag: BagReader, topic: str) -> str:
    """``points``, ``depth`` or ``range`` for an anchor topic of ``bag``, from its type (and, for an Image, the
    encoding of its first message).

    Raises:
        BagError: a malformed topic name, a topic not in the bag, no messages, another type, a colour image.
    """
    if not isinstance(topic, str) or not topic.startswith("/") or topic.rstrip("/") != topic or "//" in topic \
            or any(c.isspace() for c in topic):
        raise BagError(f"--anchor-topic {topic!r}: expected an absolute topic name such as /lidar/points")
    if topic not in bag.topics:
        fitting = [f"{t} ({k.rsplit('/', 1)[-1]})" for t, k in bag.topics.items() if k in ANCHOR_TYPES]
        raise BagError(f"{bag.path}: no anchor topic {topic} in the bag; topics of an anchor type (PointCloud2, "
                       f"depth Image, Range): {', '.join(fitting) or 'none'}")
    msgtype = bag.topics[topic]
    if msgtype not in ANCHOR_TYPES:
        raise BagError(f"{bag.path}: anchor topic {topic} is {msgtype}; expected sensor_msgs/msg/PointCloud2, a "
                       "depth sensor_msgs/msg/Image (32FC1 or 16UC1) or sensor_msgs/msg/Range")
    if bag.message_count(topic) == 0:
        raise BagError(f"{bag.path}: anchor topic {topic} has no messages")
    if msgtype == IMAGE:
        first = next(bag.messages([topic]))
        encoding = str(getattr(first.msg, "encoding", ""))
        if encoding not in _DEPTH_ENCODINGS:
            raise BagError(f"{bag.path}: anchor topic {topic} is an Image with encoding {encoding!r}; a depth "
                           f"anchor must be {' or '.join(_DEPTH_ENCODINGS)} (metres / millimetres)")
    return ANCHOR_TYPES[msgtype]


def chain_extrinsic(steps: Sequence[tuple[Any, bool]]) -> Extrinsic:
    """The rigid transform of a TF chain (:meth:`moge2_ros.bags.tf.TfTree.chain`: ``(edge, inverse)`` steps from
    the sensor frame to the camera optical frame) as one :class:`~moge2_ros.anchors.Extrinsic`.

    Raises:
        AnchorError: a transform of the chain with a bad quaternion or non-finite values.
    """
    rotation, translation = np.eye(3), np.zeros(3)
    for edge, inverse in steps:
        r, t = transform_extrinsic(edge.transform).matrix()
        if inverse:
            r, t = r.T, -r.T @ t
        rotation, translation = r @ rotation, r @ translation + t
    return Extrinsic.from_matrix(rotation, translation)


class _Track:
    """One anchor topic read in log-time order on its own reader; a window of raw readings around the image."""

    def __init__(self, path: Path, topic: str, kind: str, extrinsic: Extrinsic | None, max_age_ns: int) -> None:
        self.topic, self.kind, self.extrinsic, self.max_age_ns = topic, kind, extrinsic, max_age_ns
        self._reader = open_bag(path)
        self._stream: Iterator[RawMessage] | None = self._reader.raw_messages([topic])
        self._window: deque[tuple[int, RawMessage]] = deque()
        self.counts = dict.fromkeys(COUNTERS, 0)

    def nearest(self, stamp_ns: int) -> RawMessage | None:
        """The raw reading whose header stamp is nearest ``stamp_ns`` within the age limit (None if none).

        Raises:
            BagError: the storage is corrupt or truncated.
        """
        while self._stream is not None and (not self._window or self._window[-1][0] <= stamp_ns + self.max_age_ns):
            raw = next(self._stream, None)
            if raw is None:
                self._stream = None
                break
            try:
                reading_stamp = self._reader.stamp_of(raw)
            except BagError:
                self.counts["bad"] += 1
                continue
            if reading_stamp is not None:
                self._window.append((reading_stamp, raw))
        while self._window and self._window[0][0] < stamp_ns - self.max_age_ns:
            self._window.popleft()
        near = [(abs(s - stamp_ns), i) for i, (s, _) in enumerate(self._window) if abs(s - stamp_ns) <= self.max_age_ns]
        return self._window[min(near)[1]][1] if near else None

    def deserialize(self, raw: RawMessage) -> Any:
        return self._reader.deserialize(raw)

    def close(self) -> None:
        self._stream = None
        self._reader.close()


class BagAnchors:
    """The anchor readings of a recording for each image (see the module docstring).

    Args:
        path: the input bag (each topic gets its own reader on it).
        bag: the open input bag (topic types, ``/tf_static`` and ``/tf``).
        topics: anchor topics (absolute names).
        extrinsics: topic -> ``[tx, ty, tz, qx, qy, qz, qw]`` sensor -> camera optical frame, overriding TF.
        max_age_s: largest |reading stamp - image stamp|, seconds (> 0).
        tf_topics: TFMessage topics to build the transform tree from.

    Raises:
        BagError: bad topics (see :func:`anchor_kind`), duplicate topics, unreadable TF.
        InputError: a malformed extrinsic, an extrinsic for a topic that is not an anchor topic, bad max age.
    """

    def __init__(self, path: str | Path, bag: BagReader, topics: Sequence[str],
                 extrinsics: Mapping[str, Sequence[float]] | None = None, max_age_s: float = 0.1,
                 tf_topics: Sequence[str] = TF_TOPICS) -> None:
        extrinsics = dict(extrinsics or {})
        if not max_age_s > 0:
            raise InputError(f"anchor max age: expected > 0 seconds, found {max_age_s}")
        duplicates = sorted({t for t in topics if list(topics).count(t) > 1})
        if duplicates:
            raise BagError(f"--anchor-topic {', '.join(duplicates)} given more than once")
        stray = sorted(set(extrinsics) - set(topics))
        if stray:
            raise InputError(f"--anchor-extrinsic for {', '.join(stray)}, which is not an --anchor-topic")
        kinds = {topic: anchor_kind(bag, topic) for topic in topics}
        self.tf = TfTree.from_bag(bag, tf_topics)
        self._cache: dict[str, Extrinsic | None] = {}
        self._tracks: list[_Track] = []
        try:
            for topic in topics:
                given = None
                if topic in extrinsics:
                    given = extrinsic_param(extrinsics[topic], f"--anchor-extrinsic {topic}")
                    if kinds[topic] == "depth":
                        raise InputError(f"--anchor-extrinsic {topic}: a depth image anchor is registered to the "
                                         "camera and takes no extrinsic")
                self._tracks.append(_Track(Path(path), topic, kinds[topic], given,
                                           int(round(max_age_s * NS_PER_S))))
        except BaseException:
            self.close()
            raise

    @property
    def kinds(self) -> dict[str, str]:
        """Topic -> anchor kind."""
        return {track.topic: track.kind for track in self._tracks}

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        """Topic -> ``{"used", "no_reading" (no reading within the age), "bad" (malformed message),
        "no_transform" (no TF chain to the camera at the reading's stamp)}``."""
        return {track.topic: dict(track.counts) for track in self._tracks}

    def check_transforms(self, bag: BagReader, camera_frame: str) -> None:
        """Fail early when a cloud or range topic without an explicit extrinsic has no transform chain at all
        from its first reading's frame to ``camera_frame`` (dynamic edges at any time).

        Raises:
            BagError: naming the topic, both frames, the frames TF knows and the two ways to fix it.
        """
        for track in self._tracks:
            if track.kind == "depth" or track.extrinsic is not None:
                continue
            first = next(bag.messages([track.topic]))
            frame = frame_key(getattr(first.msg.header, "frame_id", ""))
            try:
                self.tf.chain(frame, camera_frame)
            except BagError as exc:
                raise BagError(f"{bag.path}: anchor topic {track.topic}: {exc}; record /tf_static with the sensor's "
                               f"transform or pass --anchor-extrinsic {track.topic}=tx,ty,tz,qx,qy,qz,qw") from None

    def _extrinsic(self, frame: str, camera_frame: str, stamp_ns: int, tolerance_ns: int) -> Extrinsic | None:
        """The reading frame -> camera transform from TF (None = same frame); BagError when there is no chain."""
        if frame_key(frame) == frame_key(camera_frame):
            return None
        key = f"{frame_key(frame)}\n{frame_key(camera_frame)}"
        if key in self._cache:
            return self._cache[key]
        steps = self.tf.chain(frame, camera_frame, stamp_ns, tolerance_ns)
        extrinsic = chain_extrinsic(steps)
        if all(edge.static for edge, _ in steps):
            self._cache[key] = extrinsic
        return extrinsic

    def readings(self, stamp_ns: int, camera_frame: str) -> list[Anchor]:
        """The anchors of the image stamped ``stamp_ns`` in ``camera_frame``: per topic the nearest reading within
        the age limit, converted; missing, malformed and untransformable readings are counted, never raised.

        Raises:
            BagError: only for a corrupt or truncated bag.
        """
        out: list[Anchor] = []
        for track in self._tracks:
            raw = track.nearest(stamp_ns)
            if raw is None:
                track.counts["no_reading"] += 1
                continue
            try:
                msg = track.deserialize(raw)
            except BagError:
                track.counts["bad"] += 1
                continue
            try:
                if track.kind == "depth":
                    out.append(depth_anchor(msg))
                    track.counts["used"] += 1
                    continue
                extrinsic = track.extrinsic
                if extrinsic is None:
                    frame = str(getattr(getattr(msg, "header", None), "frame_id", ""))
                    try:
                        extrinsic = self._extrinsic(frame, camera_frame, stamp_ns, track.max_age_ns)
                    except BagError:
                        track.counts["no_transform"] += 1
                        continue
                out.append(cloud_anchor(msg, extrinsic) if track.kind == "points" else range_anchor(msg, extrinsic))
                track.counts["used"] += 1
            except (AnchorError, InputError):
                track.counts["bad"] += 1
        return out

    def close(self) -> None:
        """Close the per-topic readers."""
        for track in self._tracks:
            track.close()
