"""``moge2_node``: camera images in; metric depth, points, normals, mask, camera_info and geometry out.

Topics (relative names, so namespaces and remaps work; see ``config/moge2.yaml`` for the parameters):

=========================  ============================================  ============================================
topic                      type                                          notes
=========================  ============================================  ============================================
image                      sensor_msgs/Image (sub)                       rgb8, bgr8, rgba8, bgra8, mono8, mono16
image/compressed           sensor_msgs/CompressedImage (sub)             with ``image_transport:=compressed``
camera_info                sensor_msgs/CameraInfo (sub)                  K D R P binning ROI, when valid (rectified)
depth/image                sensor_msgs/Image                             32FC1 metres (NaN/Inf invalid) or 16UC1 mm
depth/camera_info          sensor_msgs/CameraInfo                        describes depth/image exactly (K' = P)
points                     sensor_msgs/PointCloud2                       x y z [rgb] [normal_*], metres
normals                    sensor_msgs/Image                             32FC3 unit vectors, optical frame
mask                       sensor_msgs/Image                             mono8, 255 = valid
depth/colorized            sensor_msgs/Image                             bgr8 preview, only while subscribed
geometry                   moge2_ros_msgs/MonocularGeometry              intrinsics, scale, FoV, timing, model
/diagnostics               diagnostic_msgs/DiagnosticArray               rates, drops, latency, backend, device
=========================  ============================================  ============================================

Every output of a frame carries that frame's header unchanged (REP 103 optical frame, REP 117/118 depth).
A distorted camera (CameraInfo with a non-zero D) is rectified before the model (``rectify``): the outputs are
those of the rectified pinhole camera P, or on the raw image grid with ``output_grid:=raw``; a refused CameraInfo
is counted (``bad_input``) once per message and the last good one of the image size is used, else K is estimated.
Latest-frame policy: the subscription callbacks only store the newest message; one worker thread runs
inference on the newest stored frame, so a slow model drops frames (counted) instead of queueing them.

The node is ROS wiring only: the frame itself (decoding, intrinsics, inference, every output's bytes) is
:class:`moge2_ros.pipeline.FramePipeline`, the same pipeline ``bag-infer`` runs; the predictor comes from
:func:`moge2_ros.inference.load_predictor`.
"""

from __future__ import annotations

import math
import sys
import threading
import time
import traceback
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from ..anchors import AnchorConfig, FitOptions
from ..errors import BudgetError, InputError, Moge2RosError
from ..inference.factory import PredictorOptions, load_predictor
from ..io.msg_codec import distortion_note
from ..pipeline.frame import FrameConfig, FramePipeline, decode_rgb
from . import conversions as conv
from .host_memory import keep_freed_memory
from .params import anchor_extrinsic, check_value, declare_all, short_reason
from .stats import PipelineStats

OUTPUT_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
LOG_THROTTLE_S = 5.0


def _load_geometry_msg() -> Any:
    try:
        from moge2_ros_msgs.msg import MonocularGeometry
    except ImportError:
        return None
    return MonocularGeometry


def _depth_range(cfg: dict[str, Any]) -> tuple[float, float] | None:
    """``(min, max)`` metres kept from min_depth / max_depth (0 = no limit), None when both are off."""
    lo, hi = cfg["min_depth"], cfg["max_depth"]
    return (lo, hi if hi > 0 else math.inf) if (lo > 0 or hi > 0) else None


