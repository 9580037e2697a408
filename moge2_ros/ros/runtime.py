"""What ``moge2_node`` does, written once for the plain node and the managed (lifecycle) node: one model, one
inference worker, every camera (:class:`~moge2_ros.ros.camera.Camera`), the parameter callback and /diagnostics.

Stages (the lifecycle transitions map onto them; the plain node runs the first two in its constructor):

* :meth:`Moge2Runtime.load`: load and warm the model, create every camera's publishers and pipeline, start the
  worker and the diagnostics timer (``configure``);
* :meth:`Moge2Runtime.start_inputs` / :meth:`Moge2Runtime.stop_inputs`: create / destroy the input subscriptions and
  switch publishing on / off (``activate`` / ``deactivate``; the model stays loaded);
* :meth:`Moge2Runtime.unload`: stop the worker, destroy the cameras' topics, free the model (and the CUDA cache)
  (``cleanup``, ``shutdown``).

Scheduling (:class:`~moge2_ros.pipeline.scheduler.FrameScheduler`): each camera's callback only stores its newest
frame; the worker runs the oldest waiting frame first (every camera in turn, a silent one never waits on),
with frames of several cameras of the same size and token grid as one network batch when ``batch`` is on.
"""

from __future__ import annotations

import gc
import threading
import time
import traceback
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter

from ..errors import BudgetError, InputError, Moge2RosError
from ..inference.factory import load_predictor
from ..pipeline.frame import BatchItem, process_batch
from ..pipeline.scheduler import FrameScheduler, Waiting
from .camera import Camera, key_values, status_level
from .camera_params import camera_cfg, split_override
from .node_config import apply_dynamic, frame_config, predictor_options
from .params import anchor_extrinsic, check_value, short_reason
from .stats import PipelineStats

__all__ = ["Moge2Runtime", "load_geometry_type"]

LOG_THROTTLE_S = 5.0
#: Image of the warm-up forward pass, (width, height) pixels.
WARM_UP_SIZE = (64, 48)


def load_geometry_type() -> Any:
    """``moge2_ros_msgs/MonocularGeometry``, or None when the message package is not installed."""
    try:
        from moge2_ros_msgs.msg import MonocularGeometry
    except ImportError:
        return None
    return MonocularGeometry


