"""One camera of ``moge2_node``: its subscriptions, publishers, frame pipeline (intrinsics and scale state), counters
and ``/diagnostics`` status.  The node's inference worker (:mod:`moge2_ros.ros.runtime`) runs its frames.

Topics are relative to the camera's namespace inside the node's (``front/image`` for camera ``front``; the plain
``image`` for the node's own camera ``""``).  Every output of a frame carries that frame's header unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Any

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from ..errors import InputError
from ..io.msg_codec import distortion_note
from ..pipeline.anchor_msgs import stamp_seconds
from ..pipeline.frame import BatchItem, FrameOutputs, FramePipeline, decode_rgb
from . import conversions as conv
from .node_config import apply_dynamic, frame_config
from .stats import PipelineStats

__all__ = ["OUTPUT_QOS", "Camera", "status_level"]

OUTPUT_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
LOG_THROTTLE_S = 5.0


def status_level(snap: dict[str, Any]) -> tuple[bytes, str]:
    """``(level, message)`` of a /diagnostics status from a stats snapshot: no input = WARN; every recent frame
    failed = ERROR; some = WARN; else OK."""
    if snap["input_rate_hz"] == 0:
        return DiagnosticStatus.WARN, "no input images"
    if snap["recent_failures"] and snap["output_rate_hz"] == 0:
        return DiagnosticStatus.ERROR, f"every recent frame fails: {snap['last_error']}"
    if snap["recent_failures"]:
        return DiagnosticStatus.WARN, f"some frames fail: {snap['last_error']}"
    return DiagnosticStatus.OK, "running"


def key_values(values: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=f"{v:.3f}" if isinstance(v, float) else str(v)) for k, v in values.items()]


class Camera:
    """One camera's ROS side and frame state.

    Args:
        node: the node (plain or lifecycle) that owns the topics.
        name: the camera's relative namespace (``""`` = the node's own).
        cfg: its parameters (node-level values with its overrides, :func:`~moge2_ros.ros.camera_params.camera_cfg`).
        predictor: the node's one :class:`~moge2_ros.inference.Predictor` (shared by every camera).
        geometry_type: ``moge2_ros_msgs/MonocularGeometry`` or None when the package is missing.
        total: the node's counters; every event of this camera is counted there too.

    Raises:
        InputError: parameters :class:`~moge2_ros.pipeline.frame.FrameConfig` refuses.
    """

    def __init__(self, node: Node, name: str, cfg: dict[str, Any], predictor: Any, geometry_type: Any,
                 total: PipelineStats) -> None:
        self.node = node
        self.name = name
        self.cfg = cfg
        self.predictor = predictor
        self.stats = PipelineStats()
        self._total = total
        self.pipeline = FramePipeline(predictor, frame_config(cfg))
        self._geometry_type = geometry_type
        self._camera_info: CameraInfo | None = None
        self._counted_info: CameraInfo | None = None  # the refused CameraInfo already counted as bad input
        self._distortion_warned = False
        self._image_sub: Any = None
        self._info_sub: Any = None
        self.anchor_inputs: Any = None  # AnchorInputs while subscribed, when an anchor source is enabled
        self.pub_depth = node.create_publisher(Image, self.topic("depth/image"), OUTPUT_QOS)
        self.pub_info = node.create_publisher(CameraInfo, self.topic("depth/camera_info"), OUTPUT_QOS)
        self.pub_points = node.create_publisher(PointCloud2, self.topic("points"), OUTPUT_QOS)
        self.pub_normals = node.create_publisher(Image, self.topic("normals"), OUTPUT_QOS)
        self.pub_mask = node.create_publisher(Image, self.topic("mask"), OUTPUT_QOS)
        self.pub_colorized = node.create_publisher(Image, self.topic("depth/colorized"), OUTPUT_QOS)
        self.pub_geometry = (node.create_publisher(geometry_type, self.topic("geometry"), OUTPUT_QOS)
                             if geometry_type is not None else None)

    # ------------------------------------------------------------------------------------------------ topics
    def topic(self, relative: str) -> str:
        """``relative`` inside the camera's namespace (still relative to the node's)."""
        return f"{self.name}/{relative}" if self.name else relative

    @property
    def label(self) -> str:
        """How logs and diagnostics name the camera."""
        return self.name or "(node namespace)"

    @property
    def input_topic(self) -> str:
        return self._image_sub.topic_name if self._image_sub is not None else self.topic(
            "image/compressed" if self.cfg["image_transport"] == "compressed" else "image")

    def subscribe(self, on_image: Callable[["Camera", Any], None]) -> None:
        """Create the image and camera_info subscriptions (nothing when they exist); ``on_image(self, msg)`` gets
        every image."""
        if self._image_sub is not None:
            return
        qos = qos_profile_sensor_data if self.cfg["input_qos"] == "sensor_data" else QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE)
        if self.cfg["image_transport"] == "compressed":
            self._image_sub = self.node.create_subscription(
                CompressedImage, self.topic("image/compressed"), lambda msg: on_image(self, msg), qos)
        else:
            self._image_sub = self.node.create_subscription(
                Image, self.topic("image"), lambda msg: on_image(self, msg), qos)
        self._info_sub = self.node.create_subscription(CameraInfo, self.topic("camera_info"), self._on_info, qos)
        if self.cfg["anchor_points"] or self.cfg["anchor_depth"] or self.cfg["anchor_range"]:
            from .anchor_inputs import AnchorInputs

            self.anchor_inputs = AnchorInputs(self.node, self.cfg, self.name)
            if self.cfg["anchor_mode"] == "off":
                self.node.get_logger().warning(f"{self._who()}anchor subscriptions are on but anchor_mode is off: "
                                               "the readings are not used")

    def unsubscribe(self) -> None:
        """Destroy the input subscriptions, anchors included (no-op when there are none)."""
        for sub in (self._image_sub, self._info_sub):
            if sub is not None:
                self.node.destroy_subscription(sub)
        self._image_sub = self._info_sub = None
        if self.anchor_inputs is not None:
            self.anchor_inputs.close()
            self.anchor_inputs = None

    def destroy(self) -> None:
        """Destroy every subscription and publisher of the camera."""
        self.unsubscribe()
        for pub in (self.pub_depth, self.pub_info, self.pub_points, self.pub_normals, self.pub_mask,
                    self.pub_colorized, self.pub_geometry):
            if pub is not None:
                self.node.destroy_publisher(pub)

    def _on_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg  # checked by the frame pipeline (cached per content) when a frame uses it

    # ------------------------------------------------------------------------------------------------ counters
    def on_received(self, now: float) -> None:
        self.stats.on_received(now)
        self._total.on_received(now)

    def on_dropped(self) -> None:
        self.stats.on_dropped()
        self._total.on_dropped()

    def on_unwatched(self) -> None:
        self.stats.on_unwatched()
        self._total.on_unwatched()

    def on_failure(self, kind: str, message: str, frame: bool = True) -> None:
        text = f"camera {self.name}: {message}" if self.name else message
        self.stats.on_failure(kind, message, frame=frame)
        self._total.on_failure(kind, text, frame=frame)

    # ------------------------------------------------------------------------------------------------ frames
    def configure(self, cfg: dict[str, Any]) -> None:
        """New run-time parameters (already checked): from the next frame on."""
        self.pipeline.configure(frame_config(cfg))
        if self.anchor_inputs is not None:
            self.anchor_inputs.configure(cfg)
        self.cfg = cfg

    def group(self, msg: Any) -> Hashable | None:
        """Frames of equal group may run as one batch: ``(height, width, tokens, rectified_size)`` of a raw image;
        None (never batched) for a compressed image (its size is known after decoding only).  The batch itself
        still checks the decoded (rectified) sizes and intrinsics (:func:`~moge2_ros.pipeline.frame.process_batch`)."""
        if self.cfg["image_transport"] == "compressed":
            return None
        try:
            size = (int(msg.height), int(msg.width))
        except (AttributeError, TypeError, ValueError):
            return None
        tokens = self.predictor.budget_for(self.cfg["num_tokens"] or None, self.cfg["resolution_level"])
        return (*size, tokens, tuple(self.cfg["rectified_size"]))

    def wanted(self) -> set[str]:
        """The pipeline outputs someone listens to (depth and its camera_info go together)."""
        cfg = self.cfg

        def subscribed(publisher: Any, enabled: bool) -> bool:
            return enabled and publisher is not None and publisher.get_subscription_count() > 0

        want = set()
        if subscribed(self.pub_depth, cfg["publish_depth"]) or subscribed(self.pub_info, cfg["publish_depth"]):
            want |= {"depth", "camera_info"}
        for name, publisher, enabled in (
            ("points", self.pub_points, cfg["publish_points"]),
            ("normals", self.pub_normals, cfg["publish_normals"]),
            ("mask", self.pub_mask, cfg["publish_mask"]),
            ("colorized", self.pub_colorized, cfg["publish_colorized"]),
            ("geometry", self.pub_geometry, cfg["publish_geometry"]),
        ):
            if subscribed(publisher, enabled):
                want.add(name)
        return want

    def batch_item(self, msg: Any) -> BatchItem:
        """Decode ``msg`` and gather what its frame needs (the camera's pipeline, outputs asked for, CameraInfo,
        anchors nearest its stamp); the predictor's run-time settings are this camera's from now on.

        Raises:
            Moge2RosError: an image the decoder or the budget refuses.
        """
        cfg = self.cfg
        apply_dynamic(self.predictor, cfg)
        rgb = decode_rgb(msg, self.predictor.pixel_limit())  # the header's size is checked before decoding
        header = msg.header
        stamp = stamp_seconds(header)
        inputs = self.anchor_inputs
        anchors = inputs.readings(stamp, header.frame_id) if inputs is not None and cfg["anchor_mode"] != "off" \
            else ()
        return BatchItem(self.pipeline, rgb, self.wanted(), camera_info=self._camera_info, anchors=anchors,
                         stamp=stamp, camera_id=header.frame_id)

    def process(self, msg: Any, received: float, publish: bool = True) -> None:
        """Run one frame of this camera and publish its outputs (nothing when no one listens).

        Raises:
            Moge2RosError: a frame the decoder, the budget or the pipeline refuses (the caller counts it).
        """
        item = self.batch_item(msg)
        frame = self.pipeline.process(item.rgb, item.outputs, camera_info=item.camera_info, anchors=item.anchors,
                                      stamp=item.stamp, camera_id=item.camera_id)
        self.deliver(msg, received, item, frame, publish)

    def deliver(self, msg: Any, received: float, item: BatchItem, frame: FrameOutputs | None, publish: bool) -> None:
        """Report and publish the outputs of ``msg``'s frame (None: nobody listened, nothing ran: counted as
        ``unwatched``)."""
        if frame is None:
            self.on_unwatched()
            return
        self.report(frame, item.camera_info)
        if publish:
            self.publish(msg.header, frame, received)

    def report(self, frame: FrameOutputs, info: Any) -> None:
        """Count and log what the frame says about the given intrinsics and the lens."""
        if frame.intrinsics_error is not None:  # the given camera (camera_info or fixed_intrinsics) was not used
            # A refused CameraInfo is counted once per message, not per frame (the pipeline keeps refusing it from
            # its cache and uses the last good camera of this image size, or estimates K); fixed intrinsics per frame.
            if self.cfg["intrinsics_source"] != "camera_info" or self._counted_info is not info:
                self._counted_info = info
                note = frame.camera_note or "estimating the intrinsics"
                text = str(frame.intrinsics_error)
                self.on_failure("bad_input", text if note == "estimating the intrinsics" else f"{text}; {note}",
                                frame=False)
                self.node.get_logger().warning(f"{self._who()}{note}: {text}", throttle_duration_sec=LOG_THROTTLE_S)
        if frame.distortion_ignored and not self._distortion_warned and info is not None:
            try:
                note = distortion_note(info)
            except InputError:
                note = None
            if note is not None:  # once per camera: with rectify off the image is used as if it were rectified
                self._distortion_warned = True
                self.node.get_logger().warning(f"{self._who()}{note} (rectify is false)")

    def publish(self, header: Any, frame: FrameOutputs, received: float) -> None:
        """Publish ``frame``'s outputs under ``header`` and count the frame as processed."""
        if frame.depth is not None:
            self.pub_depth.publish(conv.image_msg(header, frame.depth))
        if frame.camera_info is not None:
            self.pub_info.publish(conv.camera_info_msg(header, frame.camera_info))
        if frame.cloud is not None:
            self.pub_points.publish(conv.cloud_msg(header, frame.cloud))
        if frame.normals is not None:
            self.pub_normals.publish(conv.image_msg(header, frame.normals))
        if frame.mask is not None:
            self.pub_mask.publish(conv.image_msg(header, frame.mask))
        if frame.colorized is not None:
            self.pub_colorized.publish(conv.image_msg(header, frame.colorized))
        if frame.geometry is not None and self.pub_geometry is not None:
            self.pub_geometry.publish(conv.geometry_msg(self._geometry_type, header, frame.geometry))
        if frame.scale is not None:
            self.stats.on_scale(frame.scale)
            self._total.on_scale(frame.scale)
        now = time.monotonic()
        self.stats.on_processed(now - received, frame.inference_s, now)
        self._total.on_processed(now - received, frame.inference_s, now)

    def anchor_counts(self) -> dict[str, int]:
        """The anchor inputs' counters as ``anchor_<name>`` (empty without anchor subscriptions)."""
        inputs = self.anchor_inputs
        return {f"anchor_{k}": v for k, v in inputs.counts().items()} if inputs is not None else {}

    def _who(self) -> str:
        return f"camera {self.name}: " if self.name else ""

    # ------------------------------------------------------------------------------------------------ diagnostics
    def status(self, node_name: str) -> DiagnosticStatus:
        """This camera's /diagnostics status, named ``<node>: camera <name>``."""
        snap = self.stats.snapshot()
        level, message = status_level(snap)
        status = DiagnosticStatus(name=f"{node_name}: camera {self.label}", hardware_id=str(self.predictor.device),
                                  level=level, message=message)
        info = {"camera": self.label, "input": self.input_topic, "intrinsics_source": self.cfg["intrinsics_source"],
                "num_tokens": self.predictor.budget_for(self.cfg["num_tokens"] or None, self.cfg["resolution_level"])}
        info.update(self.anchor_counts())
        status.values = key_values({**info, **snap})
        return status