def predictor_options(cfg: dict[str, Any]) -> PredictorOptions:
    """The :class:`PredictorOptions` of the node's parameters (the ONNX file only counts for backend onnx)."""
    onnx = cfg["backend"] == "onnx"
    return PredictorOptions(
        model=cfg["model"] or None, device=cfg["device"], precision=cfg["precision"],
        resolution_level=cfg["resolution_level"], num_tokens=cfg["num_tokens"] or None,
        edge_rtol=cfg["edge_rtol"] or None, depth_range=_depth_range(cfg), max_pixels=cfg["max_pixels"] or None,
        memory_budget_mb=cfg["memory_budget_mb"] or None,
        backend=cfg["backend"], onnx_path=(cfg["onnx_path"] or None) if onnx else None,
        onnx_providers=tuple(cfg["onnx_providers"]), onnx_cache_dir=cfg["onnx_cache_dir"] or None,
        compile=cfg["compile"], cuda_graphs=cfg["cuda_graphs"], channels_last=cfg["channels_last"],
        pinned_memory=cfg["pinned_memory"],
    )


def frame_config(cfg: dict[str, Any]) -> FrameConfig:
    """The :class:`FrameConfig` of the node's parameters (raises InputError for values it refuses)."""
    fixed = cfg["fixed_intrinsics"]
    return FrameConfig(
        intrinsics_source=cfg["intrinsics_source"],
        fixed_intrinsics=tuple(fixed) if cfg["intrinsics_source"] == "fixed" else None,
        intrinsics_stabilization=cfg["intrinsics_stabilization"], intrinsics_window=cfg["intrinsics_window"],
        scale_smoothing=cfg["scale_smoothing"], depth_encoding=cfg["depth_encoding"],
        invalid_depth=cfg["invalid_depth"], cloud_organized=cfg["cloud_organized"],
        cloud_stride=cfg["cloud_stride"], cloud_rgb=cfg["cloud_rgb"], cloud_normals=cfg["cloud_normals"],
        rectify=cfg["rectify"], output_grid=cfg["output_grid"], rectified_fov_deg=cfg["rectified_fov_deg"],
        rectified_size=tuple(int(v) for v in cfg["rectified_size"]),  # type: ignore[arg-type]
        fixed_distortion=tuple(float(v) for v in cfg["fixed_distortion"]) if cfg["intrinsics_source"] == "fixed"
        else (),
        fixed_distortion_model=cfg["fixed_distortion_model"],
        anchors=anchor_config(cfg),
        camera_height_m=cfg["camera_height"] if cfg["anchor_mode"] != "off" else 0.0,
        camera_up=tuple(float(v) for v in cfg["camera_up"]),  # type: ignore[arg-type]
    )


def anchor_config(cfg: dict[str, Any]) -> AnchorConfig | None:
    """The :class:`AnchorConfig` of the node's anchor parameters, None when ``anchor_mode`` is off."""
    if cfg["anchor_mode"] == "off":
        return None
    threshold = cfg["anchor_inlier_threshold"]
    return AnchorConfig(mode=cfg["anchor_mode"], max_age_s=cfg["anchor_max_age"], temporal=cfg["anchor_temporal"],
                        fit=FitOptions(trunc=threshold, inlier_threshold=threshold))