class Moge2Runtime:
    """The model, the cameras and the worker of one node.

    Args:
        node: the rclpy node (plain or lifecycle) that owns topics, timers and the logger.
        cfg: node-level parameters (:func:`~moge2_ros.ros.params.declare_all`).
        cameras: checked camera names (:func:`~moge2_ros.ros.camera_params.camera_names`).
        overrides: ``{camera: {name: value}}`` given at start-up
            (:func:`~moge2_ros.ros.camera_params.declare_overrides`).
    """

    def __init__(self, node: Node, cfg: dict[str, Any], cameras: list[str],
                 overrides: dict[str, dict[str, Any]]) -> None:
        self.node = node
        self.cfg = cfg
        self.camera_names = list(cameras)
        self.overrides = {name: dict(overrides.get(name, {})) for name in cameras}
        self.stats = PipelineStats()  # every camera's events, plus the refused parameter changes
        self.cameras: dict[str, Camera] = {}
        self.predictor: Any = None
        self.active = False
        self.loads = 0
        self.batches = 0  # network calls that ran frames of several cameras
        self.batched_frames = 0  # frames that ran in them
        self._lock = threading.Lock()  # parameters vs the worker
        self._scheduler: FrameScheduler | None = None
        self._worker: threading.Thread | None = None
        self._diag_timer: Any = None
        self._pub_diag: Any = None
        self._geometry_type: Any = None
        # Every camera's parameters are checked before anything is loaded (a clear start-up error names the camera).
        for name in cameras:
            try:
                cfg = self.camera_cfg(name)
                frame_config(cfg)
                for param in ("anchor_points_extrinsic", "anchor_range_extrinsic"):
                    anchor_extrinsic(cfg[param], param)
            except InputError as exc:
                raise InputError(f"camera {name}: {exc}" if name else str(exc)) from None

    def camera_cfg(self, name: str) -> dict[str, Any]:
        return camera_cfg(self.cfg, self.overrides[name])

    @property
    def loaded(self) -> bool:
        return self.predictor is not None

    def describe(self) -> str:
        """One line: model, device, precision, tokens and every camera's input topic."""
        p = self.predictor
        if p is None:
            return "no model loaded"
        inputs = ", ".join(f"'{c.input_topic}'" for c in self.cameras.values())
        return (f"model '{p.model_id}' on {p.device} ({p.precision}), {p.num_tokens} tokens, "
                f"input{'s' if len(self.cameras) > 1 else ''} {inputs}")

    # ------------------------------------------------------------------------------------------------ stages
    def load(self) -> None:
        """Load and warm the model, create every camera's publishers and pipeline, start the worker and the
        diagnostics.  On failure everything created is released again and the error raised.

        Raises:
            Moge2RosError: ModelLoadError, InputError (parameters the predictor or a camera refuses).
        """
        if self.loaded:
            return
        log = self.node.get_logger()
        try:
            self.predictor = load_predictor(
                predictor_options(self.cfg), say=lambda note: log.warning(f"parameter 'model' is empty: {note}"))
            if self.predictor.budget_note:
                log.info(self.predictor.budget_note)
            log.info(self.predictor.budget.describe(self.predictor.num_tokens))
            log.info(self.predictor.precision_note)
            apply_dynamic(self.predictor, self.cfg)
            self._warm_up()
            self._geometry_type = load_geometry_type()
            if self._geometry_type is None and self.cfg["publish_geometry"]:
                log.warning("moge2_ros_msgs is not available: the 'geometry' topic is disabled")
            for name in self.camera_names:
                self.cameras[name] = Camera(self.node, name, self.camera_cfg(name), self.predictor,
                                            self._geometry_type, self.stats)
            self._scheduler = FrameScheduler(self.camera_names, self.cfg["max_rate_hz"])
            self._pub_diag = self.node.create_publisher(DiagnosticArray, "/diagnostics", 10)
            self._diag_timer = self.node.create_timer(self.cfg["diagnostics_period"], self.publish_diagnostics)
            self._worker = threading.Thread(target=self._run_worker, name="moge2_inference", daemon=True)
            self._worker.start()
        except BaseException:
            self.unload()
            raise
        self.loads += 1

    def _warm_up(self) -> None:
        """One forward pass on a small grey image at the node-level token budget (torch backend): the first frame
        of a camera does not pay the allocator's and the kernels' first-call costs."""
        if self.cfg["backend"] != "torch":
            return
        t0 = time.perf_counter()
        self.predictor.predict(np.full((WARM_UP_SIZE[1], WARM_UP_SIZE[0], 3), 128, dtype=np.uint8))
        self.node.get_logger().info(f"warm-up forward pass: {1e3 * (time.perf_counter() - t0):.0f} ms")

    def start_inputs(self) -> None:
        """Subscribe every camera's inputs and publish from now on."""
        for camera in self.cameras.values():
            camera.subscribe(self._on_image)
        self.active = True

    def stop_inputs(self) -> None:
        """Unsubscribe every camera's inputs and stop publishing; waiting frames are dropped (counted)."""
        self.active = False
        for camera in self.cameras.values():
            camera.unsubscribe()
        if self._scheduler is not None:
            for name in self.camera_names:
                if self._scheduler.discard(name):
                    self.cameras[name].on_dropped()

    def unload(self) -> None:
        """Stop the worker, destroy the cameras' topics and the diagnostics, free the model (and the CUDA cache)."""
        self.stop_inputs()
        if self._scheduler is not None:
            self._scheduler.stop()
        if self._worker is not None:
            self._worker.join(timeout=30.0)
            if self._worker.is_alive():
                self.node.get_logger().warning("the inference worker did not stop within 30 s")
        for camera in self.cameras.values():
            camera.destroy()
        if self._diag_timer is not None:
            self.node.destroy_timer(self._diag_timer)
        if self._pub_diag is not None:
            self.node.destroy_publisher(self._pub_diag)
        cuda = self.predictor is not None and getattr(self.predictor.device, "type", "") == "cuda"
        self.cameras, self.predictor, self._scheduler, self._worker = {}, None, None, None
        self._diag_timer = self._pub_diag = None
        gc.collect()
        if cuda:
            import torch

            torch.cuda.empty_cache()

    # ------------------------------------------------------------------------------------------------ parameters
    def on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Check and apply run-time parameter changes (node-level ``name`` or a camera's ``<camera>.<name>``)."""
        new = dict(self.cfg)
        overrides = {name: dict(values) for name, values in self.overrides.items()}
        for p in params:
            split = split_override(p.name, self.camera_names)
            name = split[1] if split else p.name
            if split and p.type_ == Parameter.Type.NOT_SET:
                overrides[split[0]].pop(name, None)  # back to the node-level value
                continue
            reason = check_value(name, p.value)
            if reason:
                return self._refuse(f"{p.name}: {reason}" if split else reason)
            if split:
                overrides[split[0]][name] = p.value
            else:
                new[p.name] = p.value
        if new["min_depth"] and new["max_depth"] and new["min_depth"] >= new["max_depth"]:
            return self._refuse("min_depth must be smaller than max_depth")
        configs = {}
        for name in self.camera_names:
            cfg = camera_cfg(new, overrides[name])
            try:
                configs[name] = (cfg, frame_config(cfg))
                if self.predictor is not None:
                    # The token count and the image limit must fit the memory budget together (a static export
                    # also refuses other token counts).
                    tokens = self.predictor.budget_for(cfg["num_tokens"] or None, cfg["resolution_level"])
                    self.predictor.check_max_pixels(cfg["max_pixels"] or None, tokens)
            except InputError as exc:
                return self._refuse(f"camera {name}: {exc}" if name else str(exc))
        with self._lock:
            self.cfg, self.overrides = new, overrides
            for name, camera in self.cameras.items():
                camera.configure(configs[name][0])
            if self._scheduler is not None:
                self._scheduler.max_rate_hz = new["max_rate_hz"]
        return SetParametersResult(successful=True)

    def _refuse(self, reason: str) -> SetParametersResult:
        """A refused parameter change: counted (``rejected_params``) and answered with a short reason."""
        self.stats.on_rejected_params()
        return SetParametersResult(successful=False, reason=short_reason(reason))

    # ------------------------------------------------------------------------------------------------ frames
    def _on_image(self, camera: Camera, msg: Any) -> None:
        """Store the newest frame of ``camera``; never blocks on inference."""
        scheduler = self._scheduler
        if scheduler is None or not self.active:
            return
        now = time.monotonic()
        camera.on_received(now)
        if scheduler.put(camera.name, msg, now, camera.group(msg)):
            camera.on_dropped()

    def batching(self) -> bool:
        """Whether frames of several cameras run as one network batch now (``batch``: always, never, or auto = on
        for the torch backend on CUDA; off on a CPU, where bench/bench_multi_camera.py measured no reliable gain in
        the node, and for ONNX Runtime, whose exported graph may have a fixed batch size)."""
        mode = self.cfg["batch"]
        if mode == "auto":
            device = getattr(self.predictor, "device", None)
            return self.cfg["backend"] == "torch" and getattr(device, "type", "") == "cuda"
        return mode == "always"

    def _run_worker(self) -> None:
        scheduler = self._scheduler
        assert scheduler is not None
        while True:
            taken = scheduler.take(batch=self.batching(), max_batch=self.cfg["max_batch"], timeout=0.5)
            if scheduler.stopped:
                return
            if len(taken) == 1:
                self._run_one(taken[0])
            elif taken:
                self._run_batch(taken)

    def _run_one(self, waiting: Waiting) -> None:
        camera = self.cameras.get(waiting.camera)
        if camera is None:
            return
        try:
            camera.process(waiting.item, waiting.received, publish=self.active)
        except Exception as exc:  # noqa: BLE001 -- sorted and counted by _failed, a bug logged with its traceback
            self._failed(camera, exc)

    def _run_batch(self, taken: list[Waiting]) -> None:
        """Frames of several cameras (same size and token grid) through one network call."""
        ready: list[tuple[Camera, Waiting, BatchItem]] = []
        for waiting in taken:
            camera = self.cameras.get(waiting.camera)
            if camera is None:
                continue
            try:
                ready.append((camera, waiting, camera.batch_item(waiting.item)))
            except Exception as exc:  # noqa: BLE001
                self._failed(camera, exc)
        if not ready:
            return
        try:
            results = process_batch([item for _, _, item in ready])
            self.batches += 1
            self.batched_frames += len(ready)
        except Exception as exc:  # noqa: BLE001 -- the whole batch failed (a device error): every frame counts it
            for camera, _, _ in ready:
                self._failed(camera, exc)
            return
        for (camera, waiting, item), result in zip(ready, results):
            try:
                if isinstance(result, Exception):
                    raise result
                camera.deliver(waiting.item, waiting.received, item, result, publish=self.active)
            except Exception as exc:  # noqa: BLE001
                self._failed(camera, exc)

    def _failed(self, camera: Camera, exc: Exception) -> None:
        """Count and log a frame of ``camera`` that failed: refused by the budget, bad input, or a bug / device
        failure (logged with its traceback; the worker keeps serving the next frames)."""
        log = self.node.get_logger()
        if isinstance(exc, BudgetError):  # refused before anything frame-sized was allocated
            camera.on_failure("over_budget", str(exc))
            log.warning(f"{self._who(camera)}skipped a frame: {exc}", throttle_duration_sec=LOG_THROTTLE_S)
        elif isinstance(exc, Moge2RosError):
            camera.on_failure("bad_input", str(exc))
            log.warning(f"{self._who(camera)}skipped a frame: {exc}", throttle_duration_sec=LOG_THROTTLE_S)
        else:
            if self._scheduler is None or self._scheduler.stopped or not self.node.context.ok():
                return  # shutting down: the frame in flight could not be published, nothing is wrong
            camera.on_failure("errors", f"{type(exc).__name__}: {exc}")
            trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            log.error(f"{self._who(camera)}frame failed: {type(exc).__name__}: {exc}\n{trace}",
                      throttle_duration_sec=LOG_THROTTLE_S)

    @staticmethod
    def _who(camera: Camera) -> str:
        return f"camera {camera.name}: " if camera.name else ""

    # ------------------------------------------------------------------------------------------------ diagnostics
    def publish_diagnostics(self) -> None:
        """One status for the node (model, device, budget, every camera's frames together) and, with several
        cameras, one per camera."""
        if self._pub_diag is None or self.predictor is None:
            return
        name = self.node.get_fully_qualified_name()
        snap = self.stats.snapshot()
        level, message = status_level(snap)
        if not self.active:
            level, message = DiagnosticStatus.OK, "inactive (model loaded, inputs off)"
        predictor = self.predictor
        info = {
            "backend": self.cfg["backend"], "device": str(predictor.device), "precision": predictor.precision,
            "model": predictor.model_id, "num_tokens": predictor.budget_for(self.cfg["num_tokens"] or None,
                                                                            self.cfg["resolution_level"]),
            "memory_budget_mb": predictor.budget.budget_mb, "max_pixels": predictor.pixel_limit(),
            "cameras": len(self.cameras), "model_loads": self.loads, "batch": self.batching(),
            "batches": self.batches, "batched_frames": self.batched_frames,
        }
        node_status = DiagnosticStatus(name=f"{name}: MoGe-2 inference", hardware_id=str(predictor.device),
                                       level=level, message=message)
        anchors: dict[str, int] = {}
        for camera in self.cameras.values():
            for key, value in camera.anchor_counts().items():
                anchors[key] = anchors.get(key, 0) + value
        node_status.values = key_values({**info, **anchors, **snap})
        array = DiagnosticArray()
        array.header.stamp = self.node.get_clock().now().to_msg()
        array.status = [node_status]
        if self.camera_names != [""]:
            array.status += [camera.status(name) for camera in self.cameras.values()]
        self._pub_diag.publish(array)
