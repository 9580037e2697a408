"""``moge2_node``: camera images in; metric depth, points, normals, mask, camera_info and geometry out.

Topics (relative names, so namespaces and remaps work; see ``config/moge2.yaml`` for the parameters):

=========================  ============================================  ============================================
topic                      type                                          notes
=========================  ============================================  ============================================
image                      sensor_msgs/Image (sub)                       rgb8, bgr8, rgba8, bgra8, mono8, mono16
image/compressed           sensor_msgs/CompressedImage (sub)             with ``image_transport:=compressed``
camera_info                sensor_msgs/CameraInfo (sub)                  used when valid (intrinsics_source)
depth/image                sensor_msgs/Image                             32FC1 metres (NaN/Inf invalid) or 16UC1 mm
depth/camera_info          sensor_msgs/CameraInfo                        describes depth/image exactly
points                     sensor_msgs/PointCloud2                       x y z [rgb] [normal_*], metres
normals                    sensor_msgs/Image                             32FC3 unit vectors, optical frame
mask                       sensor_msgs/Image                             mono8, 255 = valid
depth/colorized            sensor_msgs/Image                             bgr8 preview, only while subscribed
geometry                   moge2_ros_msgs/MonocularGeometry              intrinsics, scale, FoV, timing, model
/diagnostics               diagnostic_msgs/DiagnosticArray               rates, drops, latency, backend, device
=========================  ============================================  ============================================

Every output of a frame carries that frame's header unchanged (REP 103 optical frame, REP 117/118 depth).
Latest-frame policy: the subscription callbacks only store the newest message; one worker thread runs
inference on the newest stored frame, so a slow model drops frames (counted) instead of queueing them.
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
import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from ..errors import InputError, ModelLoadError, Moge2RosError
from ..inference.temporal import IntrinsicsStabilizer, ScaleSmoother
from . import conversions as conv
from .host_memory import keep_freed_memory
from .params import check_value, declare_all
from .stats import PipelineStats

OUTPUT_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
LOG_THROTTLE_S = 5.0


def _load_geometry_msg() -> Any:
    try:
        from moge2_ros_msgs.msg import MonocularGeometry
    except ImportError:
        return None
    return MonocularGeometry


class Moge2Node(Node):
    """The MoGe-2 ROS 2 node.  Raises :class:`ModelLoadError` from the constructor if the model cannot load."""

    def __init__(self, node_name: str = "moge2_node", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.cfg = declare_all(self)
        self._cfg_lock = threading.Lock()
        self.stats = PipelineStats()
        self._predictor = self._build_predictor()
        self._stabilizer = IntrinsicsStabilizer(self.cfg["intrinsics_stabilization"], self.cfg["intrinsics_window"])
        self._smoother = ScaleSmoother(self.cfg["scale_smoothing"])
        self._check_fixed_intrinsics(self.cfg)

        self._geometry_type = _load_geometry_msg()
        if self._geometry_type is None and self.cfg["publish_geometry"]:
            self.get_logger().warning("moge2_ros_msgs is not available: the 'geometry' topic is disabled")

        # Latest-frame slot, filled by the subscription callback and emptied by the worker.
        self._slot_lock = threading.Condition()
        self._slot: tuple[Any, float] | None = None
        self._camera_info: CameraInfo | None = None
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
            f"ready: model '{self._model_id}' on {self._predictor.device} ({self.cfg['precision']}), "
            f"{self._predictor.num_tokens} tokens, input '{self._image_sub.topic_name}'"
        )

    # ------------------------------------------------------------------------------------------------ set-up
    def _build_predictor(self) -> Any:
        from ..assets import DEMO_MODEL_NOTE, resolve_default_model
        from ..checkpoints import load_model
        from ..inference import Predictor, resolve_device

        cfg = self.cfg
        source = cfg["model"]
        torch_device = resolve_device(cfg["device"])
        common = dict(device=torch_device, dtype=cfg["precision"], max_pixels=cfg["max_pixels"])
        if cfg["backend"] == "onnx":
            if not cfg["onnx_path"]:
                raise ModelLoadError("backend 'onnx' needs parameter 'onnx_path' (an ONNX file from "
                                     "'moge2-ros export-onnx' or an official export)")
            model = load_model(source, device=torch_device) if source else None
            self._model_id = str(cfg["onnx_path"])
            predictor = Predictor(model, backend="onnx", onnx_path=cfg["onnx_path"],
                                  onnx_providers=list(cfg["onnx_providers"]) or None,
                                  onnx_cache_dir=cfg["onnx_cache_dir"] or None, **common)
        else:
            from ..backends.torch_options import TorchOptions

            source, is_default = resolve_default_model(source)
            if is_default:
                self.get_logger().warning(f"parameter 'model' is empty: {DEMO_MODEL_NOTE}")
            model = load_model(source, device=torch_device)
            self._model_id = str(source)
            options = TorchOptions(compile=cfg["compile"], cuda_graphs=cfg["cuda_graphs"],
                                   channels_last=cfg["channels_last"], pinned_memory=cfg["pinned_memory"])
            predictor = Predictor(model, torch_options=options, **common)
        self._apply_dynamic(predictor, cfg)
        return predictor

    @staticmethod
    def _apply_dynamic(predictor: Any, cfg: dict[str, Any]) -> None:
        """Apply the run-time adjustable parameters to the predictor."""
        predictor.num_tokens = cfg["num_tokens"] or predictor.num_tokens_for_level(cfg["resolution_level"])
        predictor.edge_rtol = cfg["edge_rtol"] or None
        lo, hi = cfg["min_depth"], cfg["max_depth"]
        predictor.depth_range = (lo, hi if hi > 0 else math.inf) if (lo > 0 or hi > 0) else None
        predictor.max_pixels = cfg["max_pixels"]

    @staticmethod
    def _check_fixed_intrinsics(cfg: dict[str, Any]) -> None:
        if cfg["intrinsics_source"] == "fixed":
            reason = check_value("fixed_intrinsics", cfg["fixed_intrinsics"])
            if reason:
                raise ModelLoadError(f"intrinsics_source is 'fixed' but {reason}")

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        new = dict(self.cfg)
        for p in params:
            reason = check_value(p.name, p.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            new[p.name] = p.value
        if new["min_depth"] and new["max_depth"] and new["min_depth"] >= new["max_depth"]:
            return SetParametersResult(successful=False, reason="min_depth must be smaller than max_depth")
        if new["intrinsics_source"] == "fixed" and check_value("fixed_intrinsics", new["fixed_intrinsics"]):
            return SetParametersResult(successful=False, reason="intrinsics_source 'fixed' needs valid fixed_intrinsics")
        with self._cfg_lock:
            old = self.cfg
            self.cfg = new
            if (new["intrinsics_stabilization"], new["intrinsics_window"]) != (old["intrinsics_stabilization"], old["intrinsics_window"]):
                self._stabilizer = IntrinsicsStabilizer(new["intrinsics_stabilization"], new["intrinsics_window"])
            if new["scale_smoothing"] != old["scale_smoothing"]:
                self._smoother = ScaleSmoother(new["scale_smoothing"])
        return SetParametersResult(successful=True)

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
        self._camera_info = msg

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

    def _intrinsics_for(self, cfg: dict[str, Any], width: int, height: int) -> tuple[Any, bool]:
        """Given intrinsics for this frame (pixels: CameraInfo or fixed) or None to estimate them (stabilised over
        frames when intrinsics_stabilization is on), and whether they count as estimated."""
        source = cfg["intrinsics_source"]
        if source == "fixed":
            fx, fy, cx, cy = cfg["fixed_intrinsics"]
            return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]), False
        info = self._camera_info
        if source == "camera_info" and info is not None:
            try:
                return conv.camera_info_to_k(info, width, height), False
            except InputError as exc:
                if self._camera_info is info:  # skip this message: counted once, not once per frame
                    self._camera_info = None
                self.stats.on_failure("bad_input", f"camera_info: {exc}")
                self.get_logger().warning(f"ignoring camera_info: {exc}", throttle_duration_sec=LOG_THROTTLE_S)
        return None, True

    def _subscribed(self, publisher: Any, enabled: bool) -> bool:
        return enabled and publisher is not None and publisher.get_subscription_count() > 0

    def _process(self, msg: Any, received: float) -> None:
        with self._cfg_lock:
            cfg = self.cfg
            stabilizer, smoother = self._stabilizer, self._smoother
        self._apply_dynamic(self._predictor, cfg)
        header = msg.header
        if isinstance(msg, CompressedImage):
            rgb = conv.compressed_to_rgb(msg, cfg["max_pixels"])
        else:
            rgb = conv.image_to_rgb(msg, cfg["max_pixels"])
        height, width = rgb.shape[:2]

        want = {
            "depth": self._subscribed(self.pub_depth, cfg["publish_depth"]) or self._subscribed(self.pub_info, cfg["publish_depth"]),
            "points": self._subscribed(self.pub_points, cfg["publish_points"]),
            "normals": self._subscribed(self.pub_normals, cfg["publish_normals"]),
            "mask": self._subscribed(self.pub_mask, cfg["publish_mask"]),
            "colorized": self._subscribed(self.pub_colorized, cfg["publish_colorized"]),
            "geometry": self._subscribed(self.pub_geometry, cfg["publish_geometry"]),
        }
        if not any(want.values()):
            return  # nobody listens: no inference at all

        k_known, estimated = self._intrinsics_for(cfg, width, height)
        t0 = time.perf_counter()
        self._predictor.estimate_normals = want["normals"] or (want["points"] and cfg["cloud_normals"])
        if k_known is None and stabilizer.mode != "none":
            geo = self._predictor.predict_stabilized(rgb, stabilizer)
        else:
            geo = self._predictor.predict(rgb, intrinsics=k_known)
        frame_scale = float(geo.metric_scale[0])
        factor = smoother.update(frame_scale)
        if factor != 1.0:
            geo = geo.scaled(factor)
        # Given intrinsics are passed through exactly (float64), not after the model's float32 round trip.
        if k_known is not None:
            k = np.array(k_known, dtype=np.float64)
        else:
            k = geo.intrinsics[0].cpu().numpy().astype("float64")
        depth = geo.depth[0].cpu().numpy() if (want["depth"] or want["colorized"]) else None
        inference_s = time.perf_counter() - t0

        if want["depth"]:
            self.pub_depth.publish(conv.depth_to_image(header, depth, cfg["depth_encoding"], cfg["invalid_depth"]))
            self.pub_info.publish(conv.make_camera_info(header, k, width, height))
        if want["points"]:
            normals = geo.normal[0].cpu().numpy() if (cfg["cloud_normals"] and geo.normal is not None) else None
            self.pub_points.publish(conv.points_to_cloud(
                header, geo.points[0].cpu().numpy(), rgb if cfg["cloud_rgb"] else None, normals,
                organized=cfg["cloud_organized"], stride=cfg["cloud_stride"]))
        if want["normals"] and geo.normal is not None:
            self.pub_normals.publish(conv.normals_to_image(header, geo.normal[0].cpu().numpy()))
        if want["mask"]:
            self.pub_mask.publish(conv.mask_to_image(header, geo.mask[0].cpu().numpy()))
        if want["colorized"]:
            self.pub_colorized.publish(conv.colorize_depth_to_image(header, depth))
        if want["geometry"]:
            self.pub_geometry.publish(self._geometry_msg(header, k, width, height, geo, estimated, inference_s, cfg))
        self.stats.on_processed(time.monotonic() - received, inference_s)

    def _geometry_msg(self, header: Any, k: Any, width: int, height: int, geo: Any, estimated: bool,
                      inference_s: float, cfg: dict[str, Any]) -> Any:
        m = self._geometry_type()
        m.header = header
        m.camera_info = conv.make_camera_info(header, k, width, height)
        m.intrinsics_estimated = bool(estimated)
        m.metric_scale = float(geo.metric_scale[0])
        m.fov_x_deg = float(geo.fov_x[0])
        m.fov_y_deg = float(geo.fov_y[0])
        m.num_tokens = int(geo.num_tokens)
        m.inference_ms = float(inference_s * 1e3)
        m.model_id = self._model_id
        if hasattr(m, "valid_fraction"):
            m.valid_fraction = float(geo.mask[0].float().mean())
        return m

    # ------------------------------------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        snap = self.stats.snapshot()
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: MoGe-2 inference", hardware_id=str(self._predictor.device))
        recent_failures = snap["errors"] + snap["bad_input"]
        if snap["errors"] and snap["output_rate_hz"] == 0 and snap["input_rate_hz"] > 0:
            status.level, status.message = DiagnosticStatus.ERROR, f"frames are failing: {snap['last_error']}"
        elif snap["input_rate_hz"] == 0:
            status.level, status.message = DiagnosticStatus.WARN, "no input images"
        elif recent_failures:
            status.level, status.message = DiagnosticStatus.OK, f"running; last problem: {snap['last_error']}"
        else:
            status.level, status.message = DiagnosticStatus.OK, "running"
        info = {
            "backend": self.cfg["backend"], "device": str(self._predictor.device), "precision": self.cfg["precision"],
            "model": self._model_id, "num_tokens": self._predictor.num_tokens,
        }
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


def main(args: list[str] | None = None) -> int:
    """Entry point of ``ros2 run moge2_ros moge2_node`` and the ``moge2_node`` console script."""
    rclpy.init(args=args)
    reuse_memory = keep_freed_memory()  # no page faults on per-frame buffers (see inference/host_memory.py)
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