class Moge2Node(Node):
    """The MoGe-2 ROS 2 node.  Raises :class:`Moge2RosError` (ModelLoadError, InputError) from the constructor if
    the model cannot load or the parameters are unusable."""

    def __init__(self, node_name: str = "moge2_node", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.cfg = declare_all(self)
        self._cfg_lock = threading.Lock()
        self.stats = PipelineStats()
        self._predictor = load_predictor(
            predictor_options(self.cfg),
            say=lambda note: self.get_logger().warning(f"parameter 'model' is empty: {note}"))
        if self._predictor.budget_note:
            self.get_logger().info(self._predictor.budget_note)
        self.get_logger().info(self._predictor.budget.describe(self._predictor.num_tokens))
        self.get_logger().info(self._predictor.precision_note)
        self._apply_dynamic(self._predictor, self.cfg)
        self._pipeline = FramePipeline(self._predictor, frame_config(self.cfg))
        for name in ("anchor_points_extrinsic", "anchor_range_extrinsic"):
            anchor_extrinsic(self.cfg[name], name)  # InputError: the node does not start
        self._anchor_inputs = None
        if self.cfg["anchor_points"] or self.cfg["anchor_depth"] or self.cfg["anchor_range"]:
            from .anchor_inputs import AnchorInputs

            self._anchor_inputs = AnchorInputs(self, self.cfg)
            if self.cfg["anchor_mode"] == "off":
                self.get_logger().warning("anchor subscriptions are on but anchor_mode is off: the readings are not "
                                          "used")

        self._geometry_type = _load_geometry_msg()
        if self._geometry_type is None and self.cfg["publish_geometry"]:
            self.get_logger().warning("moge2_ros_msgs is not available: the 'geometry' topic is disabled")

        # Latest-frame slot, filled by the subscription callback and emptied by the worker.
        self._slot_lock = threading.Condition()
        self._slot: tuple[Any, float] | None = None
        self._camera_info: CameraInfo | None = None
        self._counted_info: CameraInfo | None = None  # the refused CameraInfo already counted as bad input
        self._distortion_warned = False
        self._stop = False

        in_qos = qos_profile_sensor_data if self.cfg["input_qos"] == "sensor_data" else QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE)
        if self.cfg["image_transport"] == "compressed":
            self._image_sub = self.create_subscription(CompressedImage, "image/compressed", self._on_image, in_qos)
        else:
            self._image_sub = self.create_subscription(Image, "image", self._on_image, in_qos)
        self._info_sub = self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, in_qos)

        self.pub_depth = self.create_publisher(Image, "depth/image", OUTPUT_QOS)
        self.pub_info = self.create_publisher(CameraInfo, "depth/camera_info", OUTPUT_QOS)
        self.pub_points = self.create_publisher(PointCloud2, "points", OUTPUT_QOS)
        self.pub_normals = self.create_publisher(Image, "normals", OUTPUT_QOS)
        self.pub_mask = self.create_publisher(Image, "mask", OUTPUT_QOS)
        self.pub_colorized = self.create_publisher(Image, "depth/colorized", OUTPUT_QOS)
        self.pub_geometry = (
            self.create_publisher(self._geometry_type, "geometry", OUTPUT_QOS) if self._geometry_type else None
        )
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(self.cfg["diagnostics_period"], self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._worker = threading.Thread(target=self._run_worker, name="moge2_inference", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"ready: model '{self._predictor.model_id}' on {self._predictor.device} ({self._predictor.precision}), "
            f"{self._predictor.num_tokens} tokens, input '{self._image_sub.topic_name}'"
        )

    # ------------------------------------------------------------------------------------------------ set-up
    @staticmethod
    def _apply_dynamic(predictor: Any, cfg: dict[str, Any]) -> None:
        """Apply the run-time adjustable parameters to the predictor (the budget as :meth:`Predictor.budget_for`
        resolves it: a static ONNX export keeps its own)."""
        predictor.num_tokens = predictor.budget_for(cfg["num_tokens"] or None, cfg["resolution_level"])
        predictor.edge_rtol = cfg["edge_rtol"] or None
        predictor.depth_range = _depth_range(cfg)
        predictor.max_pixels = cfg["max_pixels"] or None

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        new = dict(self.cfg)
        for p in params:
            reason = check_value(p.name, p.value)
            if reason:
                return self._refuse(reason)
            new[p.name] = p.value
        if new["min_depth"] and new["max_depth"] and new["min_depth"] >= new["max_depth"]:
            return self._refuse("min_depth must be smaller than max_depth")
        try:
            frame = frame_config(new)
            # The token count and the image limit must fit the memory budget together (a static export also
            # refuses other token counts).
            tokens = self._predictor.budget_for(new["num_tokens"] or None, new["resolution_level"])
            self._predictor.check_max_pixels(new["max_pixels"] or None, tokens)
        except InputError as exc:
            return self._refuse(str(exc))
        with self._cfg_lock:
            self.cfg = new
            self._pipeline.configure(frame)
        return SetParametersResult(successful=True)

    def _refuse(self, reason: str) -> SetParametersResult:
        """A refused parameter change: counted (``rejected_params``) and answered with a short reason."""
        self.stats.on_rejected_params()
        return SetParametersResult(successful=False, reason=short_reason(reason))

    # ------------------------------------------------------------------------------------------------ callbacks
    def _on_image(self, msg: Any) -> None:
        """Store the newest frame; never blocks on inference."""
        now = time.monotonic()
        self.stats.on_received(now)
        with self._slot_lock:
            if self._slot is not None:
                self.stats.on_dropped()
            self._slot = (msg, now)
            self._slot_lock.notify()

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg  # checked by the frame pipeline (cached per content) when a frame uses it

    # ------------------------------------------------------------------------------------------------ worker
    def _run_worker(self) -> None:
        last_start = 0.0
        while True:
            with self._slot_lock:
                while self._slot is None and not self._stop:
                    self._slot_lock.wait(timeout=0.5)
                if self._stop:
                    return
                max_rate = self.cfg["max_rate_hz"]
                wait = (last_start + 1.0 / max_rate - time.monotonic()) if max_rate > 0 else 0.0
                if wait > 0:  # rate cap: newer frames may replace the stored one meanwhile
                    self._slot_lock.wait(timeout=wait)
                    continue
                msg, received = self._slot
                self._slot = None
            last_start = time.monotonic()
            try:
                self._process(msg, received)
            except BudgetError as exc:  # refused before anything frame-sized was allocated
                self.stats.on_failure("over_budget", str(exc))
                self.get_logger().warning(f"skipped a frame: {exc}", throttle_duration_sec=LOG_THROTTLE_S)
            except Moge2RosError as exc:
                self.stats.on_failure("bad_input", str(exc))
                self.get_logger().warning(f"skipped a frame: {exc}", throttle_duration_sec=LOG_THROTTLE_S)
            except Exception as exc:  # a bug or a device failure: keep serving the next frames, but say it loudly
                if self._stop or not self.context.ok():
                    return  # shutting down: the frame in flight could not be published, nothing is wrong
                self.stats.on_failure("errors", f"{type(exc).__name__}: {exc}")
                self.get_logger().error(
                    f"frame failed: {type(exc).__name__}: {exc}\n{traceback.format_exc()}",
                    throttle_duration_sec=LOG_THROTTLE_S,
                )

    def _subscribed(self, publisher: Any, enabled: bool) -> bool:
        return enabled and publisher is not None and publisher.get_subscription_count() > 0

    def _wanted(self, cfg: dict[str, Any]) -> set[str]:
        """The pipeline outputs someone listens to (depth and its camera_info go together)."""
        want = set()
        if self._subscribed(self.pub_depth, cfg["publish_depth"]) or self._subscribed(self.pub_info, cfg["publish_depth"]):
            want |= {"depth", "camera_info"}
        for name, publisher, enabled in (
            ("points", self.pub_points, cfg["publish_points"]),
            ("normals", self.pub_normals, cfg["publish_normals"]),
            ("mask", self.pub_mask, cfg["publish_mask"]),
            ("colorized", self.pub_colorized, cfg["publish_colorized"]),
            ("geometry", self.pub_geometry, cfg["publish_geometry"]),
        ):
            if self._subscribed(publisher, enabled):
                want.add(name)
        return want

    def _process(self, msg: Any, received: float) -> None:
        with self._cfg_lock:
            cfg = self.cfg
        self._apply_dynamic(self._predictor, cfg)
        rgb = decode_rgb(msg, self._predictor.pixel_limit())  # the header's size is checked before decoding
        info = self._camera_info
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        anchors = self._anchor_inputs.readings(stamp, msg.header.frame_id) \
            if self._anchor_inputs is not None and cfg["anchor_mode"] != "off" else ()
        frame = self._pipeline.process(rgb, self._wanted(cfg), camera_info=info, anchors=anchors, stamp=stamp,
                                       camera_id=msg.header.frame_id)
        if frame is None:
            return  # nobody listens: no inference at all
        if frame.intrinsics_error is not None:  # the given camera (camera_info or fixed_intrinsics) was not used
            # A refused CameraInfo is counted once per message, not per frame (the pipeline keeps refusing it from
            # its cache and uses the last good camera of this image size, or estimates K); fixed intrinsics per frame.
            if cfg["intrinsics_source"] != "camera_info" or self._counted_info is not info:
                self._counted_info = info
                note = frame.camera_note or "estimating the intrinsics"
                text = str(frame.intrinsics_error)
                self.stats.on_failure("bad_input", text if note == "estimating the intrinsics" else f"{text}; {note}",
                                      frame=False)
                self.get_logger().warning(f"{note}: {text}", throttle_duration_sec=LOG_THROTTLE_S)
        if frame.distortion_ignored and not self._distortion_warned and info is not None:
            try:
                note = distortion_note(info)
            except InputError:
                note = None
            if note is not None:  # once per node: with rectify off the image is used as if it were rectified
                self._distortion_warned = True
                self.get_logger().warning(f"{note} (rectify is false)")

        header = msg.header
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
        if frame.geometry is not None:
            self.pub_geometry.publish(conv.geometry_msg(self._geometry_type, header, frame.geometry))
        if frame.scale is not None:
            self.stats.on_scale(frame.scale)
        self.stats.on_processed(time.monotonic() - received, frame.inference_s)

    # ------------------------------------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        snap = self.stats.snapshot()
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: MoGe-2 inference", hardware_id=str(self._predictor.device))
        # Over the stats window: every frame rejected or failed (none published) = ERROR, some = WARN.
        if snap["input_rate_hz"] == 0:
            status.level, status.message = DiagnosticStatus.WARN, "no input images"
        elif snap["recent_failures"] and snap["output_rate_hz"] == 0:
            status.level, status.message = DiagnosticStatus.ERROR, f"every recent frame fails: {snap['last_error']}"
        elif snap["recent_failures"]:
            status.level, status.message = DiagnosticStatus.WARN, f"some frames fail: {snap['last_error']}"
        else:
            status.level, status.message = DiagnosticStatus.OK, "running"
        info = {
            "backend": self.cfg["backend"], "device": str(self._predictor.device), "precision": self._predictor.precision,
            "model": self._predictor.model_id, "num_tokens": self._predictor.num_tokens,
            "memory_budget_mb": self._predictor.budget.budget_mb, "max_pixels": self._predictor.pixel_limit(),
        }
        if self._anchor_inputs is not None:
            info.update({f"anchor_{k}": v for k, v in self._anchor_inputs.counts().items()})
        values = {**info, **snap}
        status.values = [KeyValue(key=k, value=f"{v:.3f}" if isinstance(v, float) else str(v)) for k, v in values.items()]
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [status]
        self.pub_diag.publish(array)

    # ------------------------------------------------------------------------------------------------ shutdown
    def stop(self) -> None:
        with self._slot_lock:
            self._stop = True
            self._slot_lock.notify_all()
        self._worker.join(timeout=10.0)
        if self._anchor_inputs is not None:
            self._anchor_inputs.close()


def main(args: list[str] | None = None) -> int:
    """Entry point of ``ros2 run moge2_ros moge2_node`` and the ``moge2_node`` console script."""
    rclpy.init(args=args)
    reuse_memory = keep_freed_memory()  # no page faults on per-frame buffers (see ros/host_memory.py)
    node = None
    try:
        node = Moge2Node()
        if not reuse_memory:
            node.get_logger().info("mallopt unavailable (not glibc): per-frame buffers are freshly mapped")
    except Moge2RosError as exc:
        rclpy.logging.get_logger("moge2_node").fatal(f"cannot start: {exc}")
        rclpy.try_shutdown()
        return 1
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.stop()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
