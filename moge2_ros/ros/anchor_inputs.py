"""The node's metric anchor inputs (issue 14): subscriptions, a short raw buffer per source, and per image the
reading nearest its stamp, converted into a :mod:`moge2_ros.anchors` source.

Topics (relative, under ``namespace`` when given; enabled by the boolean parameters of the same name):

=================  ==========================  ==========================================================
topic              type                        frame / transform to the camera optical frame
=================  ==========================  ==========================================================
anchor/points      sensor_msgs/PointCloud2     ``anchor_points_extrinsic``, else TF, else same frame
anchor/depth       sensor_msgs/Image           registered to the image (32FC1 metres, 16UC1 millimetres)
anchor/range       sensor_msgs/Range           ``anchor_range_extrinsic``, else TF, else same frame
=================  ==========================  ==========================================================

QoS: the node's ``input_qos`` (``sensor_data`` = best effort, or ``reliable``: needed for clouds of megabytes,
whose many fragments a best-effort transport rarely delivers whole).

Threads: the subscription callbacks (executor thread) only append the raw message to a bounded buffer;
:meth:`AnchorInputs.readings` (the inference worker) picks, converts (:mod:`moge2_ros.pipeline.anchor_msgs`, the
one conversion shared with ``bag-infer``) and transforms.  Staleness is not decided here: the readings keep
their stamps and :class:`moge2_ros.anchors.ScaleAnchoring` drops those older than ``anchor_max_age``.

The transform of a points / range reading (sensor frame -> camera optical frame), in this order:

1. the ``anchor_<source>_extrinsic`` parameter ``[tx, ty, tz, qx, qy, qz, qw]`` (all zero = unset); with a non-empty
   ``anchor_<source>_frame`` the reading's ``frame_id`` must equal it (else dropped as ``wrong_frame``);
2. identity when the reading's ``frame_id`` equals the image's;
3. TF (``tf2_ros``, imported only when needed; a lookup at the reading's stamp, then the latest transform),
   counted ``no_transform`` when the lookup fails;
4. without ``tf2_ros`` (pip-only ROS): dropped as ``wrong_frame`` (one warning at start-up says why).

Every dropped message is counted once by reason (:meth:`AnchorInputs.counts`); nothing here raises into the
worker for a bad message.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image, PointCloud2, Range

from ..anchors import Anchor, Extrinsic
from ..errors import InputError
from ..pipeline import anchor_msgs
from .params import anchor_extrinsic

__all__ = ["SOURCES", "BUFFER_MESSAGES", "BUFFER_BYTES", "AnchorInputs", "subscription_qos"]

#: Anchor sources: name -> (message type, relative topic).
SOURCES: dict[str, tuple[Any, str]] = {
    "points": (PointCloud2, "anchor/points"),
    "depth": (Image, "anchor/depth"),
    "range": (Range, "anchor/range"),
}
#: Raw messages kept per source (the newest); with the stamps they cover, e.g. 0.8 s of a 10 Hz LiDAR.
BUFFER_MESSAGES = 8
#: Bytes of message data kept per source at most (the newest message is always kept): bounds the memory of
#: large clouds (8 clouds of 2 million 16-byte points would be 256 MB).
BUFFER_BYTES = 64 * 1024 * 1024
#: Seconds between repeated warnings about bad anchor messages.
LOG_THROTTLE_S = 5.0
#: Drop reasons counted by :meth:`AnchorInputs.counts`, besides ``<source>_received`` and ``<source>_used``.
REASONS = ("bad", "wrong_frame", "no_transform")

_TF_MISSING = ("tf2_ros is not importable (ROS installed from pip wheels): anchor/{source} readings in another frame "
               "than the image's are dropped as 'wrong_frame'; set anchor_{source}_extrinsic "
               "[tx, ty, tz, qx, qy, qz, qw] to use them")


def subscription_qos(input_qos: str) -> QoSProfile:
    """QoS of the anchor subscriptions, the node's ``input_qos``: ``sensor_data`` (best effort: matches every
    publisher, but a large cloud sent in many UDP fragments may never arrive whole) or ``reliable`` (matches only
    reliable publishers, the default of most LiDAR and depth camera drivers; large clouds are resent until
    complete)."""
    if input_qos == "sensor_data":
        return qos_profile_sensor_data
    return QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)


def _data_bytes(msg: Any) -> int:
    """Bytes of a message's payload (``data`` of a cloud or image; 0 for a Range)."""
    data = getattr(msg, "data", None)
    try:
        return len(data) if data is not None and not isinstance(data, (int, float)) else 0
    except TypeError:
        return 0


@dataclass
class _Converted:
    """The outcome of one message, cached so that a reading reused by several images is converted and counted
    once: the anchor, or the reason it was dropped (``transient`` = retried by the next image, e.g. a TF lookup
    before the transform arrived).  Redone when the settings (``generation``) or the image's frame change."""

    msg: Any
    anchor: Anchor | None = None
    reason: str = ""
    transient: bool = False
    generation: int = 0
    camera_frame: str = ""


@dataclass
class _Source:
    name: str
    extrinsic: Extrinsic | None = None
    frame: str = ""
    buffer: deque = field(default_factory=lambda: deque(maxlen=BUFFER_MESSAGES))
    buffered_bytes: int = 0
    received: int = 0
    used: int = 0
    last: _Converted | None = None
    subscription: Any = None


class AnchorInputs:
    """The anchor subscriptions of one camera and their conversion into anchors for its frames.

    Args:
        node: the rclpy node that owns the subscriptions (and a TF listener when one is needed).
        cfg: the node's parameter values (``input_qos``: the subscriptions' QoS, see :func:`subscription_qos`;
            ``anchor_points``, ``anchor_depth``, ``anchor_range`` (bool),
            ``anchor_points_frame``, ``anchor_range_frame`` (str), ``anchor_points_extrinsic``,
            ``anchor_range_extrinsic`` (7 floats; all zero or empty = unset)); missing keys count as off / unset.
        namespace: relative namespace of the camera ("" = the node's): topics ``<namespace>/anchor/points`` ...

    Raises:
        InputError: an extrinsic parameter is malformed (the message names the parameter).
    """

    def __init__(self, node: Any, cfg: dict[str, Any], namespace: str = "") -> None:
        self._node = node
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(REASONS, 0)
        self._tf: Any = None  # tf2_ros.Buffer once created; False when tf2_ros is not importable
        self._tf_listener: Any = None
        self.last_problem = ""
        prefix = namespace.strip("/")
        self._generation = 0  # bumped by configure(): cached conversions of older settings are redone
        self._sources = {name: _Source(name) for name in SOURCES if cfg.get(f"anchor_{name}", False)}
        self.configure(cfg)
        qos = subscription_qos(str(cfg.get("input_qos", "sensor_data")))
        for name, source in self._sources.items():
            msg_type, topic = SOURCES[name]
            topic = f"{prefix}/{topic}" if prefix else topic
            source.subscription = node.create_subscription(
                msg_type, topic, lambda msg, s=source: self._on_message(s, msg), qos)
        if any(s.extrinsic is None for n, s in self._sources.items() if n != "depth"):
            self._tf_buffer()  # start listening early: /tf_static must arrive before the first lookup

    def configure(self, cfg: dict[str, Any]) -> None:
        """Apply the run-time settings of the enabled sources: ``anchor_<source>_extrinsic`` (7 numbers, or all
        zero / empty = unset: TF or the image's frame) and ``anchor_<source>_frame``.  The subscriptions stay.

        Raises:
            InputError: a malformed extrinsic (names the parameter); nothing is changed then.
        """
        settings = {}
        for name in self._sources:
            if name == "depth":
                continue
            param = f"anchor_{name}_extrinsic"
            settings[name] = (anchor_extrinsic(list(cfg.get(param, [])), param),
                              str(cfg.get(f"anchor_{name}_frame", "") or ""))
        with self._lock:
            for name, (extrinsic, frame) in settings.items():
                self._sources[name].extrinsic, self._sources[name].frame = extrinsic, frame
            self._generation += 1

    # ------------------------------------------------------------------------------------------------ callbacks
    def _on_message(self, source: _Source, msg: Any) -> None:
        """Subscription callback: keep the raw message (no decoding); never blocks on the worker for long."""
        size = _data_bytes(msg)
        with self._lock:
            source.received += 1
            if len(source.buffer) == source.buffer.maxlen:
                source.buffered_bytes -= source.buffer[0][1]
            source.buffer.append((msg, size))
            source.buffered_bytes += size
            while len(source.buffer) > 1 and source.buffered_bytes > BUFFER_BYTES:
                source.buffered_bytes -= source.buffer.popleft()[1]

    def push(self, source: str, msg: Any) -> None:
        """Store ``msg`` as if it had arrived on the ``source`` topic (``points``, ``depth``, ``range``); what the
        subscription callback does.  Raises KeyError for a source that is not enabled."""
        self._on_message(self._sources[source], msg)

    # ------------------------------------------------------------------------------------------------ worker
    def readings(self, stamp_s: float, camera_frame: str) -> list[Anchor]:
        """Per enabled source, the buffered reading whose header stamp is nearest ``stamp_s`` (seconds, the
        image's clock), converted to an anchor in the camera optical frame ``camera_frame``.

        Bad messages (malformed, unknown frame, no transform) are counted once each and left out; never raises
        for a message.  The anchors keep their stamps (staleness is decided by the anchoring's max age).
        """
        anchors: list[Anchor] = []
        for source in self._sources.values():
            msg = self._nearest(source, stamp_s)
            if msg is None:
                continue
            with self._lock:
                generation = self._generation
            result = source.last
            if result is None or result.msg is not msg or result.transient or \
                    (result.generation, result.camera_frame) != (generation, camera_frame):
                previous = result.reason if result is not None and result.msg is msg else None
                result = self._convert(source, msg, camera_frame)
                result.generation, result.camera_frame = generation, camera_frame
                source.last = result
                if result.reason and result.reason != previous:  # a retry failing alike is not counted again
                    self._count(source, result.reason)
            if result.anchor is not None:
                with self._lock:
                    source.used += 1
                anchors.append(result.anchor)
        return anchors

    def _nearest(self, source: _Source, stamp_s: float) -> Any:
        """The buffered message nearest ``stamp_s``; messages whose stamp cannot be read are removed and counted
        as ``bad``."""
        with self._lock:
            items = list(source.buffer)
        best, best_gap, broken = None, None, []
        for msg, _ in items:
            try:
                gap = abs(anchor_msgs.stamp_seconds(msg.header) - stamp_s)
            except (InputError, AttributeError, TypeError, ValueError, OverflowError) as exc:
                broken.append(msg)
                self._count(source, "bad", f"anchor/{source.name}: unreadable header stamp: {exc}")
                continue
            if gap != gap:  # NaN image stamp: nothing is nearer than anything else, take the newest
                gap = 0.0
            if best_gap is None or gap <= best_gap:
                best, best_gap = msg, gap
        if broken:
            with self._lock:
                kept = [(m, n) for m, n in source.buffer if all(m is not b for b in broken)]
                source.buffer.clear()
                source.buffer.extend(kept)
                source.buffered_bytes = sum(n for _, n in kept)
        return best

    def _convert(self, source: _Source, msg: Any, camera_frame: str) -> _Converted:
        try:
            if source.name == "depth":
                return _Converted(msg, anchor_msgs.depth_anchor(msg))
            extrinsic, reason, transient = self._extrinsic(source, msg, camera_frame)
            if extrinsic is None:
                return _Converted(msg, reason=reason, transient=transient)
            convert = anchor_msgs.cloud_anchor if source.name == "points" else anchor_msgs.range_anchor
            return _Converted(msg, convert(msg, extrinsic))
        except (InputError, AttributeError, TypeError, ValueError, OverflowError) as exc:
            # InputError (AnchorError): the conversion's own checks; the others: a field of the wrong type
            self._warn(f"anchor/{source.name}: dropped a malformed message: {exc}")
            return _Converted(msg, reason="bad")

    def _extrinsic(self, source: _Source, msg: Any, camera_frame: str) -> tuple[Extrinsic | None, str, bool]:
        """``(extrinsic, "", False)``, or ``(None, reason, transient)`` with reason ``wrong_frame`` or
        ``no_transform``."""
        frame_id = str(msg.header.frame_id)
        with self._lock:
            extrinsic, expected = source.extrinsic, source.frame
        if extrinsic is not None:
            if expected and frame_id != expected:
                self._warn(f"anchor/{source.name}: frame_id '{frame_id}' is not anchor_{source.name}_frame "
                           f"'{expected}': dropped")
                return None, "wrong_frame", False
            return extrinsic, "", False
        if frame_id == camera_frame:
            return Extrinsic(), "", False
        tf = self._tf_buffer()
        if tf is False:
            self._warn(f"anchor/{source.name}: frame_id '{frame_id}' is not the image's '{camera_frame}' and "
                       f"there is no TF (tf2_ros) nor anchor_{source.name}_extrinsic: dropped")
            return None, "wrong_frame", False
        transform = self._lookup(tf, camera_frame, frame_id, msg.header.stamp)
        if transform is None:
            return None, "no_transform", True
        return anchor_msgs.transform_extrinsic(transform), "", False

    # ------------------------------------------------------------------------------------------------ TF
    def _tf_buffer(self) -> Any:
        """The tf2_ros Buffer (with its listener on the node), created on first use; False without tf2_ros."""
        if self._tf is None:
            try:
                import tf2_ros
            except ImportError:
                self._tf = False
                names = [n for n, s in self._sources.items() if n != "depth" and s.extrinsic is None]
                for name in names:
                    self._node.get_logger().warning(_TF_MISSING.format(source=name))
            else:
                self._tf = tf2_ros.Buffer()
                self._tf_listener = tf2_ros.TransformListener(self._tf, self._node)
        return self._tf

    def _lookup(self, tf: Any, target: str, source_frame: str, stamp: Any) -> Any:
        """The ``geometry_msgs/Transform`` from ``source_frame`` to ``target`` at ``stamp`` (else the latest one),
        or None (warned, throttled)."""
        import tf2_ros
        from rclpy.time import Time

        try:
            when = Time.from_msg(stamp)
        except (TypeError, ValueError, AttributeError):
            when = Time()
        error: Exception | None = None
        for at in (when, Time()):
            try:
                return tf.lookup_transform(target, source_frame, at).transform
            except tf2_ros.TransformException as exc:
                error = exc
        self._warn(f"no transform from '{source_frame}' to '{target}' for an anchor: {error}")
        return None

    # ------------------------------------------------------------------------------------------------ counts
    def _count(self, source: _Source, reason: str, warning: str = "") -> None:
        with self._lock:
            self._counts[reason] = self._counts.get(reason, 0) + 1
        if warning:
            self._warn(warning)

    def _warn(self, text: str) -> None:
        self.last_problem = text
        self._node.get_logger().warning(text, throttle_duration_sec=LOG_THROTTLE_S)

    def counts(self) -> dict[str, int]:
        """Counters since start: ``<source>_received`` (messages that arrived) and ``<source>_used`` (readings
        handed to the anchoring) per enabled source, and the dropped messages by reason: ``bad`` (malformed),
        ``wrong_frame``, ``no_transform``."""
        with self._lock:
            out: dict[str, int] = {}
            for name, source in self._sources.items():
                out[f"{name}_received"] = source.received
                out[f"{name}_used"] = source.used
            out.update(self._counts)
            return out

    @property
    def enabled(self) -> tuple[str, ...]:
        """The enabled sources (``points``, ``depth``, ``range``) in that order."""
        return tuple(self._sources)

    def close(self) -> None:
        """Destroy the subscriptions (and the TF listener); forget the buffered messages."""
        for source in self._sources.values():
            if source.subscription is not None:
                self._node.destroy_subscription(source.subscription)
                source.subscription = None
            with self._lock:
                source.buffer.clear()
                source.buffered_bytes = 0
                source.last = None
        if self._tf_listener is not None:
            unregister = getattr(self._tf_listener, "unregister", None)
            if unregister is not None:
                unregister()
            self._tf_listener = None
